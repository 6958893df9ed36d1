"""PostgreSQL behind Label Studio and MLflow: config, argv/env without secrets, and the real servers on it."""
import os
import signal
import stat
import uuid

import psutil
import pytest

from alignline.config import ConfigError, load_config
from alignline.infra import postgres
from alignline.infra import servers as srv
from alignline.infra.paths import read_secret, write_secret


def pg_config(tmp_path, *overrides):
    return load_config(overrides=["servers.database=postgresql", "servers.postgres_port=25999", *overrides],
                       home=tmp_path / "home")


def test_sqlite_stays_the_default_and_adds_no_server(tmp_path):
    cfg = load_config(home=tmp_path / "home")
    assert cfg.servers.database == "sqlite"
    assert "postgres" not in [s.name for s in srv.servers(cfg)]
    assert "sqlite:///" in " ".join(srv._mlflow_command(cfg))
    write_secret(cfg.home, "label-studio", {"username": "a@b.c", "password": "x", "token": "t"})
    assert "DJANGO_DB" not in srv._ls_env(cfg)


@pytest.mark.parametrize("override, rule", [
    ("servers.database=mysql", "allowed: 'sqlite', 'postgresql'"),
    ("servers.postgres_port=80", ">= 1024"),
    ("servers.postgres_port=15000", "not used by servers.mlflow_port"),
    ("servers.postgres_os_user=a b", "an account name"),
])
def test_bad_settings_name_field_and_rule(tmp_path, override, rule):
    with pytest.raises(ConfigError, match=rule):
        load_config(overrides=[override], home=tmp_path)


def test_postgres_starts_first_stops_last_and_fast(tmp_path):
    cfg = pg_config(tmp_path)
    listed = srv.servers(cfg)
    assert [s.name for s in listed][:3] == ["postgres", "label-studio", "mlflow"]
    assert listed[0].stop_signal == signal.SIGINT  # fast shutdown; SIGTERM would wait for every client to leave
    assert [s.name for s in srv._selected(cfg, ["label-studio", "postgres"])] == ["postgres", "label-studio"]
    assert listed[0].url(cfg) == "postgresql://127.0.0.1:25999"


def test_pgpass_escapes_separators():
    assert postgres.pgpass_line("127.0.0.1", 5432, "u:1", "p\\a:ss") == "127.0.0.1:5432:*:u\\:1:p\\\\a\\:ss\n"


def test_no_password_in_any_argv_or_environment(tmp_path):
    cfg = pg_config(tmp_path)
    write_secret(cfg.home, "postgres", {"admin_user": "postgres", "admin_password": "ADMIN-SECRET-1",
                                        "user": "alignline", "password": "APP-SECRET-2"})
    write_secret(cfg.home, "label-studio", {"username": "a@b.c", "password": "x", "token": "t"})
    argv = " ".join(postgres.command(cfg) + srv._mlflow_command(cfg) + srv._ls_command(cfg))
    env = " ".join(f"{k}={v}" for k, v in {**postgres.env(cfg), **srv._mlflow_env(cfg), **srv._ls_env(cfg)}.items())
    for secret in ("ADMIN-SECRET-1", "APP-SECRET-2"):
        assert secret not in argv and secret not in env
    assert "postgresql+psycopg2://alignline@127.0.0.1:25999/mlflow" in argv
    assert "listen_addresses=127.0.0.1" in argv and "unix_socket_directories=" in argv
    ls_env = srv._ls_env(cfg)
    assert ls_env["DJANGO_DB"] == "postgresql" and ls_env["POSTGRE_PASSWORD"] == ""
    assert ls_env["PGPASSFILE"] == srv._mlflow_env(cfg)["PGPASSFILE"] == str(postgres.pgpass_file(cfg))


def test_root_runs_it_as_its_own_account(tmp_path):
    cfg = pg_config(tmp_path)
    argv = postgres.command(cfg)
    if os.geteuid() == 0:
        assert argv[0] == "setpriv" and "--init-groups" in argv and argv[argv.index("--") + 1].endswith("/postgres")
    else:
        assert argv[0].endswith("/postgres")


