"""The kinds of master data an organisation governs, each as a record schema and the table it lives in.

A kind's record is what a reference file holds for one entry and what the API takes and gives: a
key (a location's slug, a code) and its fields, validated strictly. Records in use are retired,
never deleted. The operations capabilities add their kinds (resources, staff, items, suppliers,
price lists) here, and get import, export, diff, mappings and field ownership with them.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from zoneinfo import available_timezones

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from careops.domain.models import Base, CodeMapping, FieldOwner, Location, Payer, Referrer, Resource, Service
from careops.domain.stock import Item, StockThreshold, Supplier


@functools.cache
def _zones() -> set[str]:
    return available_timezones()


KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$"
KeyText = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=KEY_PATTERN)]


def by_key(value: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema for a mapping keyed by codes (``patternProperties``: what generators and
    validators of the contract read, where ``propertyNames`` is not)."""
    return {
        "type": "object",
        "patternProperties": {KEY_PATTERN: value},
        "additionalProperties": False,
        "maxProperties": 200,
    }


ByPayer = Annotated[dict[KeyText, bool], WithJsonSchema(by_key({"type": "boolean"}))]
Amounts = Annotated[dict[KeyText, float], WithJsonSchema(by_key({"type": "number", "minimum": 0}))]
Slug = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
Word = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
# What a billing checklist may name (``orchestration.billing`` checks them).
CHECKS = ("signed_report", "referral_letter", "procedure_code", "diagnosis_code", "authorisation")
Checklist = Annotated[
    list[Literal["signed_report", "referral_letter", "procedure_code", "diagnosis_code", "authorisation"]],
    Field(max_length=5, description="what an invoice needs: " + ", ".join(CHECKS)),
]
REQUIRABLE = (
    "patient.birth_date",
    "patient.mrn",
    "patient.phone",
    "patient.email",
    "patient.sex",
    "referrer.code",
    "payer_code",
    "member_id",
    "priority",
    "clinical_notes",
)


def _whole(value: Any) -> Any:
    """A whole number sent as a float (JSON's ``5.0``, ``1e3``) as the integer it is."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Whole = Annotated[int, BeforeValidator(_whole)]


class Record(BaseModel):
    """Strict: a string is no number and no yes/no (files' and forms' cells are converted first)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, strict=True)


def _iso_date(value: Any) -> Any:
    """A date (as YAML reads one) as its ISO text; ISO text checked to be a real date."""
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        dt.date.fromisoformat(value)
    return value


# A calendar date kept as its ISO text (what the JSON columns hold and the database's trigger reads).
IsoDate = Annotated[
    str,
    BeforeValidator(_iso_date),
    StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$"),
    WithJsonSchema({"type": "string", "format": "date"}),
]


class ClosureRecord(Record):
    """Days closed, local dates: ``first`` to ``last`` (the same day when ``last`` is left out;
    the days between the two, whichever is named first)."""

    first: IsoDate
    last: IsoDate | None = None

    @model_validator(mode="after")
    def _in_order(self) -> ClosureRecord:
        if self.last is not None and self.last < self.first:
            self.first, self.last = self.last, self.first
        return self


def closed_on(closures: list[dict[str, Any]], day: dt.date) -> bool:
    """Whether ``day`` falls in one of the stored closures."""
    text = day.isoformat()
    return any(c["first"] <= text <= (c.get("last") or c["first"]) for c in closures)


Closures = Annotated[list[ClosureRecord], Field(max_length=366, description="days closed (local dates)")]


class LocationRecord(Record):
    slug: Slug
    name: Name
    timezone: Annotated[str, WithJsonSchema({"type": "string", "enum": sorted(_zones() | {"UTC"})})] = "UTC"
    groups: list[Slug] = Field(default_factory=list, max_length=50)
    closures: Closures = Field(default_factory=list)
    travel_minutes: Whole = Field(30, ge=0, le=480, description="between home visits in different zones")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value != "UTC" and value not in _zones():
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/London)")
        return value


class ServiceRecord(Record):
    code: KeyText
    name: Name
    aliases: list[Word] = Field(default_factory=list, max_length=100)
    required_fields: list[Literal[REQUIRABLE]] = Field(default_factory=list)  # type: ignore[valid-type]
    requires_authorisation: bool = False
    duration_minutes: Annotated[int, Field(ge=1, le=24 * 60), BeforeValidator(_whole)] | None = None
    resources: list[Word] = Field(default_factory=list, max_length=20)
    authorisation: ByPayer = Field(default_factory=dict, description="payer code -> needs it")
    prices: Amounts = Field(default_factory=dict, description="payer code -> price")
    materials: Amounts = Field(default_factory=dict, description="item code -> quantity")
    procedure_code: Annotated[str, StringConstraints(pattern=r"^(\d{4}[0-9FTU]|[A-V]\d{4})$")] | None = Field(
        None, description="CPT or HCPCS code an invoice bills"
    )
    requires_result: bool = Field(False, description="completed only once its result is received")
    billing_checklist: Checklist = Field(default_factory=list)
    preparation_minutes: Annotated[int, Field(ge=5, le=240), BeforeValidator(_whole)] | None = Field(
        None, description="resources held before the start"
    )
    home_visit: bool = Field(
        False, description="delivered at the patient's address: a booking names its zone"
    )

    @field_validator("prices", "materials")
    @classmethod
    def _not_negative(cls, value: dict[str, float]) -> dict[str, float]:
        if any(amount < 0 for amount in value.values()):
            raise ValueError("amounts are 0 or more")
        return value

    @field_validator("authorisation", "prices", "materials", mode="after")
    @classmethod
    def _by_key(cls, value: dict[str, Any]) -> dict[str, Any]:
        """In key order, whatever order the database keeps them in (exports are stable)."""
        return dict(sorted(value.items()))


