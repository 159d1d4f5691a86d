"""Real databases for the tests: a SQLite file, or a real PostgreSQL from Debian's package.

`PostgresServer` runs Debian's `postgres` in a temporary folder on a loopback port (as the
`postgres` system user when we are root: PostgreSQL refuses to run as root), and can be stopped
and started again to play a database that goes away. `Database` is what one test gets: the
settings that point a server at it, and plain SQL through a connection of its own, as another
process would see the data.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.system import debian_program, free_port

# Debian puts the server's programs beside each other, outside PATH.
_SEARCH = ("/usr/lib/postgresql/*/bin",)
_names = itertools.count(1)


class PostgresServer:
    """One PostgreSQL cluster of our own: `start()`, `stop()`, `create_database()`, `remove()`."""

    def __init__(self) -> None:
        self.bin = Path(debian_program("initdb", "postgresql", search=_SEARCH)).parent
        self.user = "postgres" if os.geteuid() == 0 else None
        # As root, in /tmp itself: the postgres user must be able to reach the folder, and root's
        # own TMPDIR may sit under /root, which it cannot enter.
        self.folder = Path(
            tempfile.mkdtemp(prefix="pricestream-pg-", dir="/tmp" if self.user else None)
        )
        self.data = self.folder / "data"
        self.port = free_port()
        if self.user is not None:
            shutil.chown(self.folder, self.user, self.user)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-sync",  # a throwaway cluster: no need to wait for the disk
        )  # fmt: skip

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [str(self.bin / program), *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.folder,  # the postgres user may not enter our working folder
            user=self.user,
        )
        if done.returncode != 0:
            log = self.folder / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            pytest.fail(f"{program} {' '.join(args)} failed: {done.stderr}{tail}")

    def start(self) -> None:
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.folder} "
            # A test database: speed over durability, and little shared memory.
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c shared_buffers=16MB -c max_connections=50"
        )
        self._run(
            "pg_ctl", "start", "-D", str(self.data), "-w", "-t", "30", "-s",
            "-l", str(self.folder / "log"), "-o", options,
        )  # fmt: skip

    def stop(self) -> None:
        # fast: connections are cut at once, as when a database server goes down.
        self._run("pg_ctl", "stop", "-D", str(self.data), "-w", "-t", "30", "-s", "-m", "fast")

    def remove(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-D", str(self.data), "-w", "-s", "-m", "immediate")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        name = f"test{next(_names)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@dataclass
class Database:
    """One test's database: SQLite in `data_dir` when `url` is empty, else PostgreSQL."""

    data_dir: str
    url: str = ""

    @property
    def kind(self) -> str:
        return "postgres" if self.url else "sqlite"

    @property
    def settings(self) -> dict[str, Any]:
        return {"data_dir": self.data_dir, "database": self.url}

    @property
    def env(self) -> dict[str, str]:
        return {"PRICESTREAM_DATA_DIR": self.data_dir, "PRICESTREAM_DATABASE": self.url}

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run `sql` (with ? placeholders) on a connection of its own; the rows it answers."""
        if self.url:
            with psycopg.connect(self.url, autocommit=True) as conn:
                cursor = conn.execute(sql.replace("?", "%s"), args)
                return list(cursor.fetchall()) if cursor.description else []
        file = sqlite3.connect(Path(self.data_dir) / "pricestream.sqlite3")
        try:
            with file:
                return file.execute(sql, args).fetchall()
        finally:
            file.close()

    def value(self, sql: str, *args: Any) -> Any:
        """The first column of the first row, or None if there is none."""
        rows = self.rows(sql, *args)
        return rows[0][0] if rows else None
