"""Odoo as a delivery target, on SQLite and PostgreSQL, over both of its wire protocols (JSON-2
and XML-RPC) against a protocol double (tests/integrations/odoo_double.py: Odoo cannot run
here): an approved invoice request becomes a posted customer invoice for its payer, an approved
replenishment a confirmed purchase order; a delivery sent twice makes one record (the external
reference is looked up first); a wrong API key ends as a dead letter saying why."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from careops.db import Database
from careops.domain.deliveries import Delivery
from careops.domain.models import InvoiceRequest, Payer, ServiceCase, new_id
from careops.governance.audit import seal_all
from careops.governance.scoping import EVERYWHERE
from careops.integrations.outbound.delivery import Deliverer
from careops.integrations.outbound.subscriptions import load_text
from careops.orchestration.billing import advance_invoice
from careops.orchestration.deliveries import plan
from careops.orchestration.replenishment import advance, draft
from careops.settings import Settings
from tests.conftest import referral
from tests.integrations.odoo_double import API_KEY, DATABASE, LOGIN, FakeOdoo, serve
from tests.integrations.test_deliveries import drain, statuses


def _deliverer(db: Database, url: str, protocol: str) -> Deliverer:
    text = f"""
connectors:
  - name: odoo
    kind: odoo
    events: [invoice.approved, replenishment.approved]
    retry: {{attempts: 2, first: 0s, longest: 0s}}
    odoo: {{url: "{url}", protocol: {protocol}, database: {DATABASE}, login: {LOGIN},
           api_key_env: CAREOPS_TEST_ODOO_KEY}}
"""
    deliverer = Deliverer(db, load_text(text), timeout=5)
    plan(db, deliverer.subscriptions.values())
    return deliverer


def _approved_invoice(client: TestClient, db: Database) -> tuple[str, str]:
    case_id = client.post("/api/v1/referrals", json=referral()).json()["case_id"]
    with db.transaction() as session:
        case = session.get(ServiceCase, case_id)
        assert case is not None and case.payer_id is not None
        payer = session.get(Payer, case.payer_id)
        assert payer is not None
        lines = [
            {"code": "71045", "quantity": 1, "unit_price": 90.0, "amount": 90.0},
            {"code": "A4649", "quantity": 2, "unit_price": None, "amount": 40.0},
        ]
        invoice = InvoiceRequest(id=new_id(), case_id=case_id, location_id=case.location_id,
                                 payer_id=case.payer_id, status="requested", total=130.0,
                                 lines=lines)  # fmt: skip
        session.add(invoice)
        invoice_id, payer_code = invoice.id, payer.code
    advance_invoice(db, invoice_id, "approve", actor="fin", scope=EVERYWHERE)
    return invoice_id, payer_code


def _approved_replenishment(db: Database) -> str:
    record = draft(db, "south", [("SALINE-100ML", 30)], actor="pat", scope=EVERYWHERE)
    advance(db, record["id"], "submit", actor="pat", scope=EVERYWHERE)
    advance(db, record["id"], "approve", actor="quinn", scope=EVERYWHERE)
    return str(record["id"])


@pytest.mark.parametrize("protocol", ["json2", "xmlrpc"])
def test_invoices_and_purchase_orders_reach_odoo_once(
    client: TestClient, db: Database, settings: Settings, protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAREOPS_TEST_ODOO_KEY", API_KEY)
    odoo = FakeOdoo()
    with serve(odoo) as (json2, xmlrpc):
        deliverer = _deliverer(db, json2 if protocol == "json2" else xmlrpc, protocol)
        invoice_id, payer_code = _approved_invoice(client, db)
        replenishment_id = _approved_replenishment(db)
        seal_all(db, settings.secret_key)
        drain(deliverer, 3)
        assert statuses(db) == {"delivered": 2}
        [move] = odoo.records["account.move"].values()
        assert (move["ref"], move["state"], move["move_type"]) == (
            f"careops:{invoice_id}",
            "posted",
            "out_invoice",
        )
        assert [
            (line["name"], line["quantity"], line["price_unit"]) for line in move["invoice_line_ids"]
        ] == [("71045", 1.0, 90.0), ("A4649", 2.0, 20.0)]
        partners = {p["ref"]: p for p in odoo.records["res.partner"].values()}
        assert move["partner_id"] == partners[payer_code]["id"]
        [order] = odoo.records["purchase.order"].values()
        assert (order["partner_ref"], order["state"]) == (f"careops:{replenishment_id}", "purchase")
        assert order["order_line"][0]["product_qty"] == 30.0 and partners["MEDSUPPLY"]["supplier_rank"] == 1
        with db.transaction() as session:  # as if the answers had been lost: both are sent again
            session.execute(update(Delivery).values(status="pending", next_attempt_at=Delivery.created_at))
        drain(deliverer, 3)
        assert len(odoo.records["account.move"]) == 1 and len(odoo.records["purchase.order"]) == 1


def test_a_wrong_api_key_ends_as_a_dead_letter_saying_why(
    client: TestClient, db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAREOPS_TEST_ODOO_KEY", "not-the-key")
    with serve(FakeOdoo()) as (json2, _):
        deliverer = _deliverer(db, json2, "json2")
        _approved_replenishment(db)
        seal_all(db, settings.secret_key)
        drain(deliverer, 3)
    with db.sessions() as session:
        [dead] = session.scalars(select(Delivery)).all()
    assert dead.status == "dead" and dead.last_error is not None and "Odoo refused" in dead.last_error
