"""A protocol double for Odoo (which cannot run here): an in-memory Odoo answering the calls
careops makes, over Odoo 19's JSON-2 API (``POST /json/2/<model>/<method>``, bearer API key) and
the XML-RPC API of Odoo 16-18 (``/xmlrpc/2/common`` ``authenticate``, ``/xmlrpc/2/object``
``execute_kw``), as their documentation describes them. ``search_read`` with equality domains,
``create`` with one2many ``(0, 0, values)`` commands, ``action_post`` and ``button_confirm``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

API_KEY = "odoo-test-key"
DATABASE, LOGIN, UID = "odoo", "careops", 2


class FakeOdoo:
    def __init__(self) -> None:
        self.records: dict[str, dict[int, dict[str, Any]]] = {}
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.create("product.product", [{"name": "Saline 100 ml", "default_code": "SALINE-100ML"}])

    def create(self, model: str, vals_list: list[dict[str, Any]]) -> list[int]:
        table = self.records.setdefault(model, {})
        made = []
        for values in vals_list:
            record_id = len(table) + 1
            record = {"id": record_id, "state": "draft", **values}
            for key, value in values.items():
                if isinstance(value, list) and value and isinstance(value[0], list | tuple):
                    record[key] = [dict(command[2]) for command in value if command[0] == 0]
            table[record_id] = record
            made.append(record_id)
        return made

    def search_read(
        self, model: str, domain: list[Any], fields: list[str], limit: int | None = None
    ) -> list[dict[str, Any]]:
        rows = [
            {f: r.get(f) for f in [*fields, "id"]}
            for r in self.records.get(model, {}).values()
            if all(r.get(field) == value for field, _, value in domain)
        ]
        return rows[:limit] if limit else rows

    def call(self, model: str, method: str, first: Any, kwargs: dict[str, Any]) -> Any:
        with self.lock:
            self.calls.append((model, method))
            if method == "search_read":
                return self.search_read(model, first, **kwargs)
            if method == "create":
                return self.create(model, first)
            if method in ("action_post", "button_confirm"):
                for record_id in first:
                    self.records[model][record_id]["state"] = (
                        "posted" if method == "action_post" else "purchase"
                    )
                return True
        raise ValueError(f"the double does not know {model}.{method}")


@contextmanager
def serve(odoo: FakeOdoo) -> Iterator[tuple[str, str]]:
    """(JSON-2 base URL, XML-RPC base URL) of running servers backed by ``odoo``."""

    class Json2(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            _, _, _, model, method = self.path.split("/", 4)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            if self.headers.get("Authorization") != f"bearer {API_KEY}":
                self._answer(401, {"name": "werkzeug.exceptions.Unauthorized", "message": "Invalid apikey"})
                return
            first_name = {"search_read": "domain", "create": "vals_list"}.get(method, "ids")
            first = body.pop(first_name)
            try:
                self._answer(200, odoo.call(model, method, first, body))
            except ValueError as exc:
                self._answer(422, {"message": str(exc)})

        def _answer(self, status: int, data: Any) -> None:
            raw = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *_: Any) -> None:
            pass

    class Paths(SimpleXMLRPCRequestHandler):
        rpc_paths = ("/xmlrpc/2/common", "/xmlrpc/2/object")

        def log_message(self, *_: Any) -> None:
            pass

    def authenticate(db: str, login: str, key: str, _: dict[str, Any]) -> int | bool:
        return UID if (db, login, key) == (DATABASE, LOGIN, API_KEY) else False

    def execute_kw(
        db: str, uid: int, key: str, model: str, method: str, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        if (db, uid, key) != (DATABASE, UID, API_KEY):
            raise PermissionError("Access denied")
        return odoo.call(model, method, args[0], kwargs)

    json2 = ThreadingHTTPServer(("127.0.0.1", 0), Json2)
    rpc = SimpleXMLRPCServer(("127.0.0.1", 0), requestHandler=Paths, allow_none=True, logRequests=False)
    rpc.register_function(authenticate)
    rpc.register_function(execute_kw)
    for server in (json2, rpc):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{json2.server_port}", f"http://127.0.0.1:{rpc.server_address[1]}"
    finally:
        json2.shutdown()
        rpc.shutdown()
