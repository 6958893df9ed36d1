"""Property-based fuzzing of the readers that take files people hand us (issue 14.6): corpus sources (JSONL, JSONL.gz,
Parquet, text folders), Anthropic HH-RLHF files and the SFT / preference / prompt importers. Random bytes,
surrogates, U+2028, deep nesting, huge lines and corrupt archives either become documents/rows, quarantine rows with a
reason, or the reader's own one-line error; never a traceback from inside (RecursionError, BadGzipFile, ArrowInvalid,
UnicodeEncodeError ...). Whatever a reader keeps must also survive being written to Parquet (no lone surrogates).

`pytest -s tests/test_fuzz_sources.py` prints the cases tried per parser.
"""
from __future__ import annotations

import gzip
import io
import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alignline.annotation.hh_rlhf import HHImportError, read_hh_rlhf
from alignline.services.data.importers import ImportFileError, import_records, read_records
from alignline.storage.corpus.sources import Reject, read_sources, rejects_to_table
from alignline.storage.corpus.documents import Document

CASES = 120
FUZZ = settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TRIED: Counter[str] = Counter()

nasty_text = st.one_of(st.text(), st.sampled_from(["\ud800", "a\udfffb", "\u2028", "\u2029", "\x00", "{" * 5000,
                                                   "[" * 3000, "x" * 200_000, "\ufeff{}", "\n\nHuman: \u2028"]))
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | nasty_text,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                               st.sampled_from(["text", "id", "url", "metadata", "chosen", "rejected", "prompt",
                                                "completion", "response", "messages", "role", "content"])
                               | st.text(max_size=8),
                               inner, max_size=4),
                           max_leaves=20)
# Lines that look like what each reader expects, with one part spoiled.
transcripts = st.builds(lambda h, a: f"\n\nHuman: {h}\n\nAssistant: {a}", nasty_text, nasty_text)
hh_lines = st.builds(lambda c, r: {"chosen": c, "rejected": r}, transcripts | nasty_text, transcripts | json_values)


def _encode(value) -> bytes:
    """JSON with \\u escapes (so a lone surrogate arrives as the escape '\\ud800', which json.loads accepts);
    a bare string as raw bytes (a lone surrogate then is invalid UTF-8)."""
    text = json.dumps(value) if not isinstance(value, str) else value
    return text.encode("utf-8", "surrogatepass")


def _lines(values) -> bytes:
    return b"\n".join(_encode(v) for v in values)


def _deep(n: int) -> bytes:
    return b'{"text": ' + b"[" * n + b"]" * n + b"}"


file_bytes = st.one_of(
    st.binary(max_size=3000),
    st.lists(json_values | hh_lines, max_size=6).map(_lines),
    st.sampled_from([_deep(100_000), b"\x1f\x8b\x08\x00garbage", b"PAR1" + b"\x00" * 64 + b"PAR1",
                     b'{"chosen": "\\n\\nHuman: \\ud800\\n\\nAssistant: a", "rejected": "\\n\\nHuman: '
                     b'\\ud800\\n\\nAssistant: b", "prompt": "\\udfff", "completion": "x", "text": "\\ud800"}',
                     b'{"text": "' + b"y" * 300_000 + b'"}', b'{"text": "\\ud800"}\n{"text": "ok \\u2028 ok"}']),
)


