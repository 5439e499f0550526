"""Security headers on every response, as a plain ASGI middleware (cheap on the hot path).

- ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``, ``X-Frame-Options: DENY``
- ``Content-Security-Policy``: nothing may load and no one may frame an API answer; the OpenAPI
  pages (/docs, /redoc) may load the scripts and styles they need from their CDN.
- ``Cache-Control: no-store`` on /api answers: they can carry patient data.
- ``Strict-Transport-Security`` when the request came over TLS (directly or, with uvicorn's
  proxy headers, through a proxy that said so).

CORS stays closed: no ``Access-Control-Allow-*`` header is ever sent, so browsers refuse
cross-origin calls.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_POLICY = "default-src 'none'; frame-ancestors 'none'"
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https:; "
    "frame-ancestors 'none'"
)
# The partner referral form: its own stylesheet, posts to itself, no script.
FORM_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
# The console: the same, and its own scripts (htmx, served by careops) fetching from careops.
CONSOLE_POLICY = FORM_POLICY.replace(
    "default-src 'none';", "default-src 'none'; script-src 'self'; connect-src 'self';"
)
_COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
_HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
_DOCS_PATHS = ("/docs", "/redoc")


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        extra = [*_COMMON]
        policy = (
            DOCS_POLICY
            if path.startswith(_DOCS_PATHS)
            else FORM_POLICY
            if path.startswith("/refer/")
            else CONSOLE_POLICY
            if path.startswith("/console")
            else API_POLICY
        )
        extra.append((b"content-security-policy", policy.encode()))
        if path.startswith(("/api/", "/refer/", "/fhir/", "/console")):
            extra.append((b"cache-control", b"no-store"))
        if scope.get("scheme") == "https":
            extra.append(_HSTS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
