"""The reference's three tables (bench/reference_app.py); the bench creates them before it starts."""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, MetaData, String, Table

metadata = MetaData()
ref_patient = Table(
    "ref_patient", metadata, Column("id", String(32), primary_key=True), Column("name", String(200))
)
ref_referral = Table(
    "ref_referral",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("patient_id", String(32)),
    Column("service", String(64)),
    Column("created_at", DateTime(timezone=True)),
)
ref_event = Table(
    "ref_event",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("type", String(64)),
    Column("payload", JSON),
)
