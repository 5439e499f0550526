"""Code mappings: a coordinator says once what a sender's code stands for, and every item waiting
on it leaves the queue; careops suggests the likely target, never maps on its own.

``save_mapping`` writes a new version of the (sender, kind, code) mapping (retiring the one it
replaces) as a ``reference.added``/``reference.changed`` event that records whether a suggestion
was shown and taken, then re-evaluates every open intake exception item of that sender waiting on
an unknown code of that kind: those now complete become cases (exactly as a resolution through the
queue would make them), the others keep only the reasons that remain.

``suggest`` ranks careops' records for an unknown code: what the same code was mapped to before (by
any sender), then how close the sender's text for it (HL7 OBR-4.2, FHIR display, a facility's
name) is to each record's name, code and aliases. Each suggestion has a confidence in [0, 1].
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

from sqlalchemy import select

from careops.db import Database
from careops.domain.events import Event, EventType, record_events
from careops.domain.master_data import MappingRecord
from careops.domain.models import (
    CodeMapping,
    ExceptionItem,
    IntakeItem,
    Location,
    Payer,
    Referrer,
    Service,
    find,
    utcnow,
)
from careops.domain.reference import mapping_key, senders
from careops.errors import CareopsError, Conflict, NotFound, ValidationFailed
from careops.governance.scoping import EVERYWHERE, LocationScope
from careops.orchestration.exception_queue import resolve_intake_exception
from careops.orchestration.intake import INTAKE_QUEUE, CatalogueCache
from careops.settings import Settings

# The reason code an unknown code of each kind leaves on an exception item, and the referral field.
UNKNOWN = {
    "location": ("unknown_location", "location"),
    "service": ("unknown_service_code", "service_code"),
    "referrer": ("unknown_referrer_code", "referrer.code"),
    "payer": ("unknown_payer_code", "payer_code"),
}
EARLIER_MAPPING_CONFIDENCE = 0.9
SUGGESTIONS = 3
_WORDS = re.compile(r"[a-z0-9]+")
# Abbreviations of diagnostic and care services and what they are written out as, so that a
# sender's "Computed tomography of head" meets careops' "CT head".
ABBREVIATIONS = {
    "ct": "computed tomography",
    "cat": "computed tomography",
    "mri": "magnetic resonance",
    "mr": "magnetic resonance",
    "us": "ultrasound",
    "usg": "ultrasound",
    "sonography": "ultrasound",
    "xray": "radiograph",
    "xr": "radiograph",
    "x": "radiograph",
    "cxr": "chest radiograph",
    "radiography": "radiograph",
    "abdo": "abdomen",
    "abdominal": "abdomen",
    "cmp": "metabolic panel blood",
    "fbc": "blood count",
    "cbc": "blood count",
    "imaging": "",
    "ray": "",
}
_FILLER = {
    "of",
    "the",
    "and",
    "with",
    "without",
    "exam",
    "examination",
    "procedure",
    "scan",
    "study",
    "view",
    "1",
    "a",
}


@dataclass(frozen=True)
class Suggestion:
    target: str
    name: str
    confidence: float
    why: str  # "mapped before" or "name"


@dataclass(frozen=True)
class Released:
    mapping_id: str
    version: int
    cases: list[str]  # created (or linked to a duplicate) from items that were waiting
    still_waiting: int  # items of that code that wait on something else too


def _targets(db: Database, kind: str) -> dict[str, tuple[str, list[str]]]:
    """Live records of ``kind``: target code -> (name, other words it goes by)."""
    with db.sessions() as session:
        if kind == "location":
            rows = session.execute(select(Location.slug, Location.name).where(Location.retired_at.is_(None)))
            return {slug: (name, []) for slug, name in rows}
        if kind == "service":
            services = session.scalars(select(Service).where(Service.retired_at.is_(None)))
            return {s.code: (s.name, list(s.aliases)) for s in services}
        model = Referrer if kind == "referrer" else Payer
        rows = session.execute(select(model.code, model.name).where(model.retired_at.is_(None)))
        return {code: (name, []) for code, name in rows}


def _target_exists(db: Database, kind: str, target: str) -> bool:
    return target in _targets(db, kind)


def save_mapping(
    db: Database,
    settings: Settings,
    catalogue: CatalogueCache,
    record: MappingRecord,
    *,
    actor: str,
    suggested: str | None = None,
) -> Released:
    """Save ``record`` (a new version if the code was mapped) and release what waited on it.

    ``suggested``: the suggestion the person saw first, if any; whether they took it is recorded.
    """
    if not _target_exists(db, record.kind, record.target):
        raise Conflict(f"no live {record.kind} {record.target!r} to map onto")
    with db.transaction() as session:
        live = session.scalars(
            select(CodeMapping)
            .where(
                CodeMapping.sender == record.sender,
                CodeMapping.kind == record.kind,
                CodeMapping.code == record.code,
            )
            .order_by(CodeMapping.version.desc())
            .limit(1)
        ).first()
        version = 1 if live is None else live.version + 1
        if live is not None and live.retired_at is None:
            live.retired_at = utcnow()
            session.flush()
        mapping = CodeMapping(version=version, created_by=actor[:100], **record.model_dump())
        session.add(mapping)
        session.flush()
        taken = "none" if suggested is None else "accepted" if suggested == record.target else "overridden"
        record_events(
            session,
            Event(
                EventType.REFERENCE_CHANGED if version > 1 else EventType.REFERENCE_ADDED,
                subject_type="mapping",
                subject_id=mapping.id,
                actor=actor,
                payload={
                    "kind": "mappings",
                    "key": [record.sender, record.kind, record.code],
                    "fields": ["target"],
                    "source": "careops",
                    "reason": "mapped by hand",
                    "suggestion": taken,
                },
            ),
        )
        mapping_id = mapping.id
    catalogue.invalidate()
    cases, still = release_waiting(db, settings, catalogue, record, actor=actor)
    return Released(mapping_id, version, cases, still)


def release_waiting(
    db: Database, settings: Settings, catalogue: CatalogueCache, record: MappingRecord, *, actor: str
) -> tuple[list[str], int]:
    """Re-evaluate the open intake items of ``record``'s sender that wait on an unknown code of its
    kind; the cases made, and how many still wait on something else."""
    reason, _ = UNKNOWN[record.kind]
    with db.sessions() as session:
        waiting = session.execute(
            select(ExceptionItem.id, ExceptionItem.reason_codes, IntakeItem.sender)
            .join(IntakeItem, IntakeItem.id == ExceptionItem.intake_item_id)
            .where(ExceptionItem.queue == INTAKE_QUEUE, ExceptionItem.status == "open")
            .order_by(ExceptionItem.created_at)
        ).all()
    candidates = [
        item_id
        for item_id, reasons, sender in waiting
        if reason in reasons and record.sender in senders(sender)
    ]
    cases: list[str] = []
    still = 0
    for item_id in candidates:
        try:
            answer = resolve_intake_exception(
                db, item_id, {}, actor=actor, settings=settings, catalogue=catalogue, scope=EVERYWHERE
            )
        except ValidationFailed as exc:
            _keep_remaining(db, item_id, exc.extra.get("reason_codes") or [])
            still += 1
        except CareopsError:  # resolved meanwhile by someone else, or refused by a duty rule
            continue
        else:
            cases.append(str(answer["case_id"]))
    return cases, still


def _keep_remaining(db: Database, item_id: str, reasons: list[str]) -> None:
    """An item still incomplete keeps only the reasons that remain (the code it waited on is known)."""
    if not reasons:
        return
    with db.transaction() as session:
        item = session.get(ExceptionItem, item_id)
        if item is not None and item.status == "open" and item.reason_codes != reasons:
            item.reason_codes = list(reasons)


def suggest(db: Database, kind: str, code: str, text: str | None = None) -> list[Suggestion]:
    """Up to three likely targets for ``code`` of ``kind``, best first."""
    if kind not in UNKNOWN:
        raise NotFound(f"no mapping kind {kind!r}")
    targets = _targets(db, kind)
    found: dict[str, Suggestion] = {}
    with db.sessions() as session:
        earlier = session.scalars(
            select(CodeMapping.target)
            .where(CodeMapping.kind == kind, CodeMapping.retired_at.is_(None))
            .where(CodeMapping.code == code)
        ).all()
    for target in earlier:
        if target in targets:
            found[target] = Suggestion(
                target, targets[target][0], EARLIER_MAPPING_CONFIDENCE, "mapped before"
            )
    words = [w for w in (text, code) if w]
    for target, (name, aliases) in targets.items():
        score = max((_likeness(w, n) for w in words for n in (name, target, *aliases)), default=0.0)
        if score > 0 and (target not in found or found[target].confidence < score):
            found[target] = Suggestion(target, name, round(score, 3), "name")
    return sorted(found.values(), key=lambda s: (-s.confidence, s.target))[:SUGGESTIONS]


def _words(text: str) -> set[str]:
    """The words of ``text``, abbreviations spelt out (CT: computed tomography, ...)."""
    found = set()
    for word in _WORDS.findall(text.lower()):
        found.update(ABBREVIATIONS.get(word, word).split())
    return found - _FILLER


def _likeness(a: str, b: str) -> float:
    """How alike two names are, 0..1: shared words (Jaccard) or, failing that, characters."""
    left, right = _words(a), _words(b)
    if not left or not right:
        return 0.0
    shared = len(left & right) / len(left | right)
    if mapping_key("service", a) == mapping_key("service", b):
        return 1.0
    return max(shared, 0.8 * SequenceMatcher(None, " ".join(sorted(left)), " ".join(sorted(right))).ratio())


def waiting_codes(db: Database, exception_id: str, scope: LocationScope = EVERYWHERE) -> list[dict[str, Any]]:
    """For an intake exception item, each unknown code it waits on (kind, code, the sender a
    mapping would be for, the sender's text) with its suggestions; 404 outside ``scope``."""
    with db.sessions() as session:
        item = find(session, ExceptionItem, exception_id)
        if item is None:
            raise NotFound("no exception item with this id")
        scope.check(item.location_id, "exception item")
        intake = session.get(IntakeItem, item.intake_item_id) if item.intake_item_id else None
        normalised = dict(intake.normalised or {}) if intake is not None else {}
        sender = intake.sender if intake is not None else None
        reasons = list(item.reason_codes)
    codes = []
    for kind, (reason, field) in UNKNOWN.items():
        code = _field(normalised, field)
        if reason not in reasons or not code:
            continue
        text = normalised.get("service_text") if kind == "service" else None
        codes.append(
            {
                "kind": kind,
                "code": code,
                "sender": _mapping_sender(sender),
                "text": text,
                "suggestions": suggest(db, kind, code, text),
            }
        )
    return codes


def _field(normalised: dict[str, Any], dotted: str) -> str | None:
    value: Any = normalised
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return str(value) if value else None


def _mapping_sender(sender: str | None) -> str:
    """The sender a mapping saved from an item is for: the facility of an HL7 ``APP|FACILITY``
    (its first component), else the sender as recorded, else every sender."""
    return senders(sender)[-2] if sender else "*"
