"""The README's promises match what the repository does."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    return re.findall(r"```sh\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    install_and_run, install_and_test = readme_commands()
    assert install_and_run.endswith("pricestream")
    assert install_and_test.endswith("pytest")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install_and_test in ci


def test_readme_screenshot_exists() -> None:
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (ROOT / "README.md").read_text()):
        assert (ROOT / image).is_file(), image


def test_a_built_wheel_carries_templates_and_static(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    [wheel] = tmp_path.glob("pricestream-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (
        "app/templates/base.html",
        "app/templates/fragments/quote.html",
        "app/static/app.css",
        "app/static/vendor/htmx-2.0.11.min.js",
        "app/static/vendor/htmx-ext-sse-2.2.4.js",
    ):
        assert path in names, path
    # Installed from the wheel (not this checkout), the app still finds its files.
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "from app.render import resource_dir as r; print(r('templates')); print(r('static'))",
        ],
        cwd=tmp_path,
        env={"PYTHONPATH": str(unpacked)},
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    assert found == [str(unpacked / "app" / "templates"), str(unpacked / "app" / "static")]


def test_every_test_named_in_the_docs_exists() -> None:
    for doc in (ROOT / "docs").glob("*.md"):
        for path, name in re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", doc.read_text()):
            source = (ROOT / path).read_text()
            assert re.search(rf"^(async )?def {name}\(", source, re.M), (
                f"{doc.name}: {path}::{name}"
            )
