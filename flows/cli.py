"""`alignline`: the command line. Every flag maps to a field of the run config.

Common options: --preset, --config FILE, --set section.field=value (repeatable),
--home DIR (else $ALIGNLINE_HOME, else ./.alignline). Flow modules are imported
only by the commands that run them, so `up`/`status`/`down` stay quick.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from alignline.config import PRESET_NAMES, ConfigError, RunConfig, explain_all, load_config


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=PRESET_NAMES, help="named preset (default: tiny, or the config file's)")
    p.add_argument("--config", metavar="FILE", help="TOML run config")
    p.add_argument("--set", metavar="SECTION.FIELD=VALUE", action="append", default=[],
                   help="override one config field (repeatable); see `alignline config --explain`")
    p.add_argument("--home", metavar="DIR", help="data dir (default $ALIGNLINE_HOME or ./.alignline)")


def use_servers(cfg: RunConfig) -> bool:
    """Point Prefect at this data dir's server when it is up (ephemeral API otherwise)."""
    from alignline.infra import prefect_env, status

    up = {s.name: s.healthy for s in status(cfg)}
    if up.get("prefect"):
        os.environ.update(prefect_env(cfg))
    return all(up.values())


def cmd_up(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.infra import up

    for s in up(cfg):
        print(f"{s.name:<13} {s.url:<28} {'healthy' if s.healthy else 'UNHEALTHY'}  pid {s.pid}")
    return 0


def cmd_status(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.infra import status

    rows = status(cfg)
    for s in rows:
        print(f"{s.name:<13} {s.url:<28} {'healthy' if s.healthy else 'down':<8} pid {s.pid or '-'}")
    return 0 if all(s.healthy for s in rows) else 1


def cmd_down(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.infra import down

    down(cfg)
    return 0


def cmd_config(cfg: RunConfig, args: argparse.Namespace) -> int:
    if args.explain:
        for name, typ, default, doc in explain_all():
            print(f"{name:<40} {typ:<24} {default:<24} {doc}")
        return 0
    import json

    print(json.dumps({"home": str(cfg.home), **cfg.to_dict()}, indent=2))
    return 0


def cmd_smoke(cfg: RunConfig, args: argparse.Namespace) -> int:
    if not use_servers(cfg):
        print("smoke needs the servers: run `alignline up` first", file=sys.stderr)
        return 2
    from alignline.flows.smoke import smoke_flow

    result = smoke_flow(cfg)
    for key, value in result.items():
        print(f"{key:<24} {value}")
    return 0


COMMANDS: dict[str, tuple[str, Callable[[RunConfig, argparse.Namespace], int]]] = {
    "up": ("start Label Studio, MLflow, Prefect and Ray for this data dir", cmd_up),
    "status": ("one line per server: URL, health, pid", cmd_status),
    "down": ("stop the servers `up` started", cmd_down),
    "config": ("print the resolved run config", cmd_config),
    "smoke": ("touch every component once (dataset, Ray task, MLflow run + model, Label Studio task)", cmd_smoke),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p)
        if name == "config":
            p.add_argument("--explain", action="store_true", help="list every field with its doc and source")
    return parser


def main(argv: list[str] | None = None) -> int:
    from alignline.infra.servers import RAY_CLIENT_ENV

    for key, value in RAY_CLIENT_ENV.items():  # Ray reads these at import time
        os.environ.setdefault(key, value)
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(preset=args.preset, file=args.config, overrides=args.set, home=args.home)
    except ConfigError as e:
        print(f"alignline: config error: {e}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command][1](cfg, args)
    except Exception as e:  # a clear one-line message; tracebacks with ALIGNLINE_DEBUG=1
        from alignline.infra import ServerError

        if isinstance(e, ServerError) and not os.environ.get("ALIGNLINE_DEBUG"):
            print(f"alignline: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
