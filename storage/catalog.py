"""The lakehouse catalog: immutable, content-addressed Parquet dataset versions in DuckDB.

A version is named by the hash of its content (schema + rows), so publishing the
same table twice returns the version that already exists. Each version records
its schema, row count, parents (lineage), the flow run that made it and when.
Files are written once (temp file, fsync, atomic rename) and made read-only.
`latest` is the version published last: re-publishing older content makes it the latest again.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from .faults import fault_point
from .schemas import DatasetRef, RefError
from .schemas import validate_name as _validate_name

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dataset_versions (
    name VARCHAR NOT NULL,
    version VARCHAR NOT NULL,
    seq INTEGER NOT NULL,
    path VARCHAR NOT NULL,
    schema_json VARCHAR NOT NULL,
    num_rows BIGINT NOT NULL,
    num_bytes BIGINT NOT NULL,
    parents VARCHAR NOT NULL,
    flow_run VARCHAR,
    metadata VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS dataset_latest (
    name VARCHAR PRIMARY KEY,
    version VARCHAR NOT NULL
)"""


class CatalogError(ValueError):
    """A bad dataset name or a version that does not exist."""


@dataclass(frozen=True)
class DatasetVersion:
    name: str
    version: str
    seq: int
    path: Path
    num_rows: int
    parents: tuple[str, ...]
    flow_run: str | None
    metadata: dict[str, Any]
    created_at: str
    schema: str

    @property
    def ref(self) -> str:
        """'name@version', the form lineage and registry tags use."""
        return str(DatasetRef(self.name, self.version))


def validate_name(name: str) -> str:
    try:
        return _validate_name(name)
    except RefError as e:
        raise CatalogError(str(e)) from None


def content_hash(table: pa.Table) -> str:
    """sha256 of the table's schema and rows, independent of how it is chunked."""
    table = table.combine_chunks().replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=1 << 16):
            writer.write_batch(batch)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_reason(e: OSError) -> str:
    """'no space left on device (errno 28)' rather than pyarrow's multi-part message."""
    errno_ = e.errno or (28 if "No space left" in str(e) else None)
    reason = os.strerror(errno_).lower() if errno_ else str(e).splitlines()[0]
    return f"{reason} (errno {errno_})" if errno_ else reason


def parse_ref(ref: str | DatasetRef) -> DatasetRef:
    try:
        return DatasetRef.parse(ref)
    except RefError as e:
        raise CatalogError(str(e)) from None


