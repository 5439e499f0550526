"""Stock and replenishment on SQLite and PostgreSQL: moves never take a level below zero (the
service refuses, and so does the database); a threshold's crossing is written once per crossing;
completing a service consumes its bill of materials; a replenishment request goes from its draft
to stock received, its requester never approving it; random sequences of moves (hypothesis) keep
every level equal to the sum of its moves and never negative."""

from __future__ import annotations

import contextlib

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from careops.db import Database
from careops.domain.models import BusinessEvent
from careops.domain.stock import Item, StockLevel, StockMove
from careops.errors import Conflict, Forbidden
from careops.governance.scoping import EVERYWHERE
from careops.orchestration.inventory import Move, move_stock, stock
from careops.orchestration.replenishment import advance, from_thresholds
from tests.conftest import referral
from tests.orchestration.test_scheduling import next_monday


def _on_hand(db: Database, location: str, item: str) -> int:
    found = {row["item"]: row["on_hand"] for row in stock(db, location, EVERYWHERE)}
    return found.get(item, 0)


def _crossings(db: Database) -> int:
    with db.sessions() as session:
        return session.scalar(select(func.count()).where(BusinessEvent.type == "stock.below_threshold")) or 0


def test_moves_keep_stock_at_or_above_zero(client: TestClient, db: Database) -> None:
    assert _on_hand(db, "south", "GLOVES-M") == 300  # the demo's opening stock
    used = client.post(
        "/api/v1/stock/moves",
        json={"location": "south", "item": "GLOVES-M", "kind": "consumption", "quantity": 20},
    )
    assert used.status_code == 201 and used.json()["levels"][0]["on_hand"] == 280
    too_many = client.post(
        "/api/v1/stock/moves",
        json={"location": "south", "item": "GLOVES-M", "kind": "consumption", "quantity": 281},
    )
    assert too_many.status_code == 409 and "only 280 pair" in too_many.json()["detail"]
    no_reason = client.post(
        "/api/v1/stock/moves",
        json={"location": "south", "item": "GLOVES-M", "kind": "adjustment", "quantity": -5},
    )
    assert no_reason.status_code == 422
    counted = client.post(
        "/api/v1/stock/moves",
        json={
            "location": "south",
            "item": "GLOVES-M",
            "kind": "adjustment",
            "quantity": -5,
            "reason": "count",
        },
    )
    assert counted.status_code == 201
    moved = client.post(
        "/api/v1/stock/moves",
        json={
            "location": "south",
            "item": "GLOVES-M",
            "kind": "transfer",
            "quantity": 75,
            "to_location": "north",
        },
    )
    assert [level["on_hand"] for level in moved.json()["levels"]] == [200, 75]
    with pytest.raises(IntegrityError), db.transaction() as session:  # the database's own check
        session.execute(update(StockLevel).values(on_hand=-1))


def test_a_threshold_is_crossed_once_until_stock_is_back(db: Database) -> None:
    before = _crossings(db)
    for _ in range(3):  # 100 → 70 → 40 → 10 at central, minimum 20: one crossing
        move_stock(db, Move("central", "NEEDLE-21G", "consumption", 30), actor="t", scope=EVERYWHERE)
    assert _crossings(db) == before + 1
    assert [r["item"] for r in stock(db, "central", EVERYWHERE, below_only=True)] == ["NEEDLE-21G"]
    move_stock(db, Move("central", "NEEDLE-21G", "receipt", 50), actor="t", scope=EVERYWHERE)
    assert stock(db, "central", EVERYWHERE, below_only=True) == []
    move_stock(db, Move("central", "NEEDLE-21G", "consumption", 50), actor="t", scope=EVERYWHERE)
    assert _crossings(db) == before + 2


def test_completing_a_service_consumes_its_materials(client: TestClient, db: Database) -> None:
    body = referral(location="central", service_code="BLOOD-PANEL")
    case_id = client.post("/api/v1/referrals", json=body).json()["case_id"]
    booked = client.post(
        "/api/v1/appointments", json={"case_id": case_id, "starts_at": next_monday(9).isoformat()}
    )
    assert booked.status_code == 201, booked.text
    client.post(f"/api/v1/appointments/{booked.json()['id']}/complete")
    assert (_on_hand(db, "central", "VACUTAINER-SST"), _on_hand(db, "central", "NEEDLE-21G")) == (198, 99)
    with db.sessions() as session:
        moves = session.scalars(select(StockMove).where(StockMove.reference == booked.json()["id"])).all()
    assert sorted((m.kind, m.quantity) for m in moves) == [("consumption", -2), ("consumption", -1)]


def test_a_shortfall_is_consumed_as_far_as_it_goes_and_queued(client: TestClient, db: Database) -> None:
    move_stock(
        db, Move("central", "NEEDLE-21G", "consumption", 100), actor="t", scope=EVERYWHERE
    )  # none left
    case_id = client.post(
        "/api/v1/referrals", json=referral(location="central", service_code="BLOOD-PANEL")
    ).json()
    booked = client.post(
        "/api/v1/appointments", json={"case_id": case_id["case_id"], "starts_at": next_monday(10).isoformat()}
    ).json()
    assert client.post(f"/api/v1/appointments/{booked['id']}/complete").status_code == 200
    queue = client.get("/api/v1/exceptions", params={"queue": "inventory"}).json()["items"]
    assert [i["reason_codes"] for i in queue] == [["stock_short:NEEDLE-21G"]]
    assert _on_hand(db, "central", "NEEDLE-21G") == 0 and _on_hand(db, "central", "VACUTAINER-SST") == 198