class PayerRecord(Record):
    code: KeyText
    name: Name
    category: Word | None = None
    requires_authorisation: bool = False
    billing_checklist: Checklist = Field(default_factory=list)


class ReferrerRecord(Record):
    code: KeyText
    name: Name
    organisation: Name | None = None


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SPAN = r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-4]):[0-5]\d$"
Span = Annotated[str, StringConstraints(pattern=SPAN)]


class CredentialRecord(Record):
    """A licence or certificate of a member of staff, and the services it lets them deliver."""

    type: Word
    number: Word | None = None
    issuer: Name | None = None
    valid_from: IsoDate | None = None
    expires: IsoDate | None = None
    services: list[KeyText] = Field(min_length=1, max_length=100)


class ResourceRecord(Record):
    """A room, device or member of staff at a location, the kinds of resource it is (what a
    service's ``resources`` name) and its working hours per weekday (location time)."""

    code: KeyText
    location: Slug
    name: Name
    kinds: list[Word] = Field(default_factory=list, max_length=20)
    hours: Annotated[
        dict[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], list[Span]],
        WithJsonSchema(
            {
                "type": "object",
                "properties": {
                    day: {"type": "array", "items": {"type": "string", "pattern": SPAN}} for day in WEEKDAYS
                },
                "additionalProperties": False,
            }
        ),
    ] = Field(default_factory=dict, description="A span that does not end after it starts covers nothing.")

    closures: Closures = Field(default_factory=list)
    staff: bool = Field(False, description="a person: booked only for services a valid credential names")
    credentials: list[CredentialRecord] = Field(default_factory=list, max_length=50)
    also_at: list[Slug] = Field(
        default_factory=list, max_length=50, description="staff: the other locations they are assigned to"
    )
    weekly_hours: Annotated[int, Field(ge=0, le=168), BeforeValidator(_whole)] | None = Field(
        None, description="staff: contracted hours a week"
    )

    @field_validator("hours")
    @classmethod
    def _in_week_order(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return {day: value[day] for day in WEEKDAYS if day in value}


class ItemRecord(Record):
    code: KeyText
    name: Name
    unit: Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[^\x00-\x1f\x7f]+$")] = (
        "each"
    )
    pack_size: Whole = Field(1, ge=1, le=100_000)
    unit_price: float | None = Field(None, ge=0, le=1_000_000)
    supplier: KeyText | None = Field(None, description="the usual supplier's code")


class SupplierRecord(Record):
    code: KeyText
    name: Name
    email: Annotated[str, StringConstraints(max_length=200, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None


class ThresholdRecord(Record):
    """When ``item`` runs low at ``location``: below ``minimum`` (reordered ``reorder_quantity`` at
    a time, up to ``maximum``)."""

    location: Slug
    item: KeyText
    minimum: Whole = Field(0, ge=0, le=1_000_000)
    maximum: Annotated[int, Field(ge=0, le=1_000_000), BeforeValidator(_whole)] | None = None
    reorder_quantity: Annotated[int, Field(ge=1, le=1_000_000), BeforeValidator(_whole)] | None = None


class MappingRecord(Record):
    """``sender`` calls ``target`` (a careops location slug, service, referrer or payer code) ``code``."""

    sender: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
    kind: Literal["location", "service", "referrer", "payer"]
    code: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
    target: KeyText


class FieldOwnerRecord(Record):
    kind: Literal["location", "service", "payer", "referrer", "resource"]
    field: Word
    owner: Word


@dataclass(frozen=True)
class Kind:
    """A kind of master data: its name in files (plural), its record schema and table, and its key."""

    name: str
    record: type[Record]
    model: type[Base]
    key: tuple[str, ...]
    retirable: bool = True

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.record.model_fields)

    def key_of(self, record: dict[str, Any]) -> tuple[str, ...]:
        return tuple(str(record[k]) for k in self.key)

    def record_of(self, row: Any, *, exclude_defaults: bool = False) -> dict[str, Any]:
        """A row as its record (an export leaves out the fields at their default)."""
        record = self.record.model_validate({name: getattr(row, name) for name in self.fields})
        return record.model_dump(exclude_defaults=exclude_defaults)


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("locations", LocationRecord, Location, ("slug",)),
        Kind("services", ServiceRecord, Service, ("code",)),
        Kind("payers", PayerRecord, Payer, ("code",)),
        Kind("referrers", ReferrerRecord, Referrer, ("code",)),
        Kind("resources", ResourceRecord, Resource, ("code",)),
        Kind("items", ItemRecord, Item, ("code",)),
        Kind("suppliers", SupplierRecord, Supplier, ("code",)),
        Kind("thresholds", ThresholdRecord, StockThreshold, ("location", "item")),
        Kind("mappings", MappingRecord, CodeMapping, ("sender", "kind", "code")),
        Kind("field_owners", FieldOwnerRecord, FieldOwner, ("kind", "field"), retirable=False),
    )
}
# The singular a mapping or an ownership names, to the kind.
SINGULAR = {
    "location": "locations",
    "service": "services",
    "payer": "payers",
    "referrer": "referrers",
    "resource": "resources",
    "item": "items",
    "supplier": "suppliers",
    "threshold": "thresholds",
}
