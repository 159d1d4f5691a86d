"""The one error type for bad input from users: its message is a sentence fit for a 400."""

from __future__ import annotations


class InputError(ValueError):
    """User input we cannot use (a symbol, topic, interval or option); says what and why."""
