"""The fan-out benchmark: pricestream against the floor and the common approach, same run.

    python -m bench.run                      # every scenario, about six minutes
    python -m bench.run --scenarios 100x100 1000x1000 --seconds 10

For each scenario (N viewers, R updates a second over K symbols) and each contender, it starts
a fresh upstream (bench/feed.py) and server, connects N viewers from load processes
(bench/load.py), measures for a window, and reads the server's CPU time and RSS from /proc.
The server is pinned to CPU 0 and everything else to the other CPUs, so the server has one core
and the load generators are not starved by it. Only ratios within one run mean anything on a
shared machine; the results go to stdout as Markdown and to bench/results/ as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.simulation import MARKET

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
# One load process per this many viewers: enough processes that none of them is saturated.
VIEWERS_PER_LOAD = 2500
CONTENDERS = ("pricestream", "floor", "common")
SCENARIOS = ("100x100", "100x1000", "1000x100", "1000x1000", "5000x10")


@dataclass
class Result:
    contender: str
    viewers: int
    rate: int
    expected: float
    delivered: float
    p50: float
    p90: float
    p99: float
    max: float
    p99_late: float
    server_cpu: float
    rss_per_viewer_kib: float
    rss_mib: float
    connect_seconds: float
    failed: int
    dropped: int
    load_cpu: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(cpus: set[int]) -> Any:
    def apply() -> None:
        available = os.sched_getaffinity(0)
        if cpus & available and len(available) > 1:
            os.sched_setaffinity(0, cpus & available)

    return apply


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def wait_port(port: int, timeout: float = 30) -> None:
    """uvicorn listens only once the app's start-up is complete, so a connect means ready."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def percentile(histogram: dict[int, int], q: float) -> float:
    total = sum(histogram.values())
    if not total:
        return float("nan")
    rank, seen = q * total, 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return (bucket + 1) * 0.1
    return max(histogram) * 0.1


