"""One span and one correlation id per HTTP request, as a plain ASGI middleware.

The correlation id is the caller's ``X-Correlation-Id`` when it is a usable header value, else a
new one; it is bound for the request's log lines and spans, named in every problem answer, and
sent back as ``X-Correlation-Id``. A ``traceparent`` header makes the request's span a child of
the caller's. The span is named after the route's template (``POST /api/v1/referrals``), never the
path as sent, and carries the method, the route and the status only.
"""

from __future__ import annotations

from opentelemetry.trace import SpanKind, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from careops.api.deps import header_problem
from careops.observability import tracing

CORRELATION_HEADER = b"x-correlation-id"
CORRELATION_MAX = 64


class RequestTracing:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent: str | None = None
        trace_parent: str | None = None
        for name, value in scope["headers"]:
            if name == CORRELATION_HEADER:
                sent = value.decode("latin-1")
            elif name == b"traceparent":
                trace_parent = value.decode("latin-1")
        if sent is not None and header_problem(sent, CORRELATION_MAX) is not None:
            sent = None
        method: str = scope["method"]
        with tracing.span(
            method,
            kind=SpanKind.SERVER,
            parent=tracing.parent_from(trace_parent),
            **{"http.request.method": method},
        ) as current:
            correlation_id = tracing.bind_correlation(sent)

            async def send_with_correlation(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [
                        *message.get("headers", []),
                        (CORRELATION_HEADER, correlation_id.encode()),
                    ]
                    status = int(message["status"])
                    current.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        current.set_status(StatusCode.ERROR)
                await send(message)

            try:
                await self.app(scope, receive, send_with_correlation)
            finally:
                route = scope.get("route")
                template = getattr(route, "path", None)
                if template is not None:
                    current.update_name(f"{method} {template}")
                    current.set_attribute("http.route", template)