def archive(blob: bytes, how: str) -> bytes:
    """The file as written: plain, gzip, gzip cut short, or gzip with a flipped byte (a corrupt archive)."""
    if how == "plain":
        return blob
    packed = gzip.compress(blob)
    if how == "truncated":
        return packed[: max(2, len(packed) // 2)]
    if how == "flipped":
        i = len(packed) // 2
        return packed[:i] + bytes([packed[i] ^ 0xFF]) + packed[i + 1:]
    return packed


archives = st.sampled_from(["plain", "gzip", "truncated", "flipped"])


def survives_parquet(table: pa.Table) -> None:
    """What a reader keeps is publishable: it writes to Parquet (a lone surrogate would fail here)."""
    pq.write_table(table, io.BytesIO())


@pytest.fixture(scope="module", autouse=True)
def print_cases():
    yield
    print(f"\n[fuzz] cases tried per parser with 0 crashes: {dict(sorted(TRIED.items()))} "
          f"(total {sum(TRIED.values())})")


# -- corpus sources --------------------------------------------------------------------------------------
@FUZZ
@given(blob=file_bytes, how=archives, suffix=st.sampled_from([".jsonl", ".json", ".txt", ".parquet", ""]))
def test_corpus_source_files_of_any_bytes(tmp_path, blob, how, suffix):
    name = f"data{suffix}" + (".gz" if how != "plain" else "")
    (tmp_path / name).write_bytes(archive(blob, how))
    docs, rejects = read_sources([str(tmp_path / name)], max_documents=0, max_record_bytes=100_000)
    assert all(isinstance(d, Document) for d in docs) and all(isinstance(r, Reject) and r.reason for r in rejects)
    survives_parquet(pa.table({"text": [d.text for d in docs], "id": [d.id for d in docs]}))
    survives_parquet(rejects_to_table(rejects))
    TRIED["corpus file"] += 1


@FUZZ
@given(files=st.lists(st.tuples(file_bytes, archives, st.sampled_from(["a.jsonl", "b.md", "c.parquet", "d", "e.rst"])),
                      min_size=1, max_size=3))
def test_corpus_text_folders_of_any_files(tmp_path, files):
    folder = tmp_path / "docs"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for i, (blob, how, name) in enumerate(files):
        (folder / f"{i}-{name}{'.gz' if how != 'plain' else ''}").write_bytes(archive(blob, how))
    docs, rejects = read_sources([str(folder)], max_documents=0, max_record_bytes=100_000)
    survives_parquet(pa.table({"text": [d.text for d in docs]}))
    survives_parquet(rejects_to_table(rejects))
    TRIED["corpus folder"] += 1


# -- HH-RLHF -----------------------------------------------------------------------------------------------
@FUZZ
@given(blob=st.lists(hh_lines | json_values, max_size=6).map(_lines) | file_bytes, how=archives)
def test_hh_rlhf_files_of_any_bytes(tmp_path, blob, how):
    path = tmp_path / ("pairs.jsonl" + (".gz" if how != "plain" else ""))
    path.write_bytes(archive(blob, how))
    try:
        result = read_hh_rlhf(path, "safety", heldout_share=0.3)
    except HHImportError as e:
        assert "\n" not in str(e)
    else:
        assert all(r.reason for r in result.rejects)
        survives_parquet(result.table)
        survives_parquet(result.heldout)
    TRIED["hh-rlhf"] += 1


# -- the SFT / preference / prompt importers ----------------------------------------------------------------
@FUZZ
@given(blob=file_bytes, how=archives, kind=st.sampled_from(["sft", "preference", "prompts"]),
       parquet=st.booleans(), rows=st.lists(json_values, max_size=4))
def test_importers_of_any_file(tmp_path, blob, how, kind, parquet, rows):
    path = tmp_path / ("data.parquet" if parquet else "data.jsonl" + (".gz" if how != "plain" else ""))
    if parquet:  # a real Parquet file of odd rows (stored as JSON text), or random bytes named .parquet
        try:
            pq.write_table(pa.table({"messages": [json.dumps(r, ensure_ascii=False) for r in rows]}), path)
        except (pa.ArrowException, UnicodeEncodeError):
            path.write_bytes(blob)
    else:
        path.write_bytes(archive(blob, how))
    try:
        result = import_records(kind, read_records(path), path.name)
    except ImportFileError as e:
        assert "\n" not in str(e)
    else:
        assert all(q["reason"] for q in result.quarantine)
        survives_parquet(result.table)
    TRIED[f"import {kind}"] += 1
