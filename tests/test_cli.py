"""Flags and environment into Settings; the real command starts, serves and stops."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.cli import build_parser, flag_name, settings_from
from app.config import Settings, setting_fields
from tests.conftest import data_dir
from tests.system import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_match_the_contract() -> None:
    s = settings_from([], {})
    assert (s.host, s.port, s.upstream, s.rest, s.demo, s.log_level) == (
        "127.0.0.1",
        8000,
        "wss://stream.binance.com:9443",
        "https://api.binance.com",
        False,
        "info",
    )
    assert s.symbols == ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT")


def test_environment_then_flags() -> None:
    env = {
        "PRICESTREAM_PORT": "9100",
        "PRICESTREAM_SYMBOLS": "btcusdt, ethbtc",
        "PRICESTREAM_DEMO": "yes",
        "PRICESTREAM_UPSTREAM": "ws://127.0.0.1:9001",
        "PRICESTREAM_GRACE_PERIOD": "2.5",
        "PRICESTREAM_LOG_LEVEL": "DEBUG",
    }
    s = settings_from([], env)
    assert (s.port, s.symbols, s.demo, s.upstream, s.grace_period, s.log_level) == (
        9100,
        ("BTCUSDT", "ETHBTC"),
        True,
        "ws://127.0.0.1:9001",
        2.5,
        "debug",
    )
    s = settings_from(["--port", "9200", "--no-demo", "--symbols", "SOLUSDT"], env)
    assert (s.port, s.demo, s.symbols) == (9200, False, ("SOLUSDT",))


def test_every_setting_has_a_flag_and_a_variable() -> None:
    parser = build_parser()
    flags = {opt for action in parser._actions for opt in action.option_strings}
    for f in setting_fields():
        assert flag_name(f.name) in flags
        env = {"PRICESTREAM_" + f.name.upper(): "1" if f.type in ("bool", "int", "float") else ""}
        assert isinstance(Settings.from_env({}), Settings)
        del env


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--port", "eighty"], {}, "--port: cannot read 'eighty' as int"),
        (
            [],
            {"PRICESTREAM_STALL_TIMEOUT": "soon"},
            "PRICESTREAM_STALL_TIMEOUT: cannot read 'soon' as float",
        ),
        (["--log-level", "loud"], {}, "log_level must be one of debug, info, warning, error"),
        (["--control-rate", "10"], {}, "control_rate must be at most 4"),
        ([], {"PRICESTREAM_DEMO": "maybe"}, "PRICESTREAM_DEMO: cannot read 'maybe' as bool"),
    ],
)
def test_bad_values_exit_with_a_sentence(
    argv: list[str], env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        settings_from(argv, env)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(--[a-z-]+)` \| `(PRICESTREAM_[A-Z_]+)` \|", readme, re.M))
    for f in setting_fields():
        assert rows.get(flag_name(f.name)) == "PRICESTREAM_" + f.name.upper(), f.name


def test_the_command_serves_the_demo_and_stops_fast_with_open_streams() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRICESTREAM_")}
    env["PRICESTREAM_DATA_DIR"] = data_dir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "--demo", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=10) as client:
            assert "DEMO" in client.get("/").text
            streams = [client.stream("GET", "/sse?symbols=BTCUSDT,ETHUSDT") for _ in range(3)]
            for s in streams:
                response = s.__enter__()
                assert next(response.iter_lines()).startswith("retry:")
            started = time.monotonic()
            proc.send_signal(signal.SIGINT)  # Ctrl-C with three tabs open
            output, _ = proc.communicate(timeout=10)
            elapsed = time.monotonic() - started
            for s in streams:
                s.__exit__(None, None, None)
        assert proc.returncode == 0, output
        assert elapsed < 2.0, f"took {elapsed:.2f} s"
        assert "Traceback" not in output, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
