"""storage: the lakehouse. Versioned Parquet datasets in a DuckDB catalog, the data contracts every package
shares (`schemas`), the data dir's layout (`datadir`), corpus steps, data validation.

Imports nothing of the project above it (no flows, services, annotation, Prefect).
"""
from .catalog import Catalog, CatalogError, DatasetVersion, content_hash, parse_ref, validate_name
from .datadir import DataDir, LockHeld
from .schemas import DatasetRef, ModelRef, RefError

__all__ = ["Catalog", "CatalogError", "DatasetVersion", "content_hash", "parse_ref", "validate_name", "DataDir", "LockHeld",
           "DatasetRef", "ModelRef", "RefError"]
