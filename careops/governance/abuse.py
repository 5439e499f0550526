"""Abuse limits shared by the console, the partner form and the API: CSRF tokens for pages
served before a login, and sliding-window rate limits per key (client address, token)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time

from careops.errors import Forbidden


class Signer:
    """HMAC-SHA256 signatures (base64url) under a key derived from the secret for one purpose, so
    that a value signed for one use is no good for another."""

    def __init__(self, secret: str, purpose: str) -> None:
        self._key = hashlib.sha256(f"{purpose}:{secret}".encode()).digest()

    def sign(self, text: str) -> str:
        digest = hmac.new(self._key, text.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def verify(self, text: str, signature: str) -> bool:
        return hmac.compare_digest(signature, self.sign(text))


class CsrfTokens:
    """``nonce.issued.signature`` in the page, the nonce in a cookie: both must come back."""

    def __init__(self, secret: str, max_age_seconds: float, purpose: str) -> None:
        self._signer = Signer(secret, f"careops-{purpose}-csrf")
        self._max_age = max_age_seconds

    def issue(self) -> tuple[str, str]:
        nonce = secrets.token_urlsafe(18)
        issued = str(int(time.time()))
        return nonce, f"{nonce}.{issued}.{self._signer.sign(f'{nonce}.{issued}')}"

    def verify(self, token: str, cookie_nonce: str | None) -> str:
        """The nonce of a valid token (it doubles as the submission's idempotency key)."""
        nonce, _, rest = token.partition(".")
        issued, _, signature = rest.partition(".")
        if not (nonce and issued.isdigit() and cookie_nonce and hmac.compare_digest(nonce, cookie_nonce)):
            raise Forbidden("the form has expired or was not sent from this page; please reload it")
        if not self._signer.verify(f"{nonce}.{issued}", signature):
            raise Forbidden("the form has expired or was not sent from this page; please reload it")
        if time.time() - int(issued) > self._max_age:
            raise Forbidden("the form has expired; please reload it (your entries are shown again)")
        return nonce


class RateLimiter:
    """At most about ``limit`` events per ``window`` seconds per key (per process), in O(1) memory
    per key: the count of the current window plus the previous one's, weighted by how much of it
    still overlaps the sliding window."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self._limit = limit
        self._window = window
        self._counts: dict[str, tuple[int, int, int]] = {}  # key -> (window number, current, previous)
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = time.monotonic() / self._window
        number, elapsed = int(now), now - int(now)
        with self._lock:
            start, current, previous = self._counts.get(key, (number, 0, 0))
            if start != number:
                current, previous = 0, current if start == number - 1 else 0
            if current + previous * (1 - elapsed) >= self._limit:
                self._counts[key] = (number, current, previous)
                return False
            self._counts[key] = (number, current + 1, previous)
            if len(self._counts) > 10_000:  # forget idle clients
                self._counts = {k: v for k, v in self._counts.items() if v[0] >= number - 1}
            return True

    def retry_after(self) -> int:
        """Seconds a refused caller should wait: the rest of the current window, at least 1."""
        now = time.monotonic() / self._window
        return max(1, int((1 - (now - int(now))) * self._window))
