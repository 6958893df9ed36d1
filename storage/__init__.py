"""storage: the lakehouse. Versioned Parquet datasets in a DuckDB catalog, corpus steps, data validation.

Imports nothing of the project above it (no flows, services, annotation, Prefect).
"""
from .catalog import Catalog, CatalogError, DatasetVersion, content_hash, split_ref, validate_name

__all__ = ["Catalog", "CatalogError", "DatasetVersion", "content_hash", "split_ref", "validate_name"]
