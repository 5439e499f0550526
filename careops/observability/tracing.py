"""OpenTelemetry traces and the correlation id that ties a request's logs, answers and spans together.

One trace runs from an HTTP request or an MLLP message through the intake transaction to the
outbox row its event left (``trace_parent``, written by ``record_events``), the dispatcher that
claims the row, and the durable workflow and its steps (spans DBOS makes, on the trace through
``PropagateOtelContext``). Spans go to an OTLP/HTTP collector when ``otlp_traces_endpoint`` is
set; otherwise nothing is recorded and a span costs next to nothing.

Span attributes are ids, codes, channel names and counts, never PHI: names, dates, identifiers
and payloads stay out of them (``tests/e2e/test_phi_canary.py`` scans what a collector receives).
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from careops import __version__

CORRELATION_ATTRIBUTE = "careops.correlation_id"
_propagator = TraceContextTextMapPropagator()
_correlation: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)
tracer = trace.get_tracer("careops", __version__)


def configure_tracing(endpoint: str | None, exporter: SpanExporter | None = None) -> bool:
    """Record spans and send them to ``endpoint`` (OTLP/HTTP), or to ``exporter`` (tests).

    Once a process: a provider already set (by an earlier call) is kept. Says whether spans are
    recorded.
    """
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return True
    if exporter is None:
        if not endpoint:
            return False
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint)
    provider = TracerProvider(resource=Resource.create({"service.name": "careops"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True


def tracing_enabled() -> bool:
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def flush_spans() -> None:
    """Send what the batch processor holds (on the way out of a process)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush()


def bind_correlation(correlation_id: str | None) -> str:
    """Make ``correlation_id`` (or a new one) the current one: every log line and span from here on
    in this context carries it. Returns it."""
    correlation_id = correlation_id or uuid.uuid4().hex
    _correlation.set(correlation_id)
    structlog.contextvars.bind_contextvars(correlation_id=correlation_id)
    trace.get_current_span().set_attribute(CORRELATION_ATTRIBUTE, correlation_id)
    return correlation_id


def current_correlation_id() -> str | None:
    return _correlation.get()


def parent_from(trace_parent: str | None) -> Context | None:
    """The context a W3C ``traceparent`` names (None for none, or an unreadable one)."""
    if not trace_parent:
        return None
    context = _propagator.extract({"traceparent": trace_parent})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Context | None = None,
    links: Sequence[str | None] = (),
    **attributes: str | int | bool,
) -> Iterator[Span]:
    """A span, current inside the block, with the correlation id and ``attributes`` (never PHI).

    ``links``: traceparents of other traces this work also belongs to (a batch's other members).
    """
    linked = [Link(context) for tp in links if (context := _linked(tp)) is not None]
    # An exception's message may quote PHI (a driver error quotes the statement's values): a failed
    # span says only the exception's type.
    with tracer.start_as_current_span(
        name, context=parent, kind=kind, links=linked, record_exception=False, set_status_on_exception=False
    ) as current:
        if current.is_recording():
            correlation_id = _correlation.get()
            if correlation_id is not None:
                current.set_attribute(CORRELATION_ATTRIBUTE, correlation_id)
            current.set_attributes(attributes)
        try:
            yield current
        except Exception as exc:
            current.set_status(StatusCode.ERROR, type(exc).__name__)
            raise


def _linked(trace_parent: str | None) -> SpanContext | None:
    context = parent_from(trace_parent)
    return None if context is None else trace.get_current_span(context).get_span_context()
