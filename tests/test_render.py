"""Filters and fragments render the expected HTML."""

from __future__ import annotations

import pytest

from app.market import Quote
from app.render import (
    Renderer,
    format_clock,
    format_price,
    format_signed,
    format_volume,
    sse_event,
)
from tests.conftest import parse_html, root


@pytest.mark.parametrize(
    ("value", "decimals", "shown"),
    [
        ("93512.01000000", None, "93,512.01"),
        ("93512.00000000", None, "93,512.00"),
        ("0.00002417", None, "0.00002417"),
        ("25.35190000", None, "25.3519"),
        ("1234567.10000000", 2, "1,234,567.10"),
        ("0.38215000", 5, "0.38215"),
        ("100.00000000", 0, "100"),
        ("-412.50000000", 2, "\u2212412.50"),
        ("000.5", None, "0.50"),
        # Digits a float would get wrong stay exactly as sent.
        ("0.10000000000000001", None, "0.10000000000000001"),
        ("9007199254740993.5", None, "9,007,199,254,740,993.50"),
        (None, None, "—"),
    ],
)
def test_format_price(value: str | None, decimals: int | None, shown: str) -> None:
    assert format_price(value, decimals) == shown


def test_format_signed_volume_clock() -> None:
    assert format_signed("412.5", 2) == "+412.50"
    assert format_signed("-0.44") == "\u22120.44"
    assert format_signed("0.00") == "0.00"
    assert format_volume("1710222333.12345678") == "1.71B"
    assert format_volume("999.999") == "1000.00"
    assert format_volume("12345") == "12.35K"
    assert format_clock(1735689600123) == "00:00:00 UTC"


QUOTE = Quote(
    "BTCUSDT",
    price="93512.01000000",
    event_time=1735689600123,
    trade_id=4,
    direction="up",
    changed=True,
    open="93924.51000000",
    high="94811.00000000",
    low="92870.10000000",
    volume="1",
    quote_volume="1710222333.12345678",
)


def render(quote: Quote, **context: object) -> str:
    values = {
        "stale": False,
        "demo": False,
        "decimals": 2,
        "quote_asset": "USDT",
        "link": "/?symbols=BTCUSDT",
        "link_target": None,
    }
    values.update(context)
    return Renderer().fragment("quote", quote=quote, **values)


def test_fragment_carries_the_contract_attributes_on_one_line() -> None:
    html = render(QUOTE)
    assert "\n" not in html
    article = root(html)
    assert article.tag == "article"
    assert article.attrs["data-symbol"] == "BTCUSDT"
    assert article.attrs["data-price"] == "93512.01000000"
    assert article.attrs["data-event-time"] == "1735689600123"
    assert article.classes == {"ps-quote", "up", "flash-up"}
    price = next(e for e in parse_html(html) if "ps-value" in e.classes)
    assert price.text == "93,512.01"
    change = next(e for e in parse_html(html) if "ps-change" in e.classes)
    assert change.classes == {"ps-stat", "ps-change", "ps-neg"}
    assert change.text == "24h\u2212412.50 (\u22120.44%)"


def test_stale_fragment_greys_out_and_says_as_of_when() -> None:
    html = render(QUOTE, stale=True)
    assert "stale" in root(html).classes
    badge = next(e for e in parse_html(html) if "ps-asof" in e.classes)
    assert badge.text == "as of 00:00:00 UTC"


def test_loading_and_no_data_states() -> None:
    loading = render(Quote("ETHUSDT"))
    assert root(loading).classes == {"ps-quote", "loading"}
    assert "data-price" not in root(loading).attrs
    assert [e.text for e in parse_html(loading) if "ps-loading" in e.classes] == ["Loading…"]
    failed = render(Quote("ETHUSDT"), stale=True)
    assert [e.text for e in parse_html(failed) if "ps-error" in e.classes] == ["No data yet"]


def test_demo_badge_only_in_demo() -> None:
    assert [e.text for e in parse_html(render(QUOTE, demo=True)) if "ps-demo" in e.classes] == [
        "DEMO"
    ]
    assert not [e for e in parse_html(render(QUOTE)) if "ps-demo" in e.classes]


def test_fragment_escapes_what_it_shows() -> None:
    html = render(Quote("<B&>"), quote_asset="<U>")
    assert "<B&>" not in html and "<U>" not in html
    assert root(html).attrs["data-symbol"] == "<B&>"


def test_sse_event_encoding() -> None:
    assert (
        sse_event("price-BTCUSDT", "<p>x</p>") == b"event: price-BTCUSDT\r\ndata: <p>x</p>\r\n\r\n"
    )
    with pytest.raises(AssertionError):
        sse_event("x", "two\nlines")
