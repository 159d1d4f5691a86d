"""The benchmark's upstream: the demo exchange, publishing what a scenario asks for.

Two modes, each stamping every message that has a Binance event time `E` with its real send time,
so a viewer's latency is its arrival time minus the fragment's `data-event-time`:

- `fanout`: R trades a second in total, spread over K symbols, and nothing else.
- `market`: one busy symbol (the first of the list, BTCUSDT) as its market page sees it: R trades
  a second (each also an aggregate trade), a 20-level book snapshot every `BOOK_INTERVAL`, the
  forming 1m candle every `KLINE_INTERVAL` (and its close when the minute ends) and the 24 h
  ticker every `TICKER_INTERVAL`, Binance's own cadences.

Run as `python -m bench.feed --mode fanout --rate R --symbols K`; it prints its WebSocket URL and
REST URL on one line, then publishes until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from app.demo import DemoExchange
from app.simulation import MARKET

# Publishing in 10 ms ticks keeps the rate exact without a timer per message.
TICK = 0.01
# Binance's cadences: `@depth20@100ms`, `@kline_<interval>` every 2 s, `@ticker` every second.
BOOK_INTERVAL = 0.1
KLINE_INTERVAL = 2.0
TICKER_INTERVAL = 1.0
# The market page's chart interval.
CHART = "1m"
# Longer than any run: the exchange's own timers stay quiet and the feed alone decides.
NEVER = 3600.0


async def publish(mode: str, rate: float, count: int, port: int) -> None:
    async with DemoExchange(
        port=port,
        trades_per_second=0,
        ticker_interval=NEVER,
        kline_interval=NEVER,
        depth_interval=NEVER,
    ) as ex:
        print(ex.ws_url, ex.rest_url, flush=True)
        symbols = [m[0] for m in MARKET[:count]]
        owed, i = 0.0, 0
        now = time.monotonic()
        next_tick, next_book, next_kline, next_ticker = now, now, now, now
        while True:
            next_tick += TICK
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            owed += rate * TICK
            while owed >= 1:
                owed -= 1
                ex.trade(symbols[i % count])
                i += 1
            if mode != "market":
                continue
            # Each schedule skips rather than bursts if the loop fell behind.
            now = time.monotonic()
            symbol = symbols[0]
            if now >= next_book:
                next_book = max(next_book + BOOK_INTERVAL, now)
                ex.depth(symbol)
            if now >= next_kline:
                next_kline = max(next_kline + KLINE_INTERVAL, now)
                ex.kline(symbol, CHART)
            if now >= next_ticker:
                next_ticker = max(next_ticker + TICKER_INTERVAL, now)
                ex.ticker(symbol)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=["fanout", "market"], default="fanout")
    parser.add_argument("--rate", type=float, required=True, help="trades per second in total")
    parser.add_argument("--symbols", type=int, default=10, help="how many symbols share them")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        asyncio.run(publish(args.mode, args.rate, args.symbols, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