class Catalog:
    """Datasets under `<root>/datasets/<name>/<version>.parquet`, indexed in `<root>/catalog.duckdb`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._db = self.root / "catalog.duckdb"
        self._lock = self.root / ".catalog.lock"
        with self._connect(exclusive=True) as con:
            con.execute(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self, exclusive: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        # DuckDB allows one writing process per file: a file lock serialises the
        # flows, Ray tasks and CLI calls that share a data dir.
        with open(self._lock, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            con = duckdb.connect(str(self._db), read_only=not exclusive and self._db.exists())
            try:
                yield con
            finally:
                con.close()
                fcntl.flock(fh, fcntl.LOCK_UN)

    def publish(self, name: str, table: pa.Table, parents: Sequence[str] = (),
                flow_run: str | None = None, metadata: dict[str, Any] | None = None) -> DatasetVersion:
        """Store `table` as a new version of `name`, or return the version with the same content."""
        validate_name(name)
        parent_refs = tuple(self._check_ref(p) for p in parents)
        version = content_hash(table)[:16]
        existing = self._lookup(name, version)
        if existing is not None:  # identical content: no new version, but it is the latest again
            self._set_latest(name, version)
            return existing
        folder = self.root / "datasets" / name
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{version}.parquet"
        try:
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
            os.close(fd)
            try:
                pq.write_table(table, tmp, compression="zstd")
                _fsync(tmp)
                os.chmod(tmp, 0o444)
                os.replace(tmp, final)
                _fsync(folder)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as e:  # disk full, read-only, quota: one clear line, nothing half-written left published
            raise CatalogError(f"cannot write dataset {name!r} to {folder}: {_os_reason(e)}") from e
        fault_point("catalog.renamed")  # a kill here leaves a file with no row: the rerun's publish adds the row
        with self._connect(exclusive=True) as con:
            row = con.execute("SELECT 1 FROM dataset_versions WHERE name=? AND version=?", [name, version]).fetchone()
            if row is None:  # another process may have published the same content meanwhile
                seq = con.execute("SELECT coalesce(max(seq), 0) + 1 FROM dataset_versions WHERE name=?", [name]).fetchone()[0]
                con.execute(
                    "INSERT INTO dataset_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [name, version, seq, str(final), table.schema.to_string(show_schema_metadata=False),
                     table.num_rows, final.stat().st_size, json.dumps(list(parent_refs)), flow_run,
                     json.dumps(metadata or {}, sort_keys=True, default=str),
                     time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())])
            con.execute("INSERT OR REPLACE INTO dataset_latest VALUES (?, ?)", [name, version])
        found = self._lookup(name, version)
        assert found is not None
        return found

    def get(self, name: str, version: str | int = "latest") -> DatasetVersion:
        """Metadata of one version: 'latest', a content version id, or a sequence number."""
        validate_name(name)
        with self._connect() as con:
            if version == "latest":  # the last one published (re-publishing old content makes it latest again)
                row = con.execute("SELECT v.* FROM dataset_versions v JOIN dataset_latest l ON v.name = l.name "
                                  "AND v.version = l.version WHERE v.name=?", [name]).fetchone()
                if row is None:  # a catalog written before the latest pointer existed
                    row = con.execute("SELECT * FROM dataset_versions WHERE name=? ORDER BY seq DESC LIMIT 1",
                                      [name]).fetchone()
            elif isinstance(version, int) or str(version).isdigit() and len(str(version)) < 16:
                row = con.execute("SELECT * FROM dataset_versions WHERE name=? AND seq=?", [name, int(version)]).fetchone()
            else:
                row = con.execute("SELECT * FROM dataset_versions WHERE name=? AND version=?", [name, str(version)]).fetchone()
        if row is None:
            raise CatalogError(f"dataset {name!r} has no version {version!r}")
        return _row_to_version(row)

    def read(self, name: str, version: str | int = "latest") -> pa.Table:
        return _read_file(self.get(name, version))

    def resolve(self, ref: str | DatasetRef) -> DatasetVersion:
        """The version a ref names ('name', 'name@latest', 'name@<content id>', 'name@<seq>')."""
        ref = parse_ref(ref)
        return self.get(ref.name, ref.version)

    def read_ref(self, ref: str | DatasetRef) -> pa.Table:
        return _read_file(self.resolve(ref))

    def find(self, ref: str | DatasetRef) -> DatasetVersion | None:
        """Like `resolve`, but None when the dataset or version does not exist."""
        try:
            return self.resolve(ref)
        except CatalogError:
            return None

    def versions(self, name: str) -> list[DatasetVersion]:
        validate_name(name)
        with self._connect() as con:
            rows = con.execute("SELECT * FROM dataset_versions WHERE name=? ORDER BY seq", [name]).fetchall()
        return [_row_to_version(r) for r in rows]

    def names(self) -> list[str]:
        with self._connect() as con:
            return [r[0] for r in con.execute("SELECT DISTINCT name FROM dataset_versions ORDER BY name").fetchall()]

    def lineage(self, ref: str) -> list[DatasetVersion]:
        """The version and all its ancestors, nearest first (breadth-first, no repeats)."""
        seen: dict[str, DatasetVersion] = {}
        queue = [self.resolve(ref)]
        while queue:
            current = queue.pop(0)
            if current.ref in seen:
                continue
            seen[current.ref] = current
            queue += [self.resolve(p) for p in current.parents]
        return list(seen.values())

    def _set_latest(self, name: str, version: str) -> None:
        with self._connect(exclusive=True) as con:
            con.execute("INSERT OR REPLACE INTO dataset_latest VALUES (?, ?)", [name, version])

    def _check_ref(self, ref: str) -> str:
        return self.resolve(ref).ref

    def _lookup(self, name: str, version: str) -> DatasetVersion | None:
        return self.find(DatasetRef(name, version))


def _read_file(version: DatasetVersion) -> pa.Table:
    """The version's rows; a file that is gone, truncated or corrupt is one clear CatalogError naming it."""
    try:
        return pq.read_table(version.path)
    except (OSError, pa.ArrowException) as e:
        raise CatalogError(f"dataset {version.ref} cannot be read from {version.path} (missing, truncated or corrupt: "
                           f"{str(e).splitlines()[0][:160]}); restore the file or publish the data again") from e


def _row_to_version(row: tuple) -> DatasetVersion:
    name, version, seq, path, schema, num_rows, _bytes, parents, flow_run, metadata, created = row
    return DatasetVersion(name=name, version=version, seq=seq, path=Path(path), num_rows=num_rows,
                          parents=tuple(json.loads(parents)), flow_run=flow_run,
                          metadata=json.loads(metadata), created_at=str(created), schema=schema)
