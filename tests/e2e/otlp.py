"""A real OTLP/HTTP traces receiver on loopback: what a collector gets from ``careops`` when
``CAREOPS_OTLP_TRACES_ENDPOINT`` points at it (protobuf ``ExportTraceServiceRequest`` over HTTP,
decoded with the OpenTelemetry protocol's own classes)."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: str
    attributes: dict[str, Any]
    status: str
    linked_traces: tuple[str, ...]
    raw: str = field(repr=False)  # every text of the span as sent, for scanning


@dataclass
class Collector:
    spans: list[ReceivedSpan] = field(default_factory=list)
    endpoint: str = ""

    def wait_for(
        self, found: Callable[[list[ReceivedSpan]], bool], seconds: float = 30
    ) -> list[ReceivedSpan]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if found(list(self.spans)):
                break
            time.sleep(0.2)
        return list(self.spans)


def _value(attribute: dict[str, Any]) -> Any:
    kind, value = next(iter(attribute.get("value", {}).items()), ("", None))
    return int(value) if kind == "intValue" else value  # protobuf's JSON writes an int64 as a string


def _spans(request: ExportTraceServiceRequest) -> Iterator[ReceivedSpan]:
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                as_dict = MessageToDict(span)
                yield ReceivedSpan(
                    name=span.name,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    kind=as_dict.get("kind", ""),
                    attributes={a["key"]: _value(a) for a in as_dict.get("attributes", [])},
                    status=span.status.message,
                    linked_traces=tuple(link.trace_id.hex() for link in span.links),
                    raw=str(as_dict),
                )


@contextmanager
def otlp_receiver() -> Iterator[Collector]:
    collector = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            collector.spans.extend(_spans(request))
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    collector.endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield collector
    finally:
        server.shutdown()
        server.server_close()
