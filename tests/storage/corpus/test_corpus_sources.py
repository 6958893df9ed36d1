import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq

from alignline.storage.corpus import read_sources
from alignline.storage.corpus.sources import roff_to_text


def test_jsonl_rejects_each_kind_of_bad_line_and_goes_on(tmp_path):
    path = tmp_path / "data.jsonl"
    lines = [json.dumps({"id": "ok1", "text": "fine"}).encode(),
             b"{not json",
             json.dumps({"id": "x", "body": "no text field"}).encode(),
             json.dumps({"id": "y", "text": 42}).encode(),
             b'{"id": "z", "text": "caf\xe9"}',
             json.dumps({"id": "big", "text": "a" * 500}).encode(),
             json.dumps([1, 2]).encode(),
             json.dumps({"id": "ok1", "text": "same id again"}).encode(),
             json.dumps({"text": "no id", "url": "http://x", "metadata": {"k": 1}}).encode()]
    path.write_bytes(b"\n".join(lines) + b"\n")
    docs, rejects = read_sources([str(path)], 0, 300)
    assert [d.id for d in docs] == ["ok1", "data.jsonl:9"]
    assert docs[1].url == "http://x" and docs[1].metadata == {"k": 1}
    assert [(r.line, r.reason) for r in rejects] == [(2, "bad_json"), (3, "missing_text"), (4, "text_not_string"),
                                                     (5, "invalid_utf8"), (6, "oversize"), (7, "not_an_object"),
                                                     (0, "duplicate_id")]
    assert all(r.file for r in rejects)


def test_parquet_gzip_and_text_folders(tmp_path):
    pq.write_table(pa.table({"id": ["p1", "p2"], "text": ["parquet text", None]}), tmp_path / "a.parquet")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"id": "g1", "text": "gzipped"}) + "\n")
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "one.txt").write_text("plain one")
    with gzip.open(folder / "two.txt.gz", "wb") as fh:
        fh.write(b"plain two")
    (folder / "bad.txt").write_bytes(b"\xff\xfe bad")
    docs, rejects = read_sources([str(tmp_path / "a.parquet"), str(tmp_path / "b.jsonl.gz"), str(folder)], 0, 10_000)
    assert {d.id: d.text for d in docs} == {"p1": "parquet text", "g1": "gzipped", "one.txt": "plain one", "two.txt.gz": "plain two"}
    assert sorted(r.reason for r in rejects) == ["invalid_utf8", "missing_text"]


def test_max_documents_and_missing_source(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(10)))
    docs, _ = read_sources([str(path)], 3, 1000)
    assert len(docs) == 3
    _, rejects = read_sources([str(tmp_path / "nope.jsonl")], 0, 1000)
    assert rejects[0].reason == "unreadable"


def test_roff_to_text_keeps_prose():
    roff = '.TH LS 1\n.SH NAME\nls \\- list directory contents\n.SH DESCRIPTION\n.B ls\nlists \\fBfiles\\fR.\n.\\" comment\n'
    text = roff_to_text(roff)
    assert "NAME" in text and "ls - list directory contents" in text and "lists files." in text
    assert "comment" not in text and "\\f" not in text