def test_a_replenishment_goes_from_thresholds_to_stock_received(client: TestClient, db: Database) -> None:
    assert _on_hand(db, "south", "SALINE-100ML") == 8  # the demo leaves it under its minimum of 10
    made = from_thresholds(db, "south", actor="pat", scope=EVERYWHERE)
    assert made is not None and made["lines"] == [{"item": "SALINE-100ML", "quantity": 32, "unit_price": 0.8}]
    assert (made["supplier"], made["value"], made["status"]) == ("MEDSUPPLY", 25.6, "draft")
    advance(db, made["id"], "submit", actor="pat", scope=EVERYWHERE)
    with pytest.raises(Forbidden, match="separation of duties"):
        advance(db, made["id"], "approve", actor="pat", scope=EVERYWHERE)
    advance(db, made["id"], "approve", actor="quinn", scope=EVERYWHERE)
    ordered = client.post(
        f"/api/v1/replenishments/{made['id']}/order", json={"external_reference": "PO-1001"}
    )
    assert ordered.status_code == 200 and ordered.json()["external_reference"] == "PO-1001"
    assert client.post(f"/api/v1/replenishments/{made['id']}/receive", json={}).status_code == 200
    assert _on_hand(db, "south", "SALINE-100ML") == 40
    assert client.post(f"/api/v1/replenishments/{made['id']}/cancel", json={}).status_code == 409
    listed = client.get("/api/v1/replenishments", params={"status": "received"}).json()["items"]
    assert [r["id"] for r in listed] == [made["id"]]
    nothing = client.post("/api/v1/replenishments", json={"location": "north"})
    assert nothing.status_code == 409  # nothing under a minimum there


@hypothesis_settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    moves=st.lists(
        st.tuples(
            st.sampled_from(["receipt", "consumption", "transfer", "adjustment"]),
            st.sampled_from(["south", "north"]),
            st.integers(-40, 40),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_random_moves_never_go_negative_and_add_up(db: Database, moves: list[tuple[str, str, int]]) -> None:
    for kind, place, quantity in moves:
        other = "north" if place == "south" else "south"
        amount = (quantity or 1) if kind == "adjustment" else abs(quantity) or 1
        with contextlib.suppress(Conflict):
            move_stock(
                db, Move(place, "DRESSING-10CM", kind, amount, reason="count", to_location=other),
                actor="t", scope=EVERYWHERE,
            )  # fmt: skip
    with db.sessions() as session:
        item = session.scalars(select(Item.id).where(Item.code == "DRESSING-10CM")).one()
        for level in session.scalars(select(StockLevel).where(StockLevel.item_id == item)):
            total = session.scalar(
                select(func.sum(StockMove.quantity)).where(
                    StockMove.item_id == item, StockMove.location_id == level.location_id
                )
            )
            assert level.on_hand >= 0 and level.on_hand == total


def test_a_batch_of_moves_is_applied_in_order_all_or_none(client: TestClient, db: Database) -> None:
    gloves = _on_hand(db, "south", "GLOVES-M")
    refused = client.post(
        "/api/v1/stock/moves/batch",
        json={"moves": [
            {"kind": "receipt", "location": "south", "item": "GLOVES-M", "quantity": 10},
            {"kind": "consumption", "location": "south", "item": "GLOVES-M", "quantity": 4},
            {"kind": "consumption", "location": "south", "item": "GLOVES-M", "quantity": gloves + 100},
        ]},
    )  # fmt: skip
    assert refused.status_code == 409 and refused.json()["detail"].startswith("move 3 of 3: only")
    assert _on_hand(db, "south", "GLOVES-M") == gloves  # none of it applied
    unknown = client.post(
        "/api/v1/stock/moves/batch",
        json={"moves": [{"kind": "receipt", "location": "south", "item": "NO-SUCH", "quantity": 1}] * 2},
    )
    assert unknown.status_code == 404 and "move 1 of 2" in unknown.json()["detail"]
    before = _crossings(db)
    moves = [{"kind": "consumption", "location": "south", "item": "GLOVES-M", "quantity": 1}] * gloves
    applied = client.post("/api/v1/stock/moves/batch", json={"moves": moves})
    assert applied.status_code == 201, applied.text
    body = applied.json()
    assert body["applied"] == gloves and body["levels"][-1][0]["on_hand"] == 0
    assert _on_hand(db, "south", "GLOVES-M") == 0
    assert _crossings(db) == before + 1  # crossed its minimum once, however many moves went below it
    with db.sessions() as session:
        item = session.scalars(select(Item.id).where(Item.code == "GLOVES-M")).one()
        written = session.scalars(
            select(StockMove.on_hand).where(StockMove.item_id == item, StockMove.kind == "consumption")
        ).all()
    assert sorted(written, reverse=True) == list(range(gloves - 1, -1, -1))
