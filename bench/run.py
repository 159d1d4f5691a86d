"""The fan-out benchmark: pricestream against the floors and the common approach, same run.

    python -m bench.run                      # every scenario, about twenty minutes
    python -m bench.run --scenarios 100x100 1000x1000 market1000 --seconds 10
    python -m bench.run --scenarios ws1000x1000 mixed1000

Four kinds of scenario:

- `NxR` (fan-out): N viewers of /sse?symbols= with K symbols each, R trades a second over them.
  pricestream runs with `--render-interval 0`, so it renders every update once, as the floor
  does: the comparison is the cost of fan-out.
- `wsNxR` (WebSocket fan-out): the same with N WebSocket clients of /ws/price, each subscribing
  to the K symbols, against the WebSocket floor (`wsfloor`); pricestream encodes every update's
  JSON once, as the floor does.
- `mixedN` (or `mixedNxR`; R defaults to `MIXED_RATE`): N WebSocket clients and N SSE viewers
  of the same K symbols at once, on one pricestream process with `--render-interval 0`; each
  transport is reported on its own row (the server's CPU is the whole process's).
- `marketN`: N viewers of one symbol's market page, /sse?topics=price,chart,book,trades of
  BTCUSDT, under a busy upstream (`MARKET_RATE` trades a second, the book ten times a second,
  the 1m candle every 2 s, the ticker every second). pricestream runs with its default render
  intervals, as shipped. Only pricestream runs it: the floor and the common contender know
  price cards only.

For each scenario and each contender, it starts a fresh upstream (bench/feed.py) and server,
connects N viewers from load processes (bench/load.py), measures for a window, and reads the
server's CPU time and RSS from /proc. The server is pinned to CPU 0 and everything else to the
other CPUs, so the server has one core and the load generators are not starved by it. The
exception is `pricestream-2w` (`--workers 2`, fan-out scenarios): its two workers may use every
core, the load generators' included, so it shows what a second worker buys on this machine
when the load shares it, not what two free cores would give. Only
ratios within one run mean anything on a shared machine; the results go to stdout as Markdown
and to bench/results/ as JSON.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from app.simulation import MARKET

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
# One load process per this many viewers: enough processes that none of them is saturated.
VIEWERS_PER_LOAD = 2500
CONTENDERS = ("pricestream", "pricestream-asgi", "pricestream-2w", "floor", "wsfloor", "common")
SCENARIOS = (
    "100x100",
    "100x1000",
    "1000x100",
    "1000x1000",
    "5000x10",
    # 20,000 viewers, less what this machine allows: its hard limit of 20,000 open files per
    # process must also hold the server's own (listening socket, upstream, database, loop).
    "19900x10",
    "market1000",
    "ws1000x1000",
    "mixed1000",
)
# The mixed scenario's updates a second, the rate its target is stated at.
MIXED_RATE = 100
# The market scenario's trades a second on its one symbol: a busy hour on BTCUSDT.
MARKET_RATE = 200
MARKET_SYMBOL = "BTCUSDT"
MARKET_TOPICS = (
    f"price:{MARKET_SYMBOL}",
    f"chart:{MARKET_SYMBOL}:1m",
    f"book:{MARKET_SYMBOL}",
    f"trades:{MARKET_SYMBOL}",
)
# Who runs each kind of scenario: the floors and the common contender know price cards only,
# and each floor one transport.
KIND_CONTENDERS = {
    "sse": ("pricestream", "pricestream-asgi", "pricestream-2w", "floor", "common"),
    "ws": ("pricestream", "pricestream-asgi", "wsfloor"),
    "market": ("pricestream",),
    "mixed": ("pricestream", "pricestream-asgi"),
}


@dataclass(frozen=True)
class Scenario:
    """What one measurement runs: a fan-out `NxR` or `wsNxR`, a market page `marketN`, or
    both transports at once, `mixedN`."""

    name: str
    kind: str  # "sse", "ws", "market" or "mixed"
    viewers: int  # per transport
    rate: int
    symbols: int

    @property
    def market(self) -> bool:
        return self.kind == "market"

    @classmethod
    def parse(cls, name: str, symbols: int) -> Scenario:
        if name.startswith("market"):
            return cls(name, "market", int(name.removeprefix("market")), MARKET_RATE, 1)
        kind, rest = "sse", name
        for prefix in ("ws", "mixed"):
            if name.startswith(prefix):
                kind, rest = prefix, name.removeprefix(prefix)
        if kind == "mixed" and "x" not in rest:
            rest += f"x{MIXED_RATE}"
        n, r = (int(x) for x in rest.split("x"))
        return cls(name, kind, n, r, symbols)

    def contenders(self) -> tuple[str, ...]:
        return KIND_CONTENDERS[self.kind]

    def transports(self) -> tuple[str, ...]:
        return {"ws": ("ws",), "mixed": ("sse", "ws")}.get(self.kind, ("sse",))

    def load_args(self, transport: str) -> list[str]:
        """bench.load's arguments for this scenario's viewers of `transport`."""
        symbols = ",".join(m[0] for m in MARKET[: self.symbols])
        if transport == "ws":
            return ["--path", "/ws/price", "--ws", symbols]
        if self.market:
            return ["--path", "/sse?topics=" + ",".join(MARKET_TOPICS), "--kinds"]
        return ["--path", "/sse?symbols=" + symbols]


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
    # Added with the market scenario; results saved before it lack them.
    scenario: str = ""
    bytes_per_viewer_s: float = float("nan")
    # Per kind of event (price, book, trades, chart, status): [events/s, bytes/s] per viewer.
    kinds: dict[str, list[float]] = field(default_factory=dict)
    # Per kind of event: [p50, p99] latency in ms.
    kind_latency: dict[str, list[float]] = field(default_factory=dict)
    # Added with the WebSocket scenarios: whose numbers these are (in `mixed`, each transport
    # has its row; the server's CPU and RSS are the whole process's).
    transport: str = "sse"
    # Added with direct writes: the share of the server's CPU time spent in the kernel (its
    # system time), where a send on loopback also pays for the receiving side of TCP.
    kernel_share: float = float("nan")
    # pricestream's own p99 (its latency histogram's bucket bound): what the server adds.
    server_p99_ms: float = float("nan")

    @property
    def group(self) -> str:
        return self.scenario or f"{self.viewers}x{self.rate}"

    @property
    def cpu_per_event_us(self) -> float:
        return self.server_cpu / 100 / self.delivered * 1e6 if self.delivered else float("nan")


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


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (a `--workers` server is a parent and its workers)."""
    pids = [pid]
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in children.read_text().split():
            pids += tree(int(child))
    return pids


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU time of `pid` and its living descendants."""
    user = system = 0
    for each in tree(pid):
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        user += int(fields[11])
        system += int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and its living descendants."""
    return sum(int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE for p in tree(pid))


