"""Parse micro-benchmark: the pre-msgspec parser against `app.market.parse`, message by message.

    python -m bench.parse

Both parse the same combined-stream messages, a trade and a 24 h ticker as the demo exchange
sends them (Binance's shapes), as `str` the way websockets hands over text frames. Each timing is
the best of several rounds of many calls, in µs per message, so a busy machine inflates it less;
the ratio is old over new. Results go to stdout as Markdown.
"""

from __future__ import annotations

import argparse
import functools
import timeit
from collections.abc import Callable

from app.market import Message
from app.market import parse as new_parse
from bench.old_parse import Frame
from bench.old_parse import parse as old_parse

MESSAGES = {
    "trade": (
        '{"stream":"btcusdt@trade","data":{"e":"trade","E":1795773075123,"s":"BTCUSDT",'
        '"t":920262926,"p":"93487.69000000","q":"0.00394000","T":1795773075122,"m":true,'
        '"M":true}}'
    ),
    "ticker": (
        '{"stream":"btcusdt@ticker","data":{"e":"24hrTicker","E":1795773075123,"s":"BTCUSDT",'
        '"p":"-2842.05000000","P":"-2.950","w":"93512.00788623","x":"96329.74000000",'
        '"c":"93487.69000000","Q":"0.00394000","b":"93487.68000000","B":"0.01000000",'
        '"a":"93487.69000000","A":"0.00300000","o":"96329.74000000","h":"97485.70000000",'
        '"l":"92389.87000000","v":"45.33175000","q":"4239062.96349670","O":1795686675123,'
        '"C":1795773075123,"F":920096753,"L":920262926,"n":166174}}'
    ),
}


def best_us(call: Callable[[], object], number: int, rounds: int) -> float:
    """The fastest round's time per call, in µs."""
    return min(timeit.repeat(call, number=number, repeat=rounds)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--number", type=int, default=20_000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print("| message | bytes | json + hand checks µs | msgspec µs | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name, raw in MESSAGES.items():
        # Both must agree that the message is good before their speed means anything.
        assert isinstance(old_parse(raw), Frame)
        assert isinstance(new_parse(raw), Message)
        old = best_us(functools.partial(old_parse, raw), args.number, args.rounds)
        new = best_us(functools.partial(new_parse, raw), args.number, args.rounds)
        print(f"| {name} | {len(raw)} | {old:.2f} | {new:.2f} | {old / new:.1f}x |")


if __name__ == "__main__":
    main()
