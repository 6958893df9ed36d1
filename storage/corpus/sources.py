"""Where raw text comes from: JSONL, Parquet, folders of text (gzip too), and `local`.

Bad input never stops a run: a malformed record becomes a `Reject` with the
file, line and reason (bad JSON, missing or non-string text, invalid UTF-8,
oversize, duplicate id) and reading goes on. The `local` source harvests real
text present on any Python machine, in a fixed order, so the default demo runs
on messy natural data with natural duplicates (licence texts, man pages).
"""
from __future__ import annotations

import ast
import gzip
import json
import os
import re
import sysconfig
import zlib
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .documents import Document

TEXT_SUFFIXES = {".txt", ".md", ".rst", ".text", ""}
REJECT_SCHEMA = pa.schema([("source", pa.string()), ("file", pa.string()), ("line", pa.int64()),
                           ("reason", pa.string()), ("snippet", pa.string())])


@dataclass(frozen=True)
class Reject:
    source: str
    file: str
    line: int      # 1-based line (JSONL), row (Parquet) or 0 for a whole file
    reason: str    # bad_json | not_an_object | missing_text | text_not_string | invalid_utf8 | oversize | duplicate_id | unreadable
    #                (invalid_utf8 also covers a lone surrogate from a "\ud800" escape: Parquet cannot store it)
    snippet: str


Record = Document | Reject


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _inner_suffix(path: Path) -> str:
    return Path(path.stem).suffix if path.suffix == ".gz" else path.suffix


def _snippet(raw: bytes | str, n: int = 200) -> str:
    if isinstance(raw, bytes):
        raw = raw[:n].decode("utf-8", errors="replace")
    return raw[:n]


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:200]


def _from_record(obj: object, source: str, file: str, line: int, raw: bytes | str) -> Record:
    if not isinstance(obj, dict):
        return Reject(source, file, line, "not_an_object", _snippet(raw))
    if "text" not in obj or obj["text"] is None:
        return Reject(source, file, line, "missing_text", _snippet(raw))
    if not isinstance(obj["text"], str):
        return Reject(source, file, line, "text_not_string", _snippet(raw))
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    doc_id = str(obj["id"]) if obj.get("id") not in (None, "") else f"{Path(file).name}:{line}"
    url = str(obj.get("url") or "")
    try:  # a "\ud800" escape decodes to a lone surrogate, which no UTF-8 file (Parquet included) can hold
        for value in (obj["text"], doc_id, url, json.dumps(meta, ensure_ascii=False, default=str)):
            value.encode("utf-8")
    except (UnicodeEncodeError, ValueError, RecursionError):
        return Reject(source, file, line, "invalid_utf8", _snippet(str(raw).encode("utf-8", "replace")))
    return Document(doc_id, obj["text"], source, url, meta)


def read_jsonl(path: str | Path, max_record_bytes: int, source: str | None = None) -> Iterator[Record]:
    """One record per line; lines are read as bytes so one bad line is one reject."""
    path = Path(path)
    source = source or str(path)
    number = 0
    try:
        with _open_bytes(path) as fh:
            for number, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                if len(raw) > max_record_bytes:
                    yield Reject(source, str(path), number, "oversize", _snippet(raw))
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    yield Reject(source, str(path), number, "invalid_utf8", _snippet(raw))
                    continue
                try:
                    obj = json.loads(text)
                except (json.JSONDecodeError, RecursionError):  # RecursionError: nested thousands deep
                    yield Reject(source, str(path), number, "bad_json", _snippet(text))
                    continue
                yield _from_record(obj, source, str(path), number, text)
    except (OSError, EOFError, zlib.error) as e:  # a damaged or truncated .gz: the lines read so far stand
        yield Reject(source, str(path), number + 1, "unreadable", _one_line(e))