def server_latency(port: int) -> dict[float, float]:
    """The server's own `pricestream_update_latency_seconds` buckets (cumulative counts by upper
    bound, summed over workers): Binance's event time to the end of the flush that wrote each
    update, so what the server adds, without the load generator's own delays. Empty (shown as
    "—") if a saturated server does not answer within the timeout: the run goes on."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
            text = answer.read().decode()
    except (OSError, http.client.HTTPException):
        return {}
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "pricestream_update_latency_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The upper bound (ms) of the bucket holding quantile `q` of what was observed between two
    scrapes; nan if nothing was, or if a scrape failed."""
    if not before or not after:
        return float("nan")
    counts = sorted((bound, after[bound] - before.get(bound, 0.0)) for bound in after)
    total = counts[-1][1] if counts else 0.0
    for bound, cumulative in counts:
        if total and cumulative >= q * total:
            return bound * 1000
    return float("nan")


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
    scenario: Scenario,
    seconds: float,
    others: set[int],
    profile: Path | None = None,
) -> list[Result]:
    """One contender in one scenario: a Result per transport the scenario's viewers use."""
    python = sys.executable
    mode = "market" if scenario.market else "fanout"
    feed = subprocess.Popen(
        [
            python,
            "-m",
            "bench.feed",
            "--mode",
            mode,
            "--rate",
            str(scenario.rate),
            "--symbols",
            str(scenario.symbols),
        ],
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
        if contender.startswith("pricestream"):
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
                # The fan-out feed sends no tickers (every update is a counted trade), and a
                # run with thousands of viewers lasts minutes: no topic may turn stale, and no
                # ticker stream be resubscribed as stuck, in the middle of one.
                "--stall-timeout",
                "600",
                # Its own empty database, never the user's.
                "--data-dir",
                str(reports_dir / "data"),
            ]
            if contender == "pricestream-asgi":
                cmd.append("--no-direct-writes")  # every send through ASGI, as before app.direct
            if contender == "pricestream-2w":
                cmd += ["--workers", "2"]  # both cores, shared with the load generator
            if not scenario.market:
                # Every update rendered (and encoded) once, as the floors do: fan-out against
                # fan-out.
                cmd += ["--render-interval", "0"]
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
                str(scenario.symbols),
            ]
        # One core for the server; two workers get both, and share them with the load.
        cores = {0, 1} if contender == "pricestream-2w" else {0}
        server = subprocess.Popen(cmd, preexec_fn=pin(cores), cwd=ROOT)
        procs.append(server)
        wait_port(port)
        time.sleep(2.0 if contender == "pricestream-2w" else 0.5)  # every worker listening
        rss_idle = rss_bytes(server.pid)
        loads: list[tuple[str, subprocess.Popen[str]]] = []
        for transport in scenario.transports():
            left = scenario.viewers
            while left > 0:
                n = min(left, VIEWERS_PER_LOAD)
                left -= n
                out = reports_dir / f"load-{len(loads)}.json"
                load = subprocess.Popen(
                    [
                        python,
                        "-m",
                        "bench.load",
                        "--port",
                        str(port),
                        "--viewers",
                        str(n),
                        "--seconds",
                        str(seconds),
                        "--out",
                        str(out),
                        *scenario.load_args(transport),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    preexec_fn=pin(others),
                    cwd=ROOT,
                )
                loads.append((transport, load))
                procs.append(load)
        ready: dict[str, list[list[str]]] = {}
        for transport, p in loads:
            assert p.stdout is not None
            ready.setdefault(transport, []).append(p.stdout.readline().split())
        time.sleep(1.0)  # warm-up: every viewer has its snapshot and the rate is steady
        timed = contender.startswith("pricestream")
        latency0 = server_latency(port) if timed else {}
        (user0, system0), t0 = cpu_split(server.pid), time.monotonic()
        profiler = None
        if profile is not None:
            # py-spy samples from outside the process (100 Hz), so the profile costs the
            # server little; "raw" is the collapsed-stack format flame graph tools read.
            profile.mkdir(parents=True, exist_ok=True)
            profiler = subprocess.Popen(
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
                    str(profile / f"{contender}-{scenario.name}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=pin(others),
            )
            procs.append(profiler)
        for _, p in loads:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        reports: dict[str, list[dict[str, Any]]] = {}
        for i, (transport, p) in enumerate(loads):
            p.communicate(timeout=seconds + 120)
            if p.returncode != 0:
                raise RuntimeError(f"a load process for {contender} {scenario.name} failed")
            report = json.loads((reports_dir / f"load-{i}.json").read_text())
            reports.setdefault(transport, []).append(report)
        latency1 = server_latency(port) if timed else {}
        user, system = cpu_split(server.pid)
        user, system = user - user0, system - system0
        cpu, wall = user + system, time.monotonic() - t0
        rss = rss_bytes(server.pid)
        if profiler is not None:
            # It writes its file only when its duration is over, which may be just after the
            # load processes'; stopping it earlier would lose the profile.
            profiler.wait(30)
    finally:
        # Viewers first, then the server, then its upstream, so nobody logs the others leaving.
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    connections = scenario.viewers * len(scenario.transports())
    return [
        _result(
            contender,
            scenario,
            transport,
            reports[transport],
            ready[transport],
            server_cpu=100 * cpu / wall,
            kernel_share=system / cpu if cpu else float("nan"),
            server_p99_ms=bucket_quantile(latency0, latency1, 0.99) if timed else float("nan"),
            rss_per_viewer_kib=(rss - rss_idle) / connections / 1024,
            rss_mib=rss / 2**20,
        )
        for transport in scenario.transports()
    ]


def _result(
    contender: str,
    scenario: Scenario,
    transport: str,
    reports: list[dict[str, Any]],
    ready: list[list[str]],
    **server: float,
) -> Result:
    """One transport's numbers: its load processes' reports added up, beside the server's."""
    viewers, rate = scenario.viewers, scenario.rate
    histogram: dict[int, int] = {}
    late: dict[int, int] = {}
    for r in reports:
        for k, v in r["histogram"].items():
            histogram[int(k)] = histogram.get(int(k), 0) + v
        for k, v in r["late_histogram"].items():
            late[int(k)] = late.get(int(k), 0) + v
    window = max(r["seconds"] for r in reports)
    events = sum(r["events"] for r in reports)
    kinds: dict[str, list[float]] = {}
    for r in reports:
        for name, (count, size) in r["kinds"].items():
            total = kinds.setdefault(name, [0.0, 0.0])
            total[0] += count / window / viewers
            total[1] += size / window / viewers
    by_kind: dict[str, dict[int, int]] = {}
    for r in reports:
        for name, h in r["kind_histograms"].items():
            merged = by_kind.setdefault(name, {})
            for k, v in h.items():
                merged[int(k)] = merged.get(int(k), 0) + v
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
        connect_seconds=max(float(r[1]) for r in ready),
        failed=sum(int(r[2]) for r in ready),
        dropped=sum(r["dropped"] for r in reports),
        load_cpu=max(r["cpu_percent"] for r in reports),
        scenario=scenario.name,
        bytes_per_viewer_s=sum(r["bytes"] for r in reports) / window / viewers,
        kinds=dict(sorted(kinds.items())),
        kind_latency={
            name: [percentile(h, 0.5), percentile(h, 0.99)] for name, h in sorted(by_kind.items())
        },
        transport=transport,
        **server,
    )


def median_of(results: list[Result]) -> Result:
    """One row for several rounds of a contender: the median of every number."""
    values: dict[str, Any] = {}
    for name, first in results[0].__dict__.items():
        column = [getattr(x, name) for x in results]
        if isinstance(first, int | float):
            values[name] = statistics.median(column)
        elif isinstance(first, dict):
            values[name] = {
                k: [statistics.median(c[k][i] for c in column if k in c) for i in range(2)]
                for k in first
            }
        else:
            values[name] = first
    return Result(**values)


def table(results: list[Result]) -> str:
    lines = []
    for group in dict.fromkeys(x.group for x in results):
        measured = [x for x in results if x.group == group]
        rows = [
            median_of([x for x in measured if (x.contender, x.transport) == row])
            for row in dict.fromkeys((x.contender, x.transport) for x in measured)
        ]
        rounds = len(measured) // len(rows)
        kind = Scenario.parse(group, 0).kind
        if kind == "market":
            lines.append(market_table(rows, rounds))
        elif kind == "mixed":
            lines.append(mixed_table(rows, rounds))
        else:
            lines.append(fanout_table(rows, rounds))
    return "\n".join(lines)


def _rounds(rounds: int) -> str:
    return f", median of {rounds} rounds" if rounds > 1 else ""


def fanout_table(rows: list[Result], rounds: int) -> str:
    n, r = rows[0].viewers, rows[0].rate
    floor = next((x for x in rows if x.contender in ("floor", "wsfloor")), None)
    who = "WebSocket clients" if rows[0].transport == "ws" else "viewers"
    lines = [
        f"\n### N={n} {who}, R={r} updates/s (expected {n * r:,} events/s){_rounds(rounds)}\n",
        "| contender | delivered ev/s | vs floor | p50 ms | p90 ms | p99 ms | max ms "
        "| p99 2nd half ms | server's own p99 ms | server CPU % | kernel % of it "
        "| CPU µs/event | KB/viewer/s "
        "| RSS/viewer KiB | connect s | not connected | dropped | load CPU % |",
        "|---|" + "---:|" * 17,
    ]
    for x in rows:
        ratio = f"{x.delivered / floor.delivered:.2f}x" if floor and floor.delivered else "—"
        lines.append(
            f"| {x.contender} | {x.delivered:,.0f} | {ratio} | {x.p50:.1f} | {x.p90:.1f} "
            f"| {x.p99:.1f} | {x.max:.0f} | {x.p99_late:.1f} | {_bound(x.server_p99_ms)} "
            f"| {x.server_cpu:.0f} | {100 * x.kernel_share:.0f} "
            f"| {x.cpu_per_event_us:.1f} | {x.bytes_per_viewer_s / 1000:.1f} "
            f"| {x.rss_per_viewer_kib:.1f} | {x.connect_seconds:.1f} "
            f"| {x.failed} | {x.dropped} | {x.load_cpu:.0f} |"
        )
    return "\n".join(lines)


def _bound(ms: float) -> str:
    """A latency known only as a histogram bucket's upper bound."""
    return "—" if ms != ms else f"≤ {ms:g}"


def mixed_table(rows: list[Result], rounds: int) -> str:
    n, r = rows[0].viewers, rows[0].rate
    total = sum(x.delivered for x in rows)
    lines = [
        f"\n### Mixed: N={n} WebSocket clients and N={n} SSE viewers on one process, "
        f"R={r} updates/s (expected {n * r:,} events/s per transport){_rounds(rounds)}\n",
        "| transport | delivered ev/s | of expected | p50 ms | p90 ms | p99 ms | max ms "
        "| p99 2nd half ms | server's own p99 ms (both) | server CPU % (both) "
        "| CPU µs/event (both) | KB/viewer/s "
        "| RSS/viewer KiB (both) | connect s | not connected | dropped | load CPU % |",
        "|---|" + "---:|" * 16,
    ]
    for x in rows:
        per_event = x.server_cpu / 100 / total * 1e6 if total else float("nan")
        lines.append(
            f"| {x.contender} {x.transport} | {x.delivered:,.0f} "
            f"| {x.delivered / x.expected:.3f} | {x.p50:.1f} | {x.p90:.1f} | {x.p99:.1f} "
            f"| {x.max:.0f} | {x.p99_late:.1f} | {_bound(x.server_p99_ms)} "
            f"| {x.server_cpu:.0f} | {per_event:.1f} "
            f"| {x.bytes_per_viewer_s / 1000:.1f} | {x.rss_per_viewer_kib:.1f} "
            f"| {x.connect_seconds:.1f} | {x.failed} | {x.dropped} | {x.load_cpu:.0f} |"
        )
    return "\n".join(lines)


def market_table(rows: list[Result], rounds: int) -> str:
    n = rows[0].viewers
    lines = [
        f"\n### Market page: N={n} viewers of {','.join(MARKET_TOPICS)}, "
        f"{rows[0].rate} trades/s{_rounds(rounds)}\n",
        "| contender | delivered ev/s | ev/s per viewer | p50 ms | p90 ms | p99 ms | max ms "
        "| p99 2nd half ms | server CPU % | CPU % per viewer | CPU µs/event "
        "| KB/viewer/s | RSS/viewer KiB | connect s | not connected | dropped | load CPU % |",
        "|---|" + "---:|" * 16,
    ]
    for x in rows:
        lines.append(
            f"| {x.contender} | {x.delivered:,.0f} | {x.delivered / n:.1f} | {x.p50:.1f} "
            f"| {x.p90:.1f} | {x.p99:.1f} | {x.max:.0f} | {x.p99_late:.1f} "
            f"| {x.server_cpu:.0f} | {x.server_cpu / n:.3f} | {x.cpu_per_event_us:.1f} "
            f"| {x.bytes_per_viewer_s / 1000:.1f} | {x.rss_per_viewer_kib:.1f} "
            f"| {x.connect_seconds:.1f} | {x.failed} | {x.dropped} | {x.load_cpu:.0f} |"
        )
    for x in rows:
        total = sum(size for _, size in x.kinds.values()) or 1.0
        lines += [
            f"\nWhat one {x.contender} viewer receives, per kind of event:\n",
            "| event | events/s | KB/s | KB per event | share of bytes | p50 ms | p99 ms |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, (count, size) in sorted(x.kinds.items(), key=lambda k: -k[1][1]):
            per_event = f"{size / count / 1000:.1f}" if count else "—"
            p50, p99 = x.kind_latency.get(name, [float("nan")] * 2)
            lines.append(
                f"| {name} | {count:.2f} | {size / 1000:.1f} | {per_event} "
                f"| {100 * size / total:.0f} % | {p50:.1f} | {p99:.1f} |"
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
        help="NxR (viewers x updates a second, fan-out), wsNxR (the same with WebSocket "
        "clients), marketN (N market-page viewers) or mixedN[xR] (N of each transport at "
        "once); default: all",
    )
    parser.add_argument(
        "--contenders",
        nargs="*",
        default=list(CONTENDERS),
        help="each scenario runs those of these that serve it: the floor and common SSE "
        "fan-out, wsfloor WebSocket fan-out, pricestream all (pricestream-asgi is pricestream "
        "with --no-direct-writes)",
    )
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
    for name in args.scenarios:
        scenario = Scenario.parse(name, args.symbols)
        contenders = [c for c in args.contenders if c in scenario.contenders()]
        # Each round starts with the next contender, so a machine that drifts during a round
        # does not always favour the same one; the tables show medians over the rounds.
        rounds = [contenders[i:] + contenders[:i] for i in range(args.repeat)]
        for contender in (c for order in rounds for c in order):
            measured = measure(contender, scenario, args.seconds, others, args.profile)
            for result in measured:
                print(
                    f"{contender:12} {result.transport:3} {name:>11}: "
                    f"{result.delivered:10,.0f} ev/s p99 {result.p99:8.1f} ms  "
                    f"cpu {result.server_cpu:4.0f}%  "
                    f"{result.bytes_per_viewer_s / 1000:7.1f} KB/viewer/s  "
                    f"load cpu {result.load_cpu:4.0f}%",
                    file=sys.stderr,
                    flush=True,
                )
            results += measured
            # Written after every measurement, so a run cut short keeps what it measured.
            saved.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    print(
        f"Fan-out: K={args.symbols} symbols per viewer; {args.seconds:g} s window, "
        f"{os.cpu_count()} CPUs; server on CPU 0, feed and load on the rest."
    )
    print(table(results))


if __name__ == "__main__":
    main()