def test_missing_binaries_give_the_install_line(tmp_path):
    cfg = pg_config(tmp_path, f"servers.postgres_bin_dir={tmp_path / 'nowhere'}")
    assert "apt-get install -y postgresql" in postgres.missing_reason(cfg)
    with pytest.raises(postgres.PostgresError, match="apt-get install -y postgresql"):
        postgres.prepare(cfg, say=lambda m: None)


def test_down_stops_nothing_outside_the_selection(tmp_path):
    cfg = pg_config(tmp_path)
    with pytest.raises(srv.ServerError, match="no server named nope"):
        srv.down(cfg, names=["nope"], say=lambda m: None)


# -- the real servers on PostgreSQL ---------------------------------------------------------------------------

def _pids_of_group(pgid):
    out = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid:
                out.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return out


@pytest.mark.integration
def test_postgres_is_loopback_only_password_protected_and_private(postgres_servers):
    import psycopg2

    cfg = postgres_servers
    pid = srv._read_pid(cfg.home, "postgres")
    assert pid is not None
    listening = [c for c in psutil.net_connections(kind="inet") if c.pid == pid and c.status == psutil.CONN_LISTEN]
    assert listening and {c.laddr.ip for c in listening} == {"127.0.0.1"}
    assert not [c for c in psutil.net_connections(kind="unix") if c.pid == pid and c.laddr]  # no unix socket
    data = postgres.data_dir(cfg)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    if os.geteuid() == 0:
        assert data.stat().st_uid == psutil.Process(pid).uids().real != 0
    cred = read_secret(cfg.home, "postgres")
    for name in ("postgres.json", "postgres.pgpass"):
        assert stat.S_IMODE((cfg.home / "secrets" / name).stat().st_mode) == 0o600
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(host="127.0.0.1", port=cfg.servers.postgres_port, user="alignline",
                         password="wrong", dbname="mlflow", connect_timeout=5)
    with psycopg2.connect(host="127.0.0.1", port=cfg.servers.postgres_port, user="alignline",
                          password=cred["password"], dbname="label_studio", connect_timeout=5) as con:
        with con.cursor() as cur:
            cur.execute("SELECT rolsuper, rolcreatedb FROM pg_roles WHERE rolname = current_user")
            assert cur.fetchone() == (False, False)  # Label Studio and MLflow get a plain role
            cur.execute("SELECT count(*) FROM htx_user")  # Label Studio migrated into PostgreSQL
            assert cur.fetchone()[0] >= 1
    # No password in any argv or log of the three servers.
    for name in ("postgres", "label-studio", "mlflow"):
        log = (cfg.home / "servers" / name / "server.log").read_text(errors="replace")
        group = _pids_of_group(srv._read_pid(cfg.home, name))
        argv = " ".join(" ".join(p.cmdline()) for p in group)
        for secret in (cred["password"], cred["admin_password"]):
            assert secret not in log and secret not in argv, name


@pytest.mark.integration
def test_mlflow_keeps_runs_in_postgres(postgres_servers):
    import psycopg2
    from mlflow.tracking import MlflowClient

    cfg = postgres_servers
    client = MlflowClient(tracking_uri=cfg.servers.url(cfg.servers.mlflow_port))
    name = f"pg-{uuid.uuid4().hex[:8]}"
    exp = client.create_experiment(name)
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "loss", 0.25)
    cred = read_secret(cfg.home, "postgres")
    with psycopg2.connect(host="127.0.0.1", port=cfg.servers.postgres_port, user="alignline",
                          password=cred["password"], dbname="mlflow", connect_timeout=5) as con:
        with con.cursor() as cur:
            cur.execute("SELECT m.value FROM metrics m JOIN runs r ON r.run_uuid = m.run_uuid "
                        "JOIN experiments e ON e.experiment_id = r.experiment_id WHERE e.name = %s AND m.key = 'loss'",
                        (name,))
            assert cur.fetchall() == [(0.25,)]
