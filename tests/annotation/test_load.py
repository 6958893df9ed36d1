"""benchmarks/annotation_load.py: concurrent annotators while harvests run lose and duplicate nothing, on the
SQLite default and on PostgreSQL (a short version of the benchmark; benchmarks/ is loaded by path)."""
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest

from alignline.flows.context import label_studio_token
from alignline.storage import DataDir

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "annotation_load.py"
SHORT = {"annotators": 5, "seconds": 20.0, "harvest_every_s": 3.0, "tasks": 300}


@pytest.fixture(scope="module")
def load():
    spec = importlib.util.spec_from_file_location("annotation_load", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_percentile_is_nearest_rank(load):
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert (load.percentile(values, 50), load.percentile(values, 95), load.percentile(values, 100)) == (10.0, 19.0, 20.0)
    assert load.percentile([3.0], 95) == 3.0


class _Catalog:
    def __init__(self, tables):
        self.tables = tables

    def find(self, name):
        return name if name in self.tables else None

    def read(self, name):
        return self.tables[name]


class _Admin:
    def __init__(self, stored):
        self.tasks = SimpleNamespace(list=lambda **kw: [SimpleNamespace(annotations=[{"id": i} for i in stored])])


def test_the_check_counts_lost_duplicated_and_stored_without_acknowledgement(load):
    report = load.LoadReport("sqlite", 2, 10.0, submitted={1, 2, 3, 4})
    catalog = _Catalog({load.DATASET: pa.table({"annotation_id": [1, 2, 2, 5]}),
                        f"{load.DATASET}-quarantine": pa.table({"record_id": ["3"], "reason": ["skipped"]})})
    load._check(_Admin({1, 2, 3, 4, 5}), 7, catalog, report)
    assert (report.lost, report.duplicated, report.unacknowledged_stored) == (1, 1, 1)  # 4 lost, 2 twice, 5 stored
    assert (report.comparisons, report.quarantined, dict(report.quarantine_reasons)) == (4, 1, {"skipped": 1})


def _short_load(load, cfg):
    url = cfg.servers.url(cfg.servers.label_studio_port)
    report = load.run_load(url, label_studio_token(cfg.home), DataDir(cfg.home).work("load-test"),
                           cfg.servers.database, **SHORT, say=print)
    print("\n".join(report.lines()))
    assert len(report.submitted) >= SHORT["annotators"], report.lines()
    assert report.harvest_latency_s, "no harvest finished during the load"
    assert report.lost == 0 and report.duplicated == 0, report.lines()
    # Every stored annotation is published once. The only quarantine allowed: the repeat that the SDK's automatic
    # retry stores after SQLite's "database is locked" 500 on a POST that had already been written.
    assert report.comparisons + report.quarantined == len(report.submitted) + report.unacknowledged_stored
    assert report.quarantined == report.unacknowledged_stored
    assert set(report.quarantine_reasons) <= {"duplicate label (the annotator's first label of the task is kept)"}
    return report


@pytest.mark.integration
def test_short_load_on_sqlite_loses_nothing(load, servers):
    assert servers.servers.database == "sqlite"
    _short_load(load, servers)


@pytest.mark.integration
def test_short_load_on_postgresql_loses_nothing(load, postgres_servers):
    assert postgres_servers.servers.database == "postgresql"
    _short_load(load, postgres_servers)
