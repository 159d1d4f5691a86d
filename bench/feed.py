"""The benchmark's upstream: the demo exchange publishing R trades a second over K symbols.

Each trade's Binance event time `E` is its real send time, so a viewer's latency is its arrival
time minus the fragment's `data-event-time`. Run as `python -m bench.feed --rate R --symbols K`;
it prints its WebSocket URL and REST URL on one line, then publishes until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from app.demo import DemoExchange
from app.simulation import MARKET

# Publishing in 10 ms ticks keeps the rate exact without a timer per trade.
TICK = 0.01


async def publish(rate: float, count: int, port: int) -> None:
    async with DemoExchange(port=port, trades_per_second=0, ticker_interval=3600) as ex:
        print(ex.ws_url, ex.rest_url, flush=True)
        symbols = [m[0] for m in MARKET[:count]]
        owed, i = 0.0, 0
        next_tick = time.monotonic()
        while True:
            next_tick += TICK
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            owed += rate * TICK
            while owed >= 1:
                owed -= 1
                ex.trade(symbols[i % count])
                i += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, required=True, help="trades per second in total")
    parser.add_argument("--symbols", type=int, default=10, help="how many symbols share them")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        asyncio.run(publish(args.rate, args.symbols, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
