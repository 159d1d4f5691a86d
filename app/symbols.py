"""The symbol directory: which symbols exist, from Binance's exchangeInfo, and how to check input.

Fetched at start-up and refreshed; while it cannot be fetched the server still runs and checks
symbols by format only, and says so (`source == "format-only"`). Every symbol a user names goes
through `SymbolDirectory.check` before anything is subscribed, so a URL can never open an
arbitrary upstream subscription.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import msgspec

from app.config import Settings
from app.errors import InputError
from app.rest import TIMEOUT, Rest, RestError

logger = logging.getLogger(__name__)

# Binance symbols are upper-case ASCII letters and digits ("1000SATSUSDT"), and since 2025-12 may
# hold non-ASCII letters too. The longest listed is under 20.
MAX_SYMBOL_LENGTH = 20


class SymbolError(InputError):
    """User input that names no usable symbol; the message is a sentence fit for a 400."""


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    symbol: str
    status: str
    base: str
    quote: str
    decimals: int | None  # price decimals from the tick size; None when unknown


def _decimals(tick: str) -> int | None:
    """'0.01000000' -> 2; '1.00000000' -> 0."""
    whole, _, fraction = tick.partition(".")
    fraction = fraction.rstrip("0")
    return len(fraction) if whole.strip("0") == "" or fraction else 0


def _well_formed(symbol: str) -> bool:
    return 2 <= len(symbol) <= MAX_SYMBOL_LENGTH and all(
        ("A" <= ch <= "Z") or ("0" <= ch <= "9") or (not ch.isascii() and ch.isalpha())
        for ch in symbol
    )


def describe(text: str) -> str:
    """Quote user input in an error message, shortened and with control characters shown."""
    shown = text if len(text) <= 40 else text[:40] + "…"
    return repr(shown)


class SymbolDirectory:
    """Known symbols, refreshed from `{rest}/api/v3/exchangeInfo`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.known: dict[str, SymbolInfo] = {}
        self.loaded_at: float | None = None  # monotonic time of the last good fetch
        self.last_error: str | None = None

    @property
    def source(self) -> str:
        return "exchangeInfo" if self.known else "format-only"

    def info(self, symbol: str) -> SymbolInfo | None:
        return self.known.get(symbol)

    def check(self, text: str) -> str:
        """Normalise one user-given symbol, or raise SymbolError with a sentence."""
        symbol = text.strip().upper()
        if not symbol:
            raise SymbolError("empty symbol: name one, like BTCUSDT")
        if not _well_formed(symbol):
            raise SymbolError(
                f"malformed symbol {describe(text)}: use letters and digits only, "
                f"at most {MAX_SYMBOL_LENGTH} characters, like BTCUSDT"
            )
        if self.known and symbol not in self.known:
            raise SymbolError(f"unknown symbol {describe(symbol)}: Binance does not list it")
        return symbol

    def check_list(self, text: str | None, *, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """A comma-separated list of symbols, checked, de-duplicated in order, within the limit."""
        if text is None or not text.strip():
            if default:
                return default
            raise SymbolError("no symbols given: ask for some, like ?symbols=BTCUSDT,ETHUSDT")
        parts = text.split(",")
        limit = self.settings.max_symbols
        if len(parts) > limit:
            raise SymbolError(f"too many symbols ({len(parts)}): at most {limit} per page")
        symbols = tuple(dict.fromkeys(self.check(part) for part in parts if part.strip()))
        if not symbols:
            raise SymbolError("no symbols given: ask for some, like ?symbols=BTCUSDT,ETHUSDT")
        return symbols

    async def refresh(self, rest: Rest, time_limit: float = TIMEOUT) -> bool:
        """Fetch exchangeInfo once (within `time_limit` s); keep the old list (or none), and log
        and remember why, if that fails."""
        url = self.settings.rest.rstrip("/") + "/api/v3/exchangeInfo"
        try:
            body = await rest.get("/api/v3/exchangeInfo", time_limit=time_limit)
            known = self._parse(msgspec.json.decode(body))
        except RestError as exc:
            self.last_error = str(exc)
        except (msgspec.DecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.last_error = f"unusable exchangeInfo: {type(exc).__name__}: {exc}"
        else:
            self.known, self.loaded_at, self.last_error = known, time.monotonic(), None
            logger.info("symbol list: %d symbols from %s", len(known), url)
            return True
        logger.warning(
            "symbol list unavailable from %s (%s); %s; trying again in %g s",
            url,
            self.last_error,
            "keeping the last list" if self.known else "checking symbols by format only",
            self.settings.symbols_retry,
        )
        return False

    async def run(self, rest: Rest) -> None:
        """Refresh forever (the first fetch is the caller's): at `symbols_refresh` intervals,
        sooner while fetches fail."""
        ok = self.last_error is None
        while True:
            settings = self.settings
            await asyncio.sleep(settings.symbols_refresh if ok else settings.symbols_retry)
            ok = await self.refresh(rest)

    @staticmethod
    def _parse(document: Any) -> dict[str, SymbolInfo]:
        known = {}
        for entry in document["symbols"]:
            tick = next(
                (
                    f.get("tickSize")
                    for f in entry.get("filters", [])
                    if f.get("filterType") == "PRICE_FILTER"
                ),
                None,
            )
            symbol = str(entry["symbol"])
            known[symbol] = SymbolInfo(
                symbol=symbol,
                status=str(entry.get("status", "TRADING")),
                base=str(entry.get("baseAsset", "")),
                quote=str(entry.get("quoteAsset", "")),
                decimals=_decimals(tick) if isinstance(tick, str) else None,
            )
        if not known:
            raise ValueError("exchangeInfo listed no symbols")
        return known
