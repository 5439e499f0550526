"""Odoo as a delivery target: an approved invoice request becomes a posted customer invoice
(``account.move``) for its payer, an approved replenishment a confirmed purchase order
(``purchase.order``) for its supplier. Two wire protocols behind one small client:

- **JSON-2** (Odoo 19): ``POST {url}/json/2/{model}/{method}`` with ``Authorization: bearer
  {api key}`` (and ``X-Odoo-Database``), named arguments in a JSON body;
- **XML-RPC** (Odoo 16 to 18): ``{url}/xmlrpc/2/common`` ``authenticate`` then ``{url}/xmlrpc/2/object``
  ``execute_kw(db, uid, key, model, method, args, kwargs)``.

Idempotency: each record careops creates carries its external reference (``ref`` of the
invoice, ``partner_ref`` of the order: ``careops:<record id>``); a delivery first looks it up, so a
retry after a timeout finds the record made the first time instead of making a second. Partners
are found or created by their ``ref`` (the payer's or supplier's code). careops owns what it
sends; what Odoo holds already is never overwritten.
"""

from __future__ import annotations

import xmlrpc.client
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from sqlalchemy.orm import Session

from careops.domain.models import InvoiceRequest, Payer
from careops.domain.stock import Replenishment, Supplier

# Which named argument a method's first positional one is (XML-RPC passes it by position).
_FIRST = {"search_read": "domain", "create": "vals_list"}


class OdooError(Exception):
    """Odoo refused a call (its message), or the record careops needs is missing there."""


class OdooClient(Protocol):
    def call(self, model: str, method: str, **kwargs: Any) -> Any: ...


@dataclass
class Json2Client:
    url: str
    api_key: str
    database: str | None
    http: httpx.Client

    def call(self, model: str, method: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"bearer {self.api_key}"}
        if self.database:
            headers["X-Odoo-Database"] = self.database
        answer = self.http.post(
            f"{self.url.rstrip('/')}/json/2/{model}/{method}", json=kwargs, headers=headers
        )
        if answer.status_code >= 500 or answer.status_code in (408, 429):
            answer.raise_for_status()  # retried
        if not answer.is_success:
            raise OdooError(f"Odoo refused {model}.{method}: {answer.status_code} {answer.text[:200]}")
        return answer.json()


class XmlRpcClient:
    def __init__(self, url: str, database: str, login: str, api_key: str, timeout: float) -> None:
        self.url, self.database, self.api_key = url.rstrip("/"), database, api_key
        transport = _Transport(timeout)
        common = xmlrpc.client.ServerProxy(
            f"{self.url}/xmlrpc/2/common", transport=transport, allow_none=True
        )
        self.uid = common.authenticate(database, login, api_key, {})
        if not self.uid:
            raise OdooError("Odoo did not accept the login and API key")
        self.object = xmlrpc.client.ServerProxy(
            f"{self.url}/xmlrpc/2/object", transport=transport, allow_none=True
        )

    def call(self, model: str, method: str, **kwargs: Any) -> Any:
        first = kwargs.pop(_FIRST.get(method, "ids"))
        try:
            return self.object.execute_kw(
                self.database, self.uid, self.api_key, model, method, [first], kwargs
            )
        except xmlrpc.client.Fault as fault:
            raise OdooError(f"Odoo refused {model}.{method}: {fault.faultString[:200]}") from None


class _Transport(xmlrpc.client.Transport):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def make_connection(self, host: Any) -> Any:
        connection = super().make_connection(host)
        connection.timeout = self.timeout
        return connection


def _one(client: OdooClient, model: str, field: str, value: str, fields: list[str]) -> dict[str, Any] | None:
    found = client.call(model, "search_read", domain=[[field, "=", value]], fields=fields, limit=1)
    return found[0] if found else None


def _partner(client: OdooClient, code: str, name: str, *, supplier: bool) -> int:
    """The partner whose ``ref`` is ``code``, created when Odoo has none."""
    found = _one(client, "res.partner", "ref", code, ["id"])
    if found is not None:
        return int(found["id"])
    rank = {"supplier_rank": 1} if supplier else {"customer_rank": 1}
    [made] = client.call(
        "res.partner", "create", vals_list=[{"name": name, "ref": code, "is_company": True, **rank}]
    )
    return int(made)


def _invoice_line(line: dict[str, Any]) -> dict[str, Any]:
    """An invoice request's line (code, quantity, amount) as an Odoo invoice line."""
    quantity = float(line.get("quantity") or 1)
    return {"name": str(line.get("code") or "service"), "quantity": quantity,
            "price_unit": round(float(line.get("amount") or 0) / quantity, 2)}  # fmt: skip


def post_invoice(client: OdooClient, session: Session, invoice_id: str) -> int:
    """A posted customer invoice for an approved invoice request (found first by its ``ref``)."""
    ref = f"careops:{invoice_id}"
    found = _one(client, "account.move", "ref", ref, ["id", "state"])
    if found is not None:
        if found.get("state") != "posted":
            client.call("account.move", "action_post", ids=[found["id"]])
        return int(found["id"])
    invoice = session.get(InvoiceRequest, invoice_id)
    payer = session.get(Payer, invoice.payer_id) if invoice and invoice.payer_id else None
    if invoice is None or payer is None:
        raise OdooError("the invoice request, or its payer, is not in careops")
    lines = [(0, 0, _invoice_line(line)) for line in invoice.lines]
    partner = _partner(client, payer.code, payer.name, supplier=False)
    move = {"move_type": "out_invoice", "partner_id": partner, "ref": ref, "invoice_line_ids": lines}
    [made] = client.call("account.move", "create", vals_list=[move])
    client.call("account.move", "action_post", ids=[made])
    return int(made)


def confirm_purchase(client: OdooClient, session: Session, replenishment_id: str) -> int:
    """A confirmed purchase order for an approved replenishment (found first by ``partner_ref``);
    each line's product is Odoo's product with the item's code as its internal reference."""
    ref = f"careops:{replenishment_id}"
    found = _one(client, "purchase.order", "partner_ref", ref, ["id", "state"])
    if found is not None:
        return int(found["id"])
    record = session.get(Replenishment, replenishment_id)
    if record is None or not record.supplier:
        raise OdooError("the replenishment, or its supplier, is not in careops")
    supplier = session.query(Supplier).filter(Supplier.code == record.supplier).one_or_none()
    lines = []
    for line in record.lines:
        product = _one(client, "product.product", "default_code", str(line["item"]), ["id"])
        if product is None:
            raise OdooError(f"Odoo has no product with the internal reference {line['item']}")
        lines.append((0, 0, {"product_id": product["id"], "product_qty": float(line["quantity"]),
                             "price_unit": float(line.get("unit_price", 0))}))  # fmt: skip
    partner = _partner(client, record.supplier, supplier.name if supplier else record.supplier, supplier=True)
    [made] = client.call(
        "purchase.order",
        "create",
        vals_list=[{"partner_id": partner, "partner_ref": ref, "order_line": lines}],
    )
    client.call("purchase.order", "button_confirm", ids=[made])
    return int(made)


# What an event does in Odoo: the event type, and the function given the event's subject id.
ACTIONS = {"invoice.approved": post_invoice, "replenishment.approved": confirm_purchase}
