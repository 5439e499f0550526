"""Staff credentials (checked by the database on every booking), closures of locations and
resources, travel time between home-visit zones, preparation time and home visits of services,
appointments' zones and the time their resources are held from

The trigger ``resource_booking_credentialed`` refuses a booking of a resource marked ``staff`` for
an appointment whose service none of that resource's credentials names, valid on the slot's
(UTC) date: the same rule the scheduler applies, kept by the database whatever writes.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 15:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import careops.domain.models

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
UTC = careops.domain.models.UTCDateTime(timezone=True)

SQLITE_TRIGGER = """
CREATE TRIGGER resource_booking_credentialed BEFORE INSERT ON resource_booking
FOR EACH ROW WHEN (SELECT staff FROM resource WHERE id = NEW.resource_id) AND NOT EXISTS (
    SELECT 1 FROM resource r, json_each(r.credentials) c, json_each(c.value, '$.services') s,
        appointment a JOIN service v ON v.id = a.service_id
    WHERE r.id = NEW.resource_id AND a.id = NEW.appointment_id AND s.value = v.code
        AND coalesce(json_extract(c.value, '$.valid_from'), '0000-01-01') <= date(NEW.slot_start)
        AND coalesce(json_extract(c.value, '$.expires'), '9999-12-31') >= date(NEW.slot_start))
BEGIN SELECT RAISE(ABORT, 'staff_not_credentialed'); END
"""
POSTGRES_FUNCTION = """
CREATE FUNCTION careops_booking_credentialed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT staff FROM resource WHERE id = NEW.resource_id) AND NOT EXISTS (
        SELECT 1 FROM resource r
            CROSS JOIN LATERAL jsonb_array_elements(r.credentials) c
            CROSS JOIN LATERAL jsonb_array_elements_text(c -> 'services') s
            JOIN appointment a ON a.id = NEW.appointment_id
            JOIN service v ON v.id = a.service_id
        WHERE r.id = NEW.resource_id AND s = v.code
            AND coalesce((c ->> 'valid_from')::date, '-infinity') <= (NEW.slot_start AT TIME ZONE 'UTC')::date
            AND coalesce((c ->> 'expires')::date, 'infinity') >= (NEW.slot_start AT TIME ZONE 'UTC')::date)
    THEN
        RAISE EXCEPTION 'staff_not_credentialed' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$
"""
POSTGRES_TRIGGER = (
    "CREATE TRIGGER resource_booking_credentialed BEFORE INSERT ON resource_booking"
    " FOR EACH ROW EXECUTE FUNCTION careops_booking_credentialed()"
)


def upgrade() -> None:
    op.add_column("location", sa.Column("closures", JSON, nullable=False, server_default="[]"))
    op.add_column("location", sa.Column("travel_minutes", sa.Integer(), nullable=False, server_default="30"))
    op.add_column("resource", sa.Column("closures", JSON, nullable=False, server_default="[]"))
    op.add_column("resource", sa.Column("staff", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("resource", sa.Column("credentials", JSON, nullable=False, server_default="[]"))
    op.add_column("service", sa.Column("preparation_minutes", sa.Integer(), nullable=True))
    op.add_column("service", sa.Column("home_visit", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("appointment", sa.Column("zone", sa.String(length=64), nullable=True))
    op.add_column("appointment", sa.Column("held_from", UTC, nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_FUNCTION)
        op.execute(POSTGRES_TRIGGER)
    else:
        op.execute(SQLITE_TRIGGER)


def downgrade() -> None:
    op.execute(
        "DROP TRIGGER IF EXISTS resource_booking_credentialed"
        + (" ON resource_booking" if op.get_bind().dialect.name == "postgresql" else "")
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS careops_booking_credentialed()")
    with op.batch_alter_table("appointment") as batch:
        batch.drop_column("held_from")
        batch.drop_column("zone")
    with op.batch_alter_table("service") as batch:
        batch.drop_column("home_visit")
        batch.drop_column("preparation_minutes")
    with op.batch_alter_table("resource") as batch:
        batch.drop_column("credentials")
        batch.drop_column("staff")
        batch.drop_column("closures")
    with op.batch_alter_table("location") as batch:
        batch.drop_column("travel_minutes")
        batch.drop_column("closures")
