import multiprocessing as mp
import os
import stat

import pyarrow as pa
import pytest

from alignline.storage import Catalog, CatalogError, content_hash


@pytest.fixture()
def catalog(tmp_path):
    return Catalog(tmp_path / "lake")


def docs(*texts):
    return pa.table({"id": [f"d{i}" for i in range(len(texts))], "text": list(texts)})


def test_publish_and_read_back(catalog):
    v = catalog.publish("docs", docs("a", "b"), flow_run="run-1", metadata={"source": "unit"})
    assert v.seq == 1 and v.num_rows == 2 and v.flow_run == "run-1"
    assert v.metadata == {"source": "unit"}
    assert "text: string" in v.schema
    assert catalog.read("docs").to_pydict() == docs("a", "b").to_pydict()
    assert catalog.get("docs", v.version) == catalog.get("docs", 1) == catalog.get("docs")


def test_identical_content_returns_existing_version(catalog):
    t = docs("a", "b", "c")
    first = catalog.publish("docs", t)
    rechunked = pa.concat_tables([t.slice(0, 1), t.slice(1)])
    assert content_hash(rechunked) == content_hash(t)
    again = catalog.publish("docs", rechunked)
    assert again.ref == first.ref and len(catalog.versions("docs")) == 1


def test_versions_are_immutable(catalog):
    v1 = catalog.publish("docs", docs("a"))
    v2 = catalog.publish("docs", docs("a", "b"))
    assert (v1.seq, v2.seq) == (1, 2) and v1.version != v2.version
    assert catalog.read("docs", v1.version).num_rows == 1
    assert catalog.read("docs").num_rows == 2
    mode = os.stat(v1.path).st_mode
    assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


def test_lineage_follows_parents(catalog):
    raw = catalog.publish("raw", docs("x"))
    clean = catalog.publish("clean", docs("x!"), parents=[raw.ref])
    final = catalog.publish("final", docs("x!!"), parents=[clean.ref, "raw"])  # "raw" means raw@latest
    refs = [v.ref for v in catalog.lineage(final.ref)]
    assert refs == [final.ref, clean.ref, raw.ref]
    assert final.parents == (clean.ref, raw.ref)


def test_unknown_parent_and_version_are_refused(catalog):
    with pytest.raises(CatalogError, match="has no version"):
        catalog.publish("x", docs("a"), parents=["missing@abc"])
    with pytest.raises(CatalogError, match="has no version"):
        catalog.get("x")


@pytest.mark.parametrize("name", ["../etc", "a/b", "Upper", "", "x" * 65, ".hidden", "a..b", "a.b"])
def test_bad_names_are_refused(catalog, name):
    with pytest.raises(CatalogError, match="is not allowed"):
        catalog.publish(name, docs("a"))


def _publish_in_child(root, i):
    Catalog(root).publish("shared", docs(f"text {i}"))


def test_concurrent_publishers_share_one_catalog(tmp_path):
    root = tmp_path / "lake"
    Catalog(root)
    procs = [mp.get_context("spawn").Process(target=_publish_in_child, args=(root, i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    versions = Catalog(root).versions("shared")
    assert sorted(v.seq for v in versions) == [1, 2, 3, 4]


def test_republishing_older_content_makes_it_latest_again(tmp_path):
    catalog = Catalog(tmp_path / "lake")
    a = catalog.publish("prompts", pa.table({"x": [1]}))
    b = catalog.publish("prompts", pa.table({"x": [2]}))
    assert catalog.get("prompts").version == b.version
    again = catalog.publish("prompts", pa.table({"x": [1]}))
    assert again.version == a.version and again.seq == a.seq  # no new version, same sequence number
    assert catalog.get("prompts").version == a.version
    assert [v.version for v in catalog.versions("prompts")] == [a.version, b.version]
