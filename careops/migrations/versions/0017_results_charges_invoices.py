"""Results, charges and invoice requests; external appointments as appointment records; the
billing checklists of services and payers; a case's order number and diagnosis codes

Appointments another system reported before this revision (``appointment.*`` events on a case,
from HL7 SIU) become appointment records: one per case and external appointment id, in the state
its latest event left it.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 15:00:00
"""

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import careops.domain.models

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
UTC = careops.domain.models.UTCDateTime(timezone=True)
_STATUS = {"appointment.booked": "confirmed", "appointment.modified": "confirmed"}


def upgrade() -> None:
    op.add_column("service_case", sa.Column("order_number", sa.String(length=64), nullable=True))
    op.add_column("service_case", sa.Column("diagnosis_codes", JSON, nullable=False, server_default="[]"))
    op.create_index("ix_service_case_order_number", "service_case", ["order_number"])
    op.add_column(
        "appointment", sa.Column("source", sa.String(length=16), nullable=False, server_default="careops")
    )
    op.add_column("appointment", sa.Column("external_id", sa.String(length=64), nullable=True))
    op.create_index("ix_appointment_external_id", "appointment", ["external_id"])
    op.add_column(
        "document", sa.Column("kind", sa.String(length=16), nullable=False, server_default="attachment")
    )
    op.add_column("service", sa.Column("procedure_code", sa.String(length=16), nullable=True))
    op.add_column(
        "service", sa.Column("requires_result", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column("service", sa.Column("billing_checklist", JSON, nullable=False, server_default="[]"))
    op.add_column("payer", sa.Column("billing_checklist", JSON, nullable=False, server_default="[]"))
    op.create_table(
        "result",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("case_id", sa.String(length=32), nullable=True),
        sa.Column("intake_item_id", sa.String(length=32), nullable=False),
        sa.Column("document_id", sa.String(length=32), nullable=True),
        sa.Column("location_id", sa.String(length=32), nullable=True),
        sa.Column("order_number", sa.String(length=64), nullable=True),
        sa.Column("service_code", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("matched_by", sa.String(length=16), nullable=True),
        sa.Column("observed_at", UTC, nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["service_case.id"]),
        sa.ForeignKeyConstraint(["intake_item_id"], ["intake_item.id"]),
        sa.ForeignKeyConstraint(["document_id"], ["document.id"]),
        sa.ForeignKeyConstraint(["location_id"], ["location.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_result_case_id", "result", ["case_id"])
    op.create_table(
        "case_charge",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("intake_item_id", sa.String(length=32), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("amount", sa.Float(), nullable=True),
        sa.Column("currency", sa.String(length=8), nullable=True),
        sa.Column("diagnosis_codes", JSON, nullable=False),
        sa.Column("posted_on", sa.Date(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["service_case.id"]),
        sa.ForeignKeyConstraint(["intake_item_id"], ["intake_item.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_case_charge_case_id", "case_charge", ["case_id"])
    op.create_table(
        "invoice_request",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("location_id", sa.String(length=32), nullable=False),
        sa.Column("payer_id", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("lines", JSON, nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.Column("external_reference", sa.String(length=100), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["service_case.id"]),
        sa.ForeignKeyConstraint(["location_id"], ["location.id"]),
        sa.ForeignKeyConstraint(["payer_id"], ["payer.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_invoice_request_case_id", "invoice_request", ["case_id"])
    external_appointments_to_records(op.get_bind())


def external_appointments_to_records(connection: sa.Connection) -> None:
    """One appointment record per (case, external id) from the SIU events recorded on cases."""
    rows = connection.execute(
        sa.text(
            "SELECT e.type, e.payload, e.occurred_at, c.id, c.location_id, c.service_id,"
            " s.duration_minutes FROM business_event e"
            " JOIN service_case c ON c.id = e.case_id JOIN service s ON s.id = c.service_id"
            " WHERE e.subject_type = 'case' AND e.type IN"
            " ('appointment.booked', 'appointment.modified', 'appointment.cancelled') ORDER BY e.id"
        ).columns(occurred_at=UTC)
    ).fetchall()
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for event_type, payload, occurred_at, case_id, location_id, service_id, minutes in rows:
        data = json.loads(payload) if isinstance(payload, str) else payload
        external = data.get("filler_id") or data.get("placer_id") or ""
        start = _moment(data.get("start")) or latest.get((case_id, external), {}).get("starts_at")
        latest[(case_id, external)] = {
            "id": careops.domain.models.new_id(),
            "case_id": case_id,
            "location_id": location_id,
            "service_id": service_id,
            "starts_at": start or occurred_at,
            "ends_at": (start or occurred_at) + dt.timedelta(minutes=minutes or 30),
            "status": _STATUS.get(event_type, "cancelled"),
            "resource_codes": [],
            "source": "hl7",
            "external_id": external[:64] or None,
            "created_at": occurred_at,
            "updated_at": occurred_at,
        }
    if latest:
        table = sa.table(
            "appointment",
            *(sa.column(name) for name in ("id", "case_id", "location_id", "service_id", "status")),
            sa.column("starts_at", UTC),
            sa.column("ends_at", UTC),
            sa.column("created_at", UTC),
            sa.column("updated_at", UTC),
            sa.column("resource_codes", JSON),
            sa.column("source"),
            sa.column("external_id"),
        )
        connection.execute(table.insert(), list(latest.values()))


def _moment(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def downgrade() -> None:
    op.execute("DELETE FROM appointment WHERE source <> 'careops'")
    op.drop_index("ix_invoice_request_case_id", table_name="invoice_request")
    op.drop_table("invoice_request")
    op.drop_index("ix_case_charge_case_id", table_name="case_charge")
    op.drop_table("case_charge")
    op.drop_index("ix_result_case_id", table_name="result")
    op.drop_table("result")
    with op.batch_alter_table("payer") as batch:
        batch.drop_column("billing_checklist")
    with op.batch_alter_table("service") as batch:
        batch.drop_column("billing_checklist")
        batch.drop_column("requires_result")
        batch.drop_column("procedure_code")
    with op.batch_alter_table("document") as batch:
        batch.drop_column("kind")
    op.drop_index("ix_appointment_external_id", table_name="appointment")
    with op.batch_alter_table("appointment") as batch:
        batch.drop_column("external_id")
        batch.drop_column("source")
    op.drop_index("ix_service_case_order_number", table_name="service_case")
    with op.batch_alter_table("service_case") as batch:
        batch.drop_column("diagnosis_codes")
        batch.drop_column("order_number")
