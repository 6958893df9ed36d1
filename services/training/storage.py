"""What travels between the driver and Ray Train workers on other nodes: inputs, run storage, outputs.

- Run storage (`RunConfig.storage_path`) is a local folder or a shared URI (`s3://bucket/prefix`): Ray
  Train uploads every reported checkpoint there, so a worker restarted on another node restores from it.
  S3 credentials come from the standard AWS chain (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` or
  `~/.aws`), never from the run config; `endpoint` points at an S3-compatible server (MinIO, moto).
- Inputs: each file or folder a job names in `INPUTS` goes into Ray's object store once (a folder as a
  deterministic tar); a worker on another node lands it under a digest-named folder on its own disk.
- Outputs: folders named in `OUTPUTS` are written by rank 0 on its node, uploaded to run storage and
  fetched by the driver into the path the caller asked for.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs


# -- run storage ----------------------------------------------------------------------------------------------
def run_filesystem(storage_path: str, endpoint: str = "") -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local folder or an `s3://bucket/prefix` URI.

    Ray Train takes the pair as `RunConfig(storage_path=path, storage_filesystem=fs)`."""
    url = urlparse(storage_path)
    if url.scheme == "s3":
        options: dict[str, Any] = {}
        if endpoint:
            ep = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
            options.update(endpoint_override=ep.netloc, scheme=ep.scheme)
        # Credentials: pyarrow reads the AWS chain itself; passing none here keeps them out of configs and argv.
        return pafs.S3FileSystem(**options), f"{url.netloc}{url.path}".rstrip("/")
    if url.scheme not in ("", "file"):
        raise ValueError(f"training storage {storage_path!r}: only a local folder or s3://bucket/prefix is supported")
    return pafs.LocalFileSystem(), str(Path(url.path if url.scheme else storage_path).resolve())


def write_text(fs: pafs.FileSystem, path: str, text: str) -> None:
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(text.encode())


def read_text(fs: pafs.FileSystem, path: str) -> str:
    with fs.open_input_stream(path) as src:
        return src.read().decode()


def delete_file(fs: pafs.FileSystem, path: str) -> None:
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_file(path)


def upload_dir(local: str | Path, fs: pafs.FileSystem, path: str) -> None:
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)  # a rerun's output replaces the old one whole
    fs.create_dir(path, recursive=True)
    pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def download_dir(fs: pafs.FileSystem, path: str, local: str | Path) -> None:
    """Replace `local` with the folder at `path` (fetched next to it, then renamed into place)."""
    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=local.parent, prefix=f".fetch-{local.name}-"))
    pafs.copy_files(path, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    if local.exists():
        shutil.rmtree(local)
    os.replace(tmp, local)


# -- inputs through the object store --------------------------------------------------------------------------
@dataclass(frozen=True)
class Shipped:
    """A file or folder put into Ray's object store by the driver."""
    name: str
    digest: str       # SHA-256 of the bytes (a folder: of its deterministic tar)
    is_dir: bool
    ref: Any          # ray.ObjectRef of the bytes


def _tar_bytes(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(folder)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""  # same bytes, same digest
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
    return buf.getvalue()


def ship(path: str | Path) -> Shipped:
    import ray

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"training input {path} does not exist")
    data = _tar_bytes(path) if path.is_dir() else path.read_bytes()
    return Shipped(path.name, hashlib.sha256(data).hexdigest(), path.is_dir(), ray.put(data))


def land(item: Shipped, cache_root: str | Path) -> str:
    """The node-local path of a shipped input: fetched from the object store the first time on this node,
    checked against its digest, written under a temp name and renamed (concurrent workers are safe)."""
    import ray

    final = Path(cache_root) / item.digest[:24] / item.name
    if final.exists():
        return str(final)
    data = ray.get(item.ref)
    if hashlib.sha256(data).hexdigest() != item.digest:
        raise IOError(f"shipped input {item.name} arrived corrupt (digest mismatch)")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=".landing-"))
    target = tmp / item.name
    if item.is_dir:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            tar.extractall(target, filter="data")
    else:
        target.write_bytes(data)
    try:
        os.replace(target, final)
    except OSError:  # another worker on this node landed it first
        if not final.exists():
            raise
    shutil.rmtree(tmp, ignore_errors=True)
    return str(final)


def node_cache_root() -> Path:
    """Per-node scratch for landed inputs, checkpoints and outputs: the node's Ray session folder."""
    import ray

    node = ray._private.worker._global_node  # no public API names the node's session folder
    base = Path(node.get_session_dir_path()) if node is not None else Path(tempfile.gettempdir())
    return base / "alignline-train" / ray.get_runtime_context().get_node_id()[:12]
