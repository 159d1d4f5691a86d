"""Real services the tests start (Chromium, PostgreSQL, nginx), from Debian's packages.

A fresh machine (CI) has none of them. As root there, a missing program is installed with
apt-get, as a user of the product would install it; elsewhere the test fails with the package
to install. Nothing here is mocked: the tests then run the real program on loopback ports.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
_updated = False


def free_port() -> int:
    """A loopback port nobody listens on now (for a process that binds it itself)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def debian_program(program: str, package: str, *, search: tuple[str, ...] = ()) -> str:
    """The path of `program` (on PATH, or in one of the `search` folders), installing Debian's
    `package` first if it is missing."""
    found = _find(program, search)
    if found is not None:
        return found
    global _updated
    try:
        if not _updated:
            subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600, env=_APT_ENV)
            _updated = True
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
            check=True,
            timeout=900,
            env=_APT_ENV,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"{program} is missing and could not be installed ({exc}); install {package}")
    found = _find(program, search)
    if found is None:
        pytest.fail(f"installing Debian's {package} gave no {program}")
    return found


def _find(program: str, search: tuple[str, ...]) -> str | None:
    for folder in search:
        for candidate in sorted(Path("/").glob(folder.lstrip("/")), reverse=True):
            path = candidate / program
            if os.access(path, os.X_OK):
                return str(path)
    return shutil.which(program, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