def measure(
    contender: str,
    viewers: int,
    rate: int,
    symbols: int,
    seconds: float,
    others: set[int],
    profile: Path | None = None,
) -> Result:
    python = sys.executable
    feed = subprocess.Popen(
        [python, "-m", "bench.feed", "--rate", str(rate), "--symbols", str(symbols)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=pin(others),
        cwd=ROOT,
    )
    procs: list[subprocess.Popen[Any]] = [feed]
    reports_dir = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        assert feed.stdout is not None
        upstream, rest = feed.stdout.readline().split()
        port = free_port()
        names = ",".join(m[0] for m in MARKET[:symbols])
        if contender == "pricestream":
            cmd = [
                python,
                "-m",
                "app",
                "--port",
                str(port),
                "--upstream",
                upstream,
                "--rest",
                rest,
                "--log-level",
                "warning",
                "--max-streams-per-client",
                "100000",
                "--max-viewers",
                "100000",
                "--stall-timeout",
                "60",
            ]
        else:
            cmd = [
                python,
                "-m",
                "bench.contenders",
                contender,
                "--port",
                str(port),
                "--upstream",
                upstream,
                "--rest",
                rest,
                "--symbols",
                str(symbols),
            ]
        server = subprocess.Popen(cmd, preexec_fn=pin({0}), cwd=ROOT)
        procs.append(server)
        wait_port(port)
        time.sleep(0.5)
        rss_idle = rss_bytes(server.pid)
        loads: list[subprocess.Popen[str]] = []
        left = viewers
        while left > 0:
            n = min(left, VIEWERS_PER_LOAD)
            left -= n
            loads.append(
                subprocess.Popen(
                    [
                        python,
                        "-m",
                        "bench.load",
                        "--port",
                        str(port),
                        "--path",
                        f"/sse?symbols={names}",
                        "--viewers",
                        str(n),
                        "--seconds",
                        str(seconds),
                        "--out",
                        str(reports_dir / f"load-{len(loads)}.json"),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    preexec_fn=pin(others),
                    cwd=ROOT,
                )
            )
        procs.extend(loads)
        ready = [p.stdout.readline().split() for p in loads if p.stdout is not None]
        connect_seconds = max(float(r[1]) for r in ready)
        failed = sum(int(r[2]) for r in ready)
        time.sleep(1.0)  # warm-up: every viewer has its snapshot and the rate is steady
        cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
        if profile is not None:
            # py-spy samples from outside the process (100 Hz), so the profile costs the
            # server little; "raw" is the collapsed-stack format flame graph tools read.
            profile.mkdir(parents=True, exist_ok=True)
            procs.append(
                subprocess.Popen(
                    [
                        str(Path(sys.executable).parent / "py-spy"),
                        "record",
                        "--pid",
                        str(server.pid),
                        "--duration",
                        str(int(seconds)),
                        "--format",
                        "raw",
                        "--nonblocking",
                        "-o",
                        str(profile / f"{contender}-{viewers}x{rate}.txt"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    preexec_fn=pin(others),
                )
            )
        for p in loads:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        reports = []
        for i, p in enumerate(loads):
            p.communicate(timeout=seconds + 120)
            if p.returncode != 0:
                raise RuntimeError(f"a load process for {contender} {viewers}x{rate} failed")
            reports.append(json.loads((reports_dir / f"load-{i}.json").read_text()))
        cpu, wall = cpu_seconds(server.pid) - cpu0, time.monotonic() - t0
        rss = rss_bytes(server.pid)
    finally:
        # Viewers first, then the server, then its upstream, so nobody logs the others leaving.
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    histogram: dict[int, int] = {}
    late: dict[int, int] = {}
    for r in reports:
        for k, v in r["histogram"].items():
            histogram[int(k)] = histogram.get(int(k), 0) + v
        for k, v in r["late_histogram"].items():
            late[int(k)] = late.get(int(k), 0) + v
    window = max(r["seconds"] for r in reports)
    events = sum(r["events"] for r in reports)
    return Result(
        contender=contender,
        viewers=viewers,
        rate=rate,
        expected=float(viewers * rate),
        delivered=events / window,
        p50=percentile(histogram, 0.5),
        p90=percentile(histogram, 0.9),
        p99=percentile(histogram, 0.99),
        p99_late=percentile(late, 0.99),
        max=max(histogram, default=0) * 0.1,
        server_cpu=100 * cpu / wall,
        rss_per_viewer_kib=(rss - rss_idle) / viewers / 1024,
        rss_mib=rss / 2**20,
        connect_seconds=connect_seconds,
        failed=failed,
        dropped=sum(r["dropped"] for r in reports),
        load_cpu=max(r["cpu_percent"] for r in reports),
    )


def median_of(results: list[Result]) -> Result:
    """One row for several rounds of a contender: the median of every number."""
    values: dict[str, Any] = {}
    for name, first in results[0].__dict__.items():
        column = [getattr(x, name) for x in results]
        values[name] = statistics.median(column) if isinstance(first, int | float) else first
    return Result(**values)


def table(results: list[Result]) -> str:
    lines = []
    for n, r in dict.fromkeys((x.viewers, x.rate) for x in results):
        measured = [x for x in results if (x.viewers, x.rate) == (n, r)]
        rows = [
            median_of([x for x in measured if x.contender == c])
            for c in dict.fromkeys(x.contender for x in measured)
        ]
        rounds = len(measured) // len(rows)
        floor = next((x for x in rows if x.contender == "floor"), None)
        lines.append(
            f"\n### N={n} viewers, R={r} updates/s (expected {n * r:,} events/s)"
            + (f", median of {rounds} rounds" if rounds > 1 else "")
            + "\n"
        )
        lines.append(
            "| contender | delivered ev/s | vs floor | p50 ms | p90 ms | p99 ms | max ms "
            "| p99 2nd half ms | server CPU % | CPU µs/event | RSS/viewer KiB | connect s "
            "| not connected | dropped | load CPU % |"
        )
        lines.append("|---|" + "---:|" * 14)
        for x in rows:
            ratio = f"{x.delivered / floor.delivered:.2f}x" if floor and floor.delivered else "—"
            per_event = x.server_cpu / 100 / x.delivered * 1e6 if x.delivered else float("nan")
            lines.append(
                f"| {x.contender} | {x.delivered:,.0f} | {ratio} | {x.p50:.1f} | {x.p90:.1f} "
                f"| {x.p99:.1f} | {x.max:.0f} | {x.p99_late:.1f} | {x.server_cpu:.0f} "
                f"| {per_event:.1f} | {x.rss_per_viewer_kib:.1f} | {x.connect_seconds:.1f} "
                f"| {x.failed} | {x.dropped} | {x.load_cpu:.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenarios",
        nargs="*",
        default=list(SCENARIOS),
        help="NxR pairs: viewers x updates a second (default: all)",
    )
    parser.add_argument("--contenders", nargs="*", default=list(CONTENDERS))
    parser.add_argument("--symbols", type=int, default=10, help="K, symbols per viewer")
    parser.add_argument("--seconds", type=float, default=10, help="measuring window")
    parser.add_argument(
        "--report", type=Path, default=None, help="print the tables of a saved results file"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds per scenario, contenders in turn first"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="also record each server with py-spy into this folder",
    )
    args = parser.parse_args()
    others = set(range(1, os.cpu_count() or 2))
    if args.report is not None:
        print(table([Result(**r) for r in json.loads(args.report.read_text())]))
        return
    RESULTS.mkdir(exist_ok=True)
    saved = RESULTS / f"{time.strftime('%Y%m%dT%H%M%S')}.json"
    results: list[Result] = []
    for scenario in args.scenarios:
        n, r = (int(x) for x in scenario.split("x"))
        # Each round starts with the next contender, so a machine that drifts during a round
        # does not always favour the same one; the tables show medians over the rounds.
        rounds = [args.contenders[i:] + args.contenders[:i] for i in range(args.repeat)]
        for contender in (c for order in rounds for c in order):
            result = measure(contender, n, r, args.symbols, args.seconds, others, args.profile)
            print(
                f"{contender:12} N={n:5} R={r:5}: {result.delivered:10,.0f} ev/s "
                f"p99 {result.p99:8.1f} ms  cpu {result.server_cpu:4.0f}%  "
                f"load cpu {result.load_cpu:4.0f}%",
                file=sys.stderr,
                flush=True,
            )
            results.append(result)
            # Written after every measurement, so a run cut short keeps what it measured.
            saved.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    print(
        f"K={args.symbols} symbols per viewer, {args.seconds:g} s window, "
        f"{os.cpu_count()} CPUs; server on CPU 0, feed and load on the rest."
    )
    print(table(results))


if __name__ == "__main__":
    main()
