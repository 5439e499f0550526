"""Abuse limits shared by the console, the partner form and the API: CSRF tokens for pages
served before a login, and sliding-window rate limits per key (client address, token)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque

from careops.errors import Forbidden


class CsrfTokens:
    """``nonce.issued.signature`` in the page, the nonce in a cookie: both must come back."""

    def __init__(self, secret: str, max_age_seconds: float, purpose: str) -> None:
        self._key = hashlib.sha256(f"careops-{purpose}-csrf:{secret}".encode()).digest()
        self._max_age = max_age_seconds

    def issue(self) -> tuple[str, str]:
        nonce = secrets.token_urlsafe(18)
        issued = str(int(time.time()))
        return nonce, f"{nonce}.{issued}.{self._sign(nonce, issued)}"

    def verify(self, token: str, cookie_nonce: str | None) -> str:
        """The nonce of a valid token (it doubles as the submission's idempotency key)."""
        nonce, _, rest = token.partition(".")
        issued, _, signature = rest.partition(".")
        if not (nonce and issued.isdigit() and cookie_nonce and hmac.compare_digest(nonce, cookie_nonce)):
            raise Forbidden("the form has expired or was not sent from this page; please reload it")
        if not hmac.compare_digest(signature, self._sign(nonce, issued)):
            raise Forbidden("the form has expired or was not sent from this page; please reload it")
        if time.time() - int(issued) > self._max_age:
            raise Forbidden("the form has expired; please reload it (your entries are shown again)")
        return nonce

    def _sign(self, nonce: str, issued: str) -> str:
        digest = hmac.new(self._key, f"{nonce}.{issued}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class RateLimiter:
    """At most ``limit`` events per ``window`` seconds per key (per process)."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self._limit = limit
        self._window = window
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            events = self._events.setdefault(key, deque())
            while events and now - events[0] > self._window:
                events.popleft()
            if len(events) >= self._limit:
                return False
            events.append(now)
            if len(self._events) > 10_000:  # forget idle clients
                self._events = {k: v for k, v in self._events.items() if v and now - v[-1] < self._window}
            return True
