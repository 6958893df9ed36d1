"""PostgreSQL behind Label Studio and MLflow (`servers.database = "postgresql"`): one server per data dir.

`alignline up` starts it first, on loopback only (TCP on `servers.host`, no unix socket), with its cluster in
`servers/postgres/data` (0700, owned by the account it runs as). Two roles, two generated passwords in
`secrets/postgres.json` (0600): the bootstrap superuser `postgres` (used here only, to create what follows) and
`alignline`, a plain role owning the databases `mlflow` and `label_studio`. Label Studio and MLflow read the
`alignline` password from a libpq password file (`secrets/postgres.pgpass`, 0600, `PGPASSFILE`): it is in no
argv, no environment variable, no URI and no log. The role's password is sent as a SCRAM verifier computed here,
so not even a failed statement can put it in the server's log.

PostgreSQL refuses to run as root. When alignline runs as root (a container), the server runs as
`servers.postgres_os_user` (Debian's `postgres` account) through util-linux `setpriv`, which execs in place (the
recorded pid is the postmaster's). That account gets search-only (`--x`) access to the folders above its cluster
through a POSIX ACL entry naming it; nobody else gains anything, and the data dir stays closed to other users.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import secrets
import shutil
import struct
import subprocess
import time
from pathlib import Path
from typing import Callable

import psutil

from alignline.config import RunConfig
from alignline.storage import DataDir

from . import paths

NAME = "postgres"
ADMIN_ROLE = "postgres"
APP_ROLE = "alignline"
DATABASES = {"mlflow": "mlflow", "label-studio": "label_studio"}  # server -> its database


class PostgresError(RuntimeError):
    """PostgreSQL is missing, or could not be set up; the message names the fix."""


# -- where things are ---------------------------------------------------------------------------------

def bin_dir(cfg: RunConfig) -> Path | None:
    """The folder holding initdb and postgres: the configured one, PATH, then Debian's newest version folder."""
    if cfg.servers.postgres_bin_dir:
        folder = Path(cfg.servers.postgres_bin_dir)
        return folder if (folder / "postgres").exists() and (folder / "initdb").exists() else None
    found = shutil.which("postgres")
    if found and shutil.which("initdb"):
        return Path(found).parent
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                    if Path(p).parent.name.isdigit() else 0)
    for folder in reversed(debian):
        if (Path(folder) / "postgres").exists() and (Path(folder) / "initdb").exists():
            return Path(folder)
    return None


def missing_reason(cfg: RunConfig) -> str | None:
    """Why this machine cannot run the PostgreSQL server, or None when it can."""
    if bin_dir(cfg) is None:
        return ("PostgreSQL binaries (initdb, postgres) not found on PATH, in /usr/lib/postgresql/*/bin or in "
                "servers.postgres_bin_dir: `apt-get install -y postgresql`")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(cfg.servers.postgres_os_user)
        except KeyError:
            return (f"running as root, and PostgreSQL refuses root: the account servers.postgres_os_user = "
                    f"{cfg.servers.postgres_os_user!r} does not exist (Debian's postgresql package creates 'postgres')")
        if shutil.which("setpriv") is None:
            return "running as root needs util-linux `setpriv` to start PostgreSQL as its own account"
    return None


def data_dir(cfg: RunConfig) -> Path:
    return DataDir(cfg.home).server(NAME) / "data"


def pgpass_file(cfg: RunConfig) -> Path:
    return DataDir(cfg.home).secrets / "postgres.pgpass"


def _account(cfg: RunConfig) -> pwd.struct_passwd | None:
    """The account the server runs as when we are root; None: it runs as us."""
    return pwd.getpwnam(cfg.servers.postgres_os_user) if os.geteuid() == 0 else None


def _as_server_user(cfg: RunConfig, argv: list[str]) -> list[str]:
    account = _account(cfg)
    if account is None:
        return argv
    # setpriv execs (no fork, unlike runuser/su): the pid `up` records is the postmaster itself.
    return ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups", "--", *argv]


# -- start -------------------------------------------------------------------------------------------------

def _pgpass_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def pgpass_line(host: str, port: int, user: str, password: str) -> str:
    """One libpq password-file line (any database), with ':' and '\\' escaped as libpq requires."""
    return ":".join([_pgpass_field(host), str(port), "*", _pgpass_field(user), _pgpass_field(password)]) + "\n"


