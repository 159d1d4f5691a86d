"""The command line: flags over `PRICESTREAM_*` variables over defaults, then uvicorn.

Flags are generated from the Settings fields, so every setting has a flag, a variable and help.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from app import __version__
from app.application import create_app, drain
from app.config import ENV_PREFIX, Settings, SettingsError, parse_value, setting_fields
from app.server import Server, raise_open_files_limit, uvicorn_config
from app.store import StoreError, check_store
from app.workers import Supervisor, worker_count


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pricestream",
        description="Live Binance prices pushed to htmx pages over server-sent events.",
        epilog=f"Every flag also reads the variable {ENV_PREFIX}<FLAG> (a flag wins over it).",
    )
    parser.add_argument("--version", action="version", version=f"pricestream {__version__}")
    for f in setting_fields():
        help_text = f"{f.metadata['help']} (default: {_shown(f.default)})"
        if isinstance(f.default, bool):
            parser.add_argument(
                flag_name(f.name),
                dest=f.name,
                default=None,
                action=argparse.BooleanOptionalAction,
                help=help_text,
            )
        else:
            parser.add_argument(
                flag_name(f.name), dest=f.name, default=None, metavar="VALUE", help=help_text
            )
    return parser


def _shown(value: object) -> str:
    return ",".join(value) if isinstance(value, tuple) else str(value)


def settings_from(argv: Sequence[str], environ: Mapping[str, str]) -> Settings:
    """Defaults, then the environment, then flags; raises SystemExit with a message on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(environ)
        changes = {}
        for f in setting_fields():
            value = getattr(args, f.name)
            if value is None:
                continue
            changes[f.name] = (
                value
                if isinstance(value, bool)
                else parse_value(f, value, source=flag_name(f.name))
            )
        return settings.replace(**changes)
    except SettingsError as exc:
        parser.error(str(exc))


def configure_logging(settings: Settings) -> None:
    """One line per record, at `--log-level` (in each worker process too)."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    if settings.log_level != "debug":
        # Per-request chatter from libraries; our own modules log every state change.
        for name in ("httpx", "app.demo.wire"):
            logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> None:
    settings = settings_from(sys.argv[1:] if argv is None else argv, os.environ)
    configure_logging(settings)
    try:
        # Checked before uvicorn starts, so a bad data folder or database is one sentence, not
        # a traceback.
        check_store(settings.data_dir, settings.database)
    except StoreError as exc:
        print(f"pricestream: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    raise_open_files_limit(settings)
    count = worker_count(settings.workers)
    if count > 1:
        raise SystemExit(Supervisor(settings, count).run())
    app = create_app(settings)
    config = uvicorn_config(app, settings)
    try:
        Server(config, before_shutdown=lambda: drain(app)).run()
    except KeyboardInterrupt:
        # uvicorn re-raises Ctrl-C after a clean shutdown; the shutdown is done, so exit quietly.
        pass
