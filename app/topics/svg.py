"""Chart geometry: candles, axes and sparklines laid out as SVG coordinates, on the server.

Pure functions from price strings to numbers for drawing. Floats are used for positions only;
every number a person reads (axis labels, the last price) is formatted from decimal text by
`app.render`, and the candles' data attributes keep Binance's strings. Server-side SVG needs no
chart library, no script and no build step, passes our Content-Security-Policy (no inline style),
and draws the same in every viewer: the fragment is the chart.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from decimal import Decimal

from app.market import Candle
from app.render import format_price

# The chart's viewBox; the browser scales it to the panel's width.
WIDTH, HEIGHT = 720.0, 330.0
LEFT, RIGHT = 6.0, 72.0  # room on the right for the price axis
PRICE_TOP, PRICE_BOTTOM = 14.0, 236.0
VOLUME_TOP, VOLUME_BOTTOM = 250.0, 306.0
TIME_LABEL_Y = 322.0
PRICE_TICKS = 6  # at most; 1-2-5 steps give 3 to 6
# A price label this close (viewBox units) to the last-price marker would hide under it.
LABEL_CLEARANCE = 13.0
TIME_TICKS = 6
# The sparkline's viewBox.
SPARK_WIDTH, SPARK_HEIGHT = 100.0, 28.0


def _n(value: float) -> str:
    """A coordinate, short: one decimal, no trailing '.0'."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True, slots=True)
class CandleShape:
    candle: Candle
    direction: str  # "up" (close >= open) or "down"
    body: str  # SVG path: wick and body in one
    volume: str  # SVG path of the volume bar


@dataclass(frozen=True, slots=True)
class Layout:
    candles: list[CandleShape]
    price_ticks: list[tuple[str, str]]  # (y, label)
    time_ticks: list[tuple[str, str]]  # (x, label)
    last_y: str
    last_label: str
    last_direction: str
    grid_right: str


def chart(candles: list[Candle], slots: int, interval_ms: int, decimals: int | None) -> Layout:
    """Lay out `candles` (oldest first) in `slots` columns, the newest at the right edge."""
    assert candles
    lows = [float(c.low) for c in candles]
    highs = [float(c.high) for c in candles]
    lo, hi = min(lows), max(highs)
    if hi <= lo:
        hi, lo = hi + abs(hi) * 0.001 + 1e-9, lo - abs(lo) * 0.001 - 1e-9
    pad = (hi - lo) * 0.06
    lo, hi = lo - pad, hi + pad
    plot = WIDTH - LEFT - RIGHT

    def y(price: float) -> float:
        return PRICE_TOP + (hi - price) / (hi - lo) * (PRICE_BOTTOM - PRICE_TOP)

    slot = plot / slots
    body_w = max(1.0, slot * 0.68)
    first_slot = slots - len(candles)
    volumes = [float(c.volume) for c in candles]
    top_volume = max(volumes) or 1.0
    shapes = []
    for i, (c, v) in enumerate(zip(candles, volumes, strict=True)):
        centre = LEFT + slot * (first_slot + i + 0.5)
        o, cl = float(c.open), float(c.close)
        direction = "up" if cl >= o else "down"
        top, bottom = y(max(o, cl)), y(min(o, cl))
        height = max(bottom - top, 0.8)
        x0 = centre - body_w / 2
        body = (
            f"M{_n(centre)} {_n(y(float(c.high)))}V{_n(top)}"
            f"M{_n(x0)} {_n(top)}h{_n(body_w)}v{_n(height)}h-{_n(body_w)}z"
            f"M{_n(centre)} {_n(top + height)}V{_n(y(float(c.low)))}"
        )
        bar = max((VOLUME_BOTTOM - VOLUME_TOP) * v / top_volume, 0.5)
        volume = (
            f"M{_n(x0)} {_n(VOLUME_BOTTOM - bar)}h{_n(body_w)}V{_n(VOLUME_BOTTOM)}h-{_n(body_w)}z"
        )
        shapes.append(CandleShape(c, direction, body, volume))
    last = candles[-1]
    last_y = y(float(last.close))
    price_ticks = [
        (_n(y(value)), format_price(text, decimals))
        for value, text in _ticks(lo, hi, decimals)
        if abs(y(value) - last_y) > LABEL_CLEARANCE
    ]
    every = max(1, math.ceil(slots / TIME_TICKS))
    time_ticks = [
        (_n(LEFT + slot * (first_slot + i + 0.5)), _time_label(c.open_time, interval_ms))
        for i, c in enumerate(candles)
        if (c.open_time // interval_ms) % every == 0
    ]
    return Layout(
        candles=shapes,
        price_ticks=price_ticks,
        time_ticks=time_ticks,
        last_y=_n(last_y),
        last_label=format_price(last.close, decimals),
        last_direction="up" if float(last.close) >= float(last.open) else "down",
        grid_right=_n(WIDTH - RIGHT),
    )


def _ticks(lo: float, hi: float, decimals: int | None) -> list[tuple[float, str]]:
    """Round values between `lo` and `hi` for the price axis: steps of 1, 2 or 5 x 10^k, and
    never finer than the symbol's tick size (labels would repeat)."""
    raw = (hi - lo) / PRICE_TICKS
    if decimals is not None:
        raw = max(raw, 10.0**-decimals)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    places = max(0, -math.floor(math.log10(step)))
    values = []
    k = math.ceil(lo / step)
    while k * step <= hi:
        value = k * step
        # Fixed-point text: str() of a small Decimal would say '6.1E-7'.
        values.append((value, format(Decimal(f"{value:.{places}f}"), "f")))
        k += 1
    return values


def _time_label(open_time: int, interval_ms: int) -> str:
    moment = time.gmtime(open_time / 1000)
    if interval_ms >= 86_400_000:
        return time.strftime("%d %b", moment)
    if moment.tm_hour == 0 and moment.tm_min == 0:
        return time.strftime("%d %b", moment)
    return time.strftime("%H:%M", moment)


def sparkline(closes: list[str]) -> str:
    """The `points` of an SVG polyline through `closes`, oldest at the left ('' if < 2)."""
    if len(closes) < 2:
        return ""
    values = [float(c) for c in closes]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    step = SPARK_WIDTH / (len(values) - 1)
    return " ".join(
        f"{_n(i * step)},{_n(1 + (hi - v) / span * (SPARK_HEIGHT - 2))}"
        for i, v in enumerate(values)
    )
