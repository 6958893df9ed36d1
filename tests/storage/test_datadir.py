"""The data dir's layout: one place names every folder; a new data dir is private to its owner."""
import stat

from alignline.storage import DataDir


def test_a_new_data_dir_is_0700_and_names_its_folders(tmp_path):
    data = DataDir(tmp_path / "home")
    assert data.lake == tmp_path / "home" / "lake" and data.lake.is_dir()
    assert stat.S_IMODE((tmp_path / "home").stat().st_mode) == 0o700
    assert stat.S_IMODE(data.secrets.stat().st_mode) == 0o700
    assert data.work("sft", "abc") == tmp_path / "home" / "work" / "sft" / "abc"
    assert data.harvest_ledger("safety", 3).name == "harvest-ledger-safety-3.json"
    assert data.iteration_ledger(2) == tmp_path / "home" / "iterations" / "iteration-2.json"
    assert len(str(data.ray_temp)) < 60  # Ray's unix sockets must fit in 107 characters under it
