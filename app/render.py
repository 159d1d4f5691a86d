"""HTML rendering: the jinja2 environment, the display filters, and fragment-to-SSE encoding.

Synchronous and pure: it knows nothing of asyncio or HTTP. Pages and live updates come from the
same fragment templates, so the first paint and every update look the same. Number formatting
works on Binance's decimal strings (or `Decimal`), never on floats, so no digit is ever invented.
"""

from __future__ import annotations

import time
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import jinja2
from sse_starlette import ServerSentEvent

_PACKAGE = Path(__file__).resolve().parent
_CENT = Decimal("0.01")
MINUS = "\u2212"  # a real minus sign: as wide as "+", so columns of prices line up


def resource_dir(name: str) -> Path:
    """Where `templates` or `static` is: inside the package in a wheel, beside it in a checkout."""
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise RuntimeError(f"cannot find the {name!r} folder beside or inside {_PACKAGE}")


def group_thousands(integer: str) -> str:
    out = []
    for i, ch in enumerate(reversed(integer)):
        if i and i % 3 == 0:
            out.append(",")
        out.append(ch)
    return "".join(reversed(out))


def format_price(value: str | None, decimals: int | None = None) -> str:
    """'93512.01000000' -> '93,512.01'; trailing zeros go, but at least two decimals stay.

    With `decimals` (from the symbol's tick size) the text is cut or padded to that many places;
    cutting only drops zeros, because Binance prices are multiples of the tick.
    """
    if value is None or value == "":
        return "—"
    sign = ""
    if value[0] in "+-":
        sign, value = (MINUS if value[0] == "-" else ""), value[1:]
    integer, _, fraction = value.partition(".")
    if decimals is None:
        fraction = fraction.rstrip("0")
        fraction = fraction.ljust(2, "0")
    else:
        fraction = fraction[:decimals].ljust(decimals, "0")
    text = group_thousands(integer.lstrip("0") or "0")
    return f"{sign}{text}.{fraction}" if fraction else sign + text


def format_signed(value: str | None, decimals: int | None = None) -> str:
    """A change with its sign always shown: '+412.5', '-0.44' (shown with a real minus sign)."""
    if value is None:
        return "—"
    if value.startswith("-"):
        return format_price(value, decimals)
    zero = not value.strip("0.")
    return ("" if zero else "+") + format_price(value, decimals)


def format_volume(value: str | None) -> str:
    """Large quantities in short form: '1710222333.12' -> '1.71B'."""
    if value is None:
        return "—"
    try:
        number = Decimal(value)
    except InvalidOperation:
        return "—"
    for limit, suffix in (
        (Decimal(10) ** 12, "T"),
        (Decimal(10) ** 9, "B"),
        (Decimal(10) ** 6, "M"),
        (Decimal(10) ** 3, "K"),
    ):
        if number >= limit:
            return f"{(number / limit).quantize(_CENT, ROUND_HALF_UP)}{suffix}"
    return str(number.quantize(_CENT, ROUND_HALF_UP))


def format_clock(ms: int | None) -> str:
    """Binance milliseconds as a UTC wall-clock time, 'HH:MM:SS UTC'."""
    if ms is None:
        return "—"
    return time.strftime("%H:%M:%S UTC", time.gmtime(ms / 1000))


def format_quantity(value: str | None) -> str:
    """An amount as Binance sent it, without the trailing zeros: '0.00150000' -> '0.0015'."""
    if value is None:
        return "—"
    integer, _, fraction = value.partition(".")
    fraction = fraction.rstrip("0")
    text = group_thousands(integer.lstrip("0") or "0")
    return f"{text}.{fraction}" if fraction else text


def format_hms(ms: int | None) -> str:
    """Binance milliseconds as 'HH:MM:SS' (UTC), for rows where a column header says UTC."""
    if ms is None:
        return "—"
    return time.strftime("%H:%M:%S", time.gmtime(ms / 1000))


def make_environment(templates: Path | None = None) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates or resource_dir("templates")),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["price"] = format_price
    env.filters["signed"] = format_signed
    env.filters["volume"] = format_volume
    env.filters["clock"] = format_clock
    env.filters["qty"] = format_quantity
    env.filters["hms"] = format_hms
    return env


class Renderer:
    """Renders fragments to one-line HTML and encodes them as SSE events."""

    def __init__(self, env: jinja2.Environment | None = None) -> None:
        self.env = env or make_environment()

    def fragment(self, name: str, **context: Any) -> str:
        """Render `fragments/<name>.html` as one line (the contract's SSE data is one line)."""
        html = self.env.get_template(f"fragments/{name}.html").render(**context)
        return " ".join(line.strip() for line in html.splitlines() if line.strip())

    def page(self, name: str, **context: Any) -> str:
        return self.env.get_template(f"pages/{name}.html").render(**context)


def sse_event(event: str, data: str) -> bytes:
    """One SSE event, encoded once (by sse-starlette) and sent as-is to every viewer."""
    assert "\n" not in data and "\r" not in data and "\n" not in event
    return ServerSentEvent(data=data, event=event).encode()
