"""Who may write: the owner, known by `--owner-token`, and nobody else.

Programs send `Authorization: Bearer <token>`; pages sign in once and keep a session cookie
(HttpOnly, SameSite=Strict) that holds an HMAC of the token, never the token itself, so changing
the token signs every page out. Comparisons are constant-time. Without a token, the owner's
routes answer loopback clients only (the address uvicorn reports: behind a trusted proxy, the
forwarded one) and tell anyone else how to set a token. A form or fetch that rides on the cookie
must come from our own origin (the Origin header), so another site cannot make the owner's
browser write; a Bearer request carries its proof itself.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

COOKIE = "ps_owner"
_UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


class Denied(Exception):
    """Not the owner; the message is a sentence for the 401 (or 403) it becomes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"pricestream owner session", hashlib.sha256).hexdigest()


def is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_owner(conn: HTTPConnection, token: str) -> bool:
    """Is this request the owner's (token, cookie, or loopback while no token is set)?"""
    try:
        check_owner(conn, token)
    except Denied:
        return False
    return True


def check_owner(conn: HTTPConnection, token: str) -> str:
    """How the request proves it is the owner ("bearer", "cookie" or "loopback"), or Denied."""
    if not token:
        if is_loopback(conn.client.host if conn.client else None):
            return "loopback"
        raise Denied(
            401,
            "alerts and the portfolio are the owner's: this server has no owner token, so they "
            "answer only on the server itself; start it with --owner-token "
            "(PRICESTREAM_OWNER_TOKEN) to use them from elsewhere",
        )
    header = conn.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        if hmac.compare_digest(header[7:].strip().encode(), token.encode()):
            return "bearer"
        raise Denied(401, "wrong owner token")
    cookie = conn.cookies.get(COOKIE, "")
    if cookie and hmac.compare_digest(cookie.encode(), session_value(token).encode()):
        return "cookie"
    raise Denied(
        401, "this needs the owner: send Authorization: Bearer <token>, or sign in at /signin"
    )


def check_same_origin(conn: HTTPConnection, method: str, proof: str) -> None:
    """A write riding on ambient credentials (cookie, loopback) must come from our own pages."""
    if method not in _UNSAFE or proof == "bearer":
        return
    origin = conn.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != conn.headers.get("host"):
        raise Denied(403, f"a write from another site ({origin[:80]}) is not accepted")