def _write_pgpass(cfg: RunConfig, password: str) -> None:
    path = pgpass_file(cfg)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(pgpass_line(cfg.servers.host, cfg.servers.postgres_port, APP_ROLE, password))
    os.chmod(path, 0o600)  # libpq ignores a password file others can read


def _grant_search(path: Path, uid: int) -> None:
    """Add a POSIX ACL entry giving `uid` search (--x) on `path`, keeping the owner/group/other bits.

    The xattr is written directly (Linux `posix_acl_xattr` layout: version 2, then tag/perm/id entries), so no
    `acl` package is needed. Existing named entries would be replaced; alignline's folders carry none."""
    mode = path.stat().st_mode
    undefined = 0xFFFFFFFF
    entries = [(0x01, (mode >> 6) & 7, undefined),       # ACL_USER_OBJ
               (0x02, 1, uid),                           # ACL_USER: search only
               (0x04, (mode >> 3) & 7, undefined),       # ACL_GROUP_OBJ
               (0x10, ((mode >> 3) & 7) | 1, undefined),  # ACL_MASK
               (0x20, mode & 7, undefined)]              # ACL_OTHER
    blob = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in entries)
    try:
        os.setxattr(path, "system.posix_acl_access", blob)
    except OSError as e:
        raise PostgresError(f"could not let the PostgreSQL account search {path} ({e.strerror}): run alignline as "
                            "a non-root user, or on a file system with POSIX ACLs") from None


def prepare(cfg: RunConfig, say: Callable[[str], None]) -> None:
    """Passwords, the password file, and the cluster (initdb, once per data dir)."""
    reason = missing_reason(cfg)
    if reason:
        raise PostgresError(f"servers.database = 'postgresql': {reason}")
    try:
        cred = paths.read_secret(cfg.home, NAME)
    except FileNotFoundError:
        cred = {"admin_user": ADMIN_ROLE, "admin_password": secrets.token_urlsafe(24),
                "user": APP_ROLE, "password": secrets.token_urlsafe(24)}
        paths.write_secret(cfg.home, NAME, cred)
    _write_pgpass(cfg, cred["password"])
    data, account = data_dir(cfg), _account(cfg)
    if account is not None:
        # The data dir and its servers/ folder are 0700 (root's); folders above the data dir are the operator's.
        root, target = Path(cfg.home).resolve(), data.parent.resolve()
        for folder in [root, *(p for p in reversed(target.parents) if root in p.parents), target]:
            _grant_search(folder, account.pw_uid)
    if (data / "PG_VERSION").exists():
        return
    say(f"postgres: creating its cluster at {data} (initdb, once)")
    data.mkdir(mode=0o700, exist_ok=True)
    pwfile = data.parent / ".initdb-password"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(cred["admin_password"] + "\n")
    try:
        if account is not None:
            os.chown(data, account.pw_uid, account.pw_gid)
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        os.chmod(data, 0o700)
        argv = _as_server_user(cfg, [str(bin_dir(cfg) / "initdb"), "-D", str(data), "-U", ADMIN_ROLE,
                                     f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8",
                                     "--locale=C", "--no-instructions"])
        with open(DataDir(cfg.home).log_file(NAME), "ab") as log:
            done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env(cfg), cwd=data.parent)
        if done.returncode != 0:
            raise PostgresError(f"initdb failed (exit {done.returncode}); see {DataDir(cfg.home).log_file(NAME)}")
    finally:
        pwfile.unlink(missing_ok=True)


def command(cfg: RunConfig) -> list[str]:
    s = cfg.servers
    return _as_server_user(cfg, [str(bin_dir(cfg) / "postgres"), "-D", str(data_dir(cfg)),
                                 "-c", f"listen_addresses={s.host}", "-c", f"port={s.postgres_port}",
                                 "-c", "unix_socket_directories=",  # TCP on loopback only
                                 "-c", "password_encryption=scram-sha-256"])


def env(cfg: RunConfig) -> dict[str, str]:
    out = {k: os.environ[k] for k in ("PATH", "TZ") if k in os.environ}
    out.update({"LANG": "C", "LC_ALL": "C"})
    return out


