"""The benchmark still runs end to end, both transports (tiny load; the numbers themselves live
in docs/)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bench(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return done.stdout


def test_the_benchmark_runs_every_contender() -> None:
    out = bench("--scenarios", "5x20", "--seconds", "1")
    rows = re.findall(r"^\| (pricestream|floor|common) \| ([\d,]+) \|", out, re.M)
    assert [name for name, _ in rows] == ["pricestream", "floor", "common"], out
    for name, delivered in rows:
        # 5 viewers, 20 updates a second: about 100 events a second each; the machine may be
        # busy, so only "it flows" is asserted here.
        assert int(delivered.replace(",", "")) > 20, (name, out)


def test_the_market_scenario_runs_pricestream_alone() -> None:
    out = bench("--scenarios", "market3", "--seconds", "1.5")
    rows = re.findall(r"^\| (pricestream|floor|common) \| ([\d,]+) \|", out, re.M)
    assert [name for name, _ in rows] == ["pricestream"], out
    # 3 viewers of four panels, each at most 5 renders a second: about 45 events a second.
    assert int(rows[0][1].replace(",", "")) > 10, out
    kinds = dict(re.findall(r"^\| (price|book|trades|chart) \| ([\d.]+) \|", out, re.M))
    # The chart changes every 2 s, so a short window may book none of its events.
    assert {"price", "book", "trades"} <= kinds.keys(), out
    assert all(float(kinds[k]) > 0 for k in ("price", "book", "trades")), out


def test_the_websocket_scenarios_run() -> None:
    out = bench("--scenarios", "ws5x20", "mixed5x20", "--seconds", "1")
    rows = re.findall(r"^\| (pricestream|wsfloor) \| ([\d,]+) \|", out, re.M)
    assert [name for name, _ in rows] == ["pricestream", "wsfloor"], out
    # One pricestream process serving both transports, a row each.
    mixed = re.findall(r"^\| pricestream (sse|ws) \| ([\d,]+) \|", out, re.M)
    assert [transport for transport, _ in mixed] == ["sse", "ws"], out
    for name, delivered in rows + mixed:
        # 5 clients, 20 updates a second: about 100 price messages a second; as above, only
        # "it flows" is asserted.
        assert int(delivered.replace(",", "")) > 20, (name, out)