def read_parquet(path: str | Path, max_record_bytes: int, source: str | None = None) -> Iterator[Record]:
    path = Path(path)
    source = source or str(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        yield Reject(source, str(path), 0, "unreadable", _one_line(e))
        return
    if "text" not in table.column_names:
        yield Reject(source, str(path), 0, "missing_text", f"columns: {table.column_names}")
        return
    for number, row in enumerate(table.to_pylist(), start=1):
        text = row.get("text")
        if isinstance(text, str) and len(text.encode("utf-8", errors="surrogatepass")) > max_record_bytes:
            yield Reject(source, str(path), number, "oversize", _snippet(text))
            continue
        yield _from_record(row, source, str(path), number, json.dumps(row, default=str)[:200])


def read_text_file(path: Path, max_record_bytes: int, source: str, doc_id: str, url: str = "") -> Record:
    """A whole (maybe gzipped) file as one document."""
    try:
        with _open_bytes(path) as fh:
            raw = fh.read(max_record_bytes + 1)
    except (OSError, EOFError, zlib.error) as e:
        return Reject(source, str(path), 0, "unreadable", str(e)[:200])
    if len(raw) > max_record_bytes:
        return Reject(source, str(path), 0, "oversize", _snippet(raw))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Reject(source, str(path), 0, "invalid_utf8", _snippet(raw))
    return Document(doc_id, text, source, url or path.as_uri())


# --- the `local` source -------------------------------------------------------------

_ROFF_ESCAPES = re.compile(r"\\f[A-Z0-9]|\\f\(..|\\f\[[^\]]*\]|\\\*\(..|\\\*.|\\[&|^%:]|\\s[-+]?\d")
_ROFF_REQUESTS = re.compile(r"^\.(SH|SS)\s+\"?(.*?)\"?$")


def roff_to_text(roff: str) -> str:
    """Enough of man(7) to keep the prose: headings kept, other requests dropped, escapes removed."""
    out = []
    for line in roff.splitlines():
        if line.startswith(('.\\"', "'\\\"")):
            continue
        heading = _ROFF_REQUESTS.match(line)
        if heading:
            out += ["", heading.group(2).upper()]
            continue
        if line.startswith((".", "'")):
            if line.startswith((".PP", ".LP", ".P", ".TP", ".IP", ".sp")):
                out.append("")
            parts = line.split(None, 1)
            if parts[0] in (".B", ".I", ".BR", ".IR", ".RB", ".RI", ".BI", ".IB") and len(parts) > 1:
                out.append(parts[1].replace('"', ""))
            continue
        out.append(line)
    text = "\n".join(out)
    text = text.replace("\\-", "-").replace("\\(em", "\u2014").replace("\\(en", "\u2013").replace("\\e", "\\")
    return _ROFF_ESCAPES.sub("", text)


def _docstrings(path: Path, root: Path) -> Iterator[tuple[str, str]]:
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return
    module = str(path.relative_to(root))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                name = getattr(node, "name", "")
                yield f"{module}:{name}:{node.lineno if name else 0}", doc


def python_docstrings(root: Path, tag: str, skip: tuple[str, ...] = ("test", "tests", "idlelib", "site-packages")) -> Iterator[Document]:
    """Docstrings of every module, class and function under `root` (parsed, never imported)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip and not d.startswith((".", "__pycache__")))
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = Path(dirpath) / name
                for key, doc in _docstrings(path, root):
                    yield Document(f"{tag}:{key}", doc, tag, path.as_uri())


def pydoc_topics() -> Iterator[Document]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield Document(f"pydoc:{name}", topics[name], "local:pydoc", f"pydoc:{name}")


def package_descriptions() -> Iterator[Document]:
    seen = set()
    dists = sorted(importlib_metadata.distributions(), key=lambda d: ((d.metadata.get("Name") or "").lower(), d.version or ""))
    for dist in dists:
        name = (dist.metadata.get("Name") or "").lower()
        if not name or name in seen:
            continue
        seen.add(name)
        text = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        if text.strip():
            yield Document(f"pypi:{name}", text, "local:packages", f"pypi:{name}/{dist.version}")


def usr_share_doc(root: Path, max_record_bytes: int) -> Iterator[Record]:
    """README* and copyright files of installed Debian packages."""
    if not root.is_dir():
        return
    for package in sorted(root.iterdir()):
        if not package.is_dir():
            continue
        for path in sorted(package.iterdir()):
            if path.is_file() and (path.name == "copyright" or path.name.upper().startswith("README")):
                yield read_text_file(path, max_record_bytes, "local:usr-share-doc", f"doc:{package.name}/{path.name}")


def man_pages(root: Path, max_record_bytes: int) -> Iterator[Record]:
    """English man pages (man1..man8 directly under `root`, not the translations)."""
    if not root.is_dir():
        return
    for section in sorted(p for p in root.glob("man[0-9]*") if p.is_dir()):
        for path in sorted(section.iterdir()):
            if not path.is_file():
                continue
            record = read_text_file(path, max_record_bytes, "local:man", f"man:{section.name}/{path.name}")
            if isinstance(record, Document):
                if record.text.startswith(".so "):  # a link to another page: not a document
                    continue
                record.text = roff_to_text(record.text)
            yield record


def local_records(max_record_bytes: int, *, include_site_packages: bool = False,
                  doc_root: Path = Path("/usr/share/doc"), man_root: Path = Path("/usr/share/man")) -> Iterator[Record]:
    """The `local` source, small varied sources first so a capped read still mixes them."""
    yield from pydoc_topics()
    yield from package_descriptions()
    yield from usr_share_doc(doc_root, max_record_bytes)
    yield from man_pages(man_root, max_record_bytes)
    yield from python_docstrings(Path(sysconfig.get_paths()["stdlib"]), "local:stdlib")
    if include_site_packages:
        yield from python_docstrings(Path(sysconfig.get_paths()["purelib"]), "local:site-packages", skip=("tests",))


def local_fingerprint(doc_root: Path = Path("/usr/share/doc"), man_root: Path = Path("/usr/share/man")) -> str:
    """Cheap identity of what `local` would read (folder mtimes + package list): a cache input."""
    parts = [sysconfig.get_paths()["stdlib"]]
    for folder in (doc_root, man_root, *sorted(man_root.glob("man[0-9]*"))):
        if folder.exists():
            parts.append(f"{folder}:{folder.stat().st_mtime_ns}")
    parts += sorted(f"{d.metadata.get('Name')}=={d.version}" for d in importlib_metadata.distributions())
    return "|".join(parts)


def source_fingerprint(source: str) -> str:
    """What identifies a source's content for caching: file sizes and mtimes, or `local`'s fingerprint."""
    if source == "local":
        return local_fingerprint()
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    elif path.exists():
        files = [path]
    else:
        return f"{source}:missing"
    return "|".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def records_from(source: str, max_record_bytes: int) -> Iterator[Record]:
    """Dispatch one `--source` value to its reader."""
    if source == "local":
        yield from local_records(max_record_bytes)
        return
    path = Path(source)
    if not path.exists():
        yield Reject(source, str(path), 0, "unreadable", "no such file or folder")
        return
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            suffix = _inner_suffix(child)
            if suffix in (".jsonl", ".json"):
                yield from read_jsonl(child, max_record_bytes, source)
            elif suffix == ".parquet":
                yield from read_parquet(child, max_record_bytes, source)
            elif suffix in TEXT_SUFFIXES:
                yield read_text_file(child, max_record_bytes, source, str(child.relative_to(path)))
    elif _inner_suffix(path) in (".jsonl", ".json"):
        yield from read_jsonl(path, max_record_bytes, source)
    elif path.suffix == ".parquet":
        yield from read_parquet(path, max_record_bytes, source)
    else:
        yield read_text_file(path, max_record_bytes, source, path.name)


def read_sources(sources: list[str] | tuple[str, ...], max_documents: int, max_record_bytes: int) -> tuple[list[Document], list[Reject]]:
    """All documents (first `max_documents`, 0 = all) and all rejects, in source order; ids made unique."""
    docs: list[Document] = []
    rejects: list[Reject] = []
    seen: set[str] = set()
    for source in sources:
        for record in records_from(source, max_record_bytes):
            if isinstance(record, Reject):
                rejects.append(record)
                continue
            if record.id in seen:
                rejects.append(Reject(record.source, record.url or record.source, 0, "duplicate_id", record.id))
                continue
            seen.add(record.id)
            docs.append(record)
            if max_documents and len(docs) >= max_documents:
                return docs, rejects
    return docs, rejects


def rejects_to_table(rejects: list[Reject]) -> pa.Table:
    return pa.table({"source": [r.source for r in rejects], "file": [r.file for r in rejects],
                     "line": [r.line for r in rejects], "reason": [r.reason for r in rejects],
                     "snippet": [r.snippet for r in rejects]}, schema=REJECT_SCHEMA)