# -- answer and databases ----------------------------------------------------------------------------

@contextlib.contextmanager
def admin_connection(cfg: RunConfig, dbname: str = "postgres"):
    import psycopg2

    cred = paths.read_secret(cfg.home, NAME)
    con = psycopg2.connect(host=cfg.servers.host, port=cfg.servers.postgres_port, user=cred["admin_user"],
                           password=cred["admin_password"], dbname=dbname, connect_timeout=3)
    con.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    try:
        yield con
    finally:
        con.close()


def probe(cfg: RunConfig) -> bool:
    """Healthy: the server accepts the superuser's password and answers a query."""
    import psycopg2

    try:
        with admin_connection(cfg) as con, con.cursor() as cur:
            cur.execute("SELECT 1")
            return cur.fetchone() == (1,)
    except (psycopg2.Error, FileNotFoundError, KeyError):
        return False


def ensure_databases(cfg: RunConfig) -> None:
    """The `alignline` role (its password kept in step with the secret) and one database per server, owned by it."""
    from psycopg2 import sql
    from psycopg2.extensions import encrypt_password

    cred = paths.read_secret(cfg.home, NAME)
    with admin_connection(cfg) as con, con.cursor() as cur:
        verifier = encrypt_password(cred["password"], APP_ROLE, con, "scram-sha-256")
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,))
        verb = "ALTER" if cur.fetchone() else "CREATE"
        cur.execute(sql.SQL(verb + " ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %s")
                    .format(sql.Identifier(APP_ROLE)), (verifier,))
        for database in DATABASES.values():
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8' TEMPLATE template0")
                            .format(sql.Identifier(database), sql.Identifier(APP_ROLE)))


def _process_alive(cfg: RunConfig) -> bool:
    """The pid `up` recorded still runs (a crash during start fails fast instead of waiting for the timeout)."""
    try:
        pid = int(json.loads(DataDir(cfg.home).pid_file(NAME).read_text())["pid"])
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (FileNotFoundError, ValueError, KeyError, TypeError, psutil.Error):
        return False


def wait_ready(cfg: RunConfig, say: Callable[[str], None]) -> None:
    """Block until this data dir's PostgreSQL answers, then make sure the role and databases exist.

    Label Studio and MLflow call this before they start: they migrate their schema on first boot."""
    deadline = time.monotonic() + cfg.servers.start_timeout_s
    while not probe(cfg):
        if not _process_alive(cfg):
            raise PostgresError(f"postgres: not running (exited, or not started: `alignline up`); "
                                f"see {DataDir(cfg.home).log_file(NAME)}")
        if time.monotonic() > deadline:
            raise PostgresError(f"postgres: no answer on {cfg.servers.host}:{cfg.servers.postgres_port} within "
                                f"{cfg.servers.start_timeout_s:.0f}s; is it up? see {DataDir(cfg.home).log_file(NAME)}")
        time.sleep(0.5)
    ensure_databases(cfg)
    say("postgres: role and databases ready")


# -- what its clients get ------------------------------------------------------------------------------

def mlflow_backend_uri(cfg: RunConfig) -> str:
    """No password in it: libpq reads it from PGPASSFILE (see `client_env`)."""
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; ours is psycopg2 (psycopg2-binary).
    return f"postgresql+psycopg2://{APP_ROLE}@{cfg.servers.host}:{cfg.servers.postgres_port}/{DATABASES['mlflow']}"


def client_env(cfg: RunConfig) -> dict[str, str]:
    return {"PGPASSFILE": str(pgpass_file(cfg)), "PGCONNECT_TIMEOUT": "10"}


def label_studio_env(cfg: RunConfig) -> dict[str, str]:
    """Label Studio's database settings (read as LABEL_STUDIO_X, then X). The password is left empty: Django then
    passes none and libpq takes it from PGPASSFILE."""
    return {**client_env(cfg), "DJANGO_DB": "postgresql", "POSTGRE_NAME": DATABASES["label-studio"],
            "POSTGRE_USER": APP_ROLE, "POSTGRE_PASSWORD": "", "POSTGRE_HOST": cfg.servers.host,
            "POSTGRE_PORT": str(cfg.servers.postgres_port)}
