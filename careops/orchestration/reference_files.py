"""Master data as files: read (YAML or CSV, every error named by file, line and field), compare with
what is live, apply in one transaction, export.

A file is the whole of each kind it holds: an entry that is not live is added, one that differs is
changed (a retired one is restored), and a live record of that kind the file leaves out is retired
(never deleted). Applying the same file again changes nothing; an export read back is the same.
Each change is a business event (``reference.added|changed|retired``) with who, from which source
and why. A field owned by another system than the file's source is not overwritten: the change of
that field waits in the ``master_data`` exception queue instead.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.events import Event, EventType, record_events
from careops.domain.master_data import KINDS, SINGULAR, Kind
from careops.domain.models import (
    CodeMapping,
    ExceptionItem,
    FieldOwner,
    Location,
    Organisation,
    new_id,
    utcnow,
)
from careops.errors import Conflict, NotFound, ValidationFailed

MASTER_DATA_QUEUE = "master_data"
CSV_LIST_SEPARATOR = ";"
CSV_INNER_SEPARATOR = "|"  # a list inside a mapping's value
EVENT_BATCH = 1_000
_TRUE, _FALSE = {"true", "yes", "1", "y"}, {"false", "no", "0", "n", ""}


@dataclass(frozen=True)
class Entry:
    kind: str
    record: dict[str, Any]
    line: int


@dataclass
class ReferenceFile:
    path: str
    entries: list[Entry] = field(default_factory=list)
    organisation: dict[str, str] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def kinds(self) -> list[str]:
        return sorted({entry.kind for entry in self.entries} | set(self._declared))

    _declared: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Change:
    kind: str
    key: tuple[str, ...]
    action: str  # add, change, restore, retire
    fields: tuple[str, ...] = ()
    record: dict[str, Any] | None = None

    def describe(self) -> str:
        what = f"{self.kind} {'/'.join(self.key)}"
        return f"{self.action:8} {what}" + (f" ({', '.join(self.fields)})" if self.fields else "")


# -- reading ---------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML mappings carry the line they start on (``__line__``)."""


def _mapping_with_line(loader: _Loader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping = {str(key): value for key, value in loader.construct_mapping(node, deep=True).items()}
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_with_line)


def read_reference_file(path: Path, kind: str | None = None) -> ReferenceFile:
    """Every entry of the file, validated; ``problems`` names each error (file:line: where: what)."""
    read = ReferenceFile(str(path))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        read.problems.append(f"{path}: cannot be read ({type(exc).__name__})")
        return read
    if path.suffix.lower() == ".csv":
        _read_csv(read, text, kind or path.stem)
    elif path.suffix.lower() in (".yaml", ".yml"):
        _read_yaml(read, text, kind)
    else:
        read.problems.append(f"{path}: a reference file is .yaml, .yml or .csv")
    _check_duplicates(read)
    return read


def _read_yaml(read: ReferenceFile, text: str, only: str | None) -> None:
    try:
        document = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader that adds line numbers
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        read.problems.append(f"{read.path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})")
        return
    if not isinstance(document, dict):
        read.problems.append(f"{read.path}:1: the file holds a mapping of kinds (locations:, services:, ...)")
        return
    document.pop("__line__", None)
    organisation = document.pop("organisation", None)
    if organisation is not None:
        read.organisation = _organisation(read, organisation)
    for name, entries in document.items():
        if only is not None and name != only:
            continue
        if name not in KINDS:
            known = ", ".join(["organisation", *KINDS])
            read.problems.append(f"{read.path}: unknown kind {name!r} (known: {known})")
            continue
        read._declared.add(name)
        if not isinstance(entries, list):
            read.problems.append(f"{read.path}: {name} holds a list of entries")
            continue
        for index, raw in enumerate(entries):
            at = int(raw.get("__line__", 0)) if isinstance(raw, dict) else 0
            _validated(read, KINDS[name], _without_lines(raw), at, f"{name}[{index}]")


def _without_lines(value: Any) -> Any:
    """``value`` without the ``__line__`` the loader put in every mapping."""
    if isinstance(value, dict):
        return {k: _without_lines(v) for k, v in value.items() if k != "__line__"}
    if isinstance(value, list):
        return [_without_lines(v) for v in value]
    return value


def _organisation(read: ReferenceFile, raw: Any) -> dict[str, str] | None:
    if isinstance(raw, dict):
        line = raw.pop("__line__", 0)
        if set(raw) == {"slug", "name"} and all(isinstance(v, str) and v.strip() for v in raw.values()):
            return {"slug": raw["slug"].strip(), "name": raw["name"].strip()}
    else:
        line = 0
    read.problems.append(f"{read.path}:{line}: organisation: give its slug and name, nothing else")
    return None


def _read_csv(read: ReferenceFile, text: str, name: str) -> None:
    if name not in KINDS:
        read.problems.append(f"{read.path}: name the kind with --kind or the file (e.g. referrers.csv)")
        return
    kind = KINDS[name]
    read._declared.add(name)
    rows = csv.DictReader(io.StringIO(text))
    unknown = [column for column in rows.fieldnames or [] if column not in kind.fields]
    if unknown:
        read.problems.append(f"{read.path}:1: unknown column(s) {', '.join(unknown)} for {name}")
        return
    for index, row in enumerate(rows):
        line = rows.line_num
        _validated(read, kind, record_from_cells(kind, row), line, f"{name}[{index}]")


def record_from_cells(kind: Kind, row: dict[str, str | None]) -> dict[str, Any]:
    """CSV cells (or a console form's fields) as the record's types: lists split on ';', mappings as
    'KEY=VALUE;...' (a list inside a value split on '|'), numbers, booleans as true/false (yes/no,
    1/0); an empty cell is the field's default. A cell that is not what its field wants is passed
    on as it is, for validation to name."""
    record: dict[str, Any] = {}
    for name, text in row.items():
        if name is None or text is None or name not in kind.record.model_fields:
            continue
        shape, inner = _shape(kind.record.model_fields[name].annotation)
        text = text.strip()
        if shape == "records":  # nested records (a resource's credentials): a JSON list
            record[name] = _json_cell(text)
        elif shape == "list":
            record[name] = [part.strip() for part in text.split(CSV_LIST_SEPARATOR) if part.strip()]
        elif shape == "dict":
            pairs = [part.split("=", 1) for part in text.split(CSV_LIST_SEPARATOR) if part.strip()]
            record[name] = {p[0].strip(): _scalar(inner, p[1].strip() if len(p) == 2 else "") for p in pairs}
        elif text:
            record[name] = _scalar(shape, text)
    return record


def _shape(annotation: Any) -> tuple[Any, Any]:
    """("list", None), ("dict", the values' shape) or a scalar type, through Annotated and Optional."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _shape(get_args(annotation)[0])
    if origin in (Union, UnionType):
        return _shape(next(a for a in get_args(annotation) if a is not type(None)))
    if origin is list:
        item = get_args(annotation)[0]
        return ("records", item) if isinstance(item, type) and issubclass(item, BaseModel) else ("list", None)
    if origin is dict:
        return "dict", _shape(get_args(annotation)[1])[0]
    return annotation, None


def _json_cell(text: str) -> Any:
    """A JSON list from a cell (empty: none); text that is not JSON is passed on for validation."""
    if not text:
        return []
    try:
        return json.loads(text)
    except ValueError:
        return text


def _scalar(shape: Any, text: str) -> Any:
    if shape == "list":  # in a mapping's value: mon=08:00-12:00|13:00-18:00
        return [part for part in text.split(CSV_INNER_SEPARATOR) if part]
    if shape is bool:
        lowered = text.lower()
        return lowered in _TRUE if lowered in _TRUE | _FALSE else text
    if shape in (int, float):
        try:
            return shape(text)
        except ValueError:
            return text
    return text


def _validated(read: ReferenceFile, kind: Kind, raw: Any, line: int, where: str) -> None:
    try:
        record = kind.record.model_validate(raw).model_dump()
    except ValidationError as exc:
        for error in exc.errors():
            place = ".".join(str(part) for part in error["loc"])
            read.problems.append(f"{read.path}:{line}: {where}.{place}: {error['msg']}")
        return
    read.entries.append(Entry(kind.name, record, line))


def _check_duplicates(read: ReferenceFile) -> None:
    seen: dict[tuple[str, tuple[str, ...]], int] = {}
    for entry in read.entries:
        key = (entry.kind, KINDS[entry.kind].key_of(entry.record))
        if key in seen:
            read.problems.append(
                f"{read.path}:{entry.line}: {entry.kind} {'/'.join(key[1])} is also on line {seen[key]}"
            )
        seen.setdefault(key, entry.line)


# -- comparing and applying ------------------------------------------------------------------


def _live_rows(session: Session, kind: Kind) -> dict[tuple[str, ...], Any]:
    """Every row of the kind by key: live ones, and retired ones no live row has replaced."""
    rows: dict[tuple[str, ...], Any] = {}
    for row in session.scalars(select(kind.model)):
        key = tuple(str(getattr(row, k)) for k in kind.key)
        if key not in rows or getattr(rows[key], "retired_at", None) is not None:
            rows[key] = row
    return rows


def _is_live(row: Any) -> bool:
    return getattr(row, "retired_at", None) is None


def diff(db: Database, read: ReferenceFile) -> list[Change]:
    """What applying ``read`` would change, kind by kind, in file order, retirements last."""
    with db.sessions() as session:
        return _diff(read, {name: _live_rows(session, KINDS[name]) for name in read.kinds})


Live = dict[str, dict[tuple[str, ...], Any]]  # kind -> key -> row


def _diff(read: ReferenceFile, rows: Live) -> list[Change]:
    changes: list[Change] = []
    for name in read.kinds:
        kind = KINDS[name]
        live = rows[name]
        listed = set()
        for entry in (e for e in read.entries if e.kind == name):
            key = kind.key_of(entry.record)
            listed.add(key)
            row = live.get(key)
            if row is None:
                changes.append(Change(name, key, "add", (), entry.record))
                continue
            current = kind.record_of(row)
            differing = tuple(f for f in kind.fields if current[f] != entry.record[f])
            if not _is_live(row):
                changes.append(Change(name, key, "restore", differing, entry.record))
            elif differing:
                changes.append(Change(name, key, "change", differing, entry.record))
        for key, row in live.items():
            if key not in listed and kind.retirable and _is_live(row):
                changes.append(Change(name, key, "retire"))
    return changes


@dataclass
class Applied:
    changes: list[Change]
    held: list[str]  # field changes waiting for their owner (exception items opened)


def apply_file(
    db: Database,
    read: ReferenceFile,
    *,
    actor: str,
    reason: str,
    source: str = "careops",
    progress: Callable[[int, int], None] | None = None,
) -> Applied:
    """Apply ``read`` in one transaction (nothing at all if it has problems)."""
    if read.problems:
        errors = [{"field": "file", "message": problem} for problem in read.problems[:100]]
        raise ValidationFailed("the file has errors; nothing was changed", errors=errors)
    with db.transaction() as session:
        live = {name: _live_rows(session, KINDS[name]) for name in read.kinds}
        changes = _diff(read, live)
        organisation_id = _organisation_id(session, read.organisation)
        return _apply(session, changes, live, organisation_id, (actor, reason, source), progress)


def put_record(
    db: Database, kind: str, record: dict[str, Any], *, actor: str, reason: str, source: str = "careops"
) -> Applied:
    """Add, change or restore one record of ``kind`` (the others stay as they are)."""
    entry = Entry(kind, KINDS[kind].record.model_validate(record).model_dump(), 0)
    with db.transaction() as session:
        live = {kind: _live_rows(session, KINDS[kind])}
        changes = [
            c for c in _diff(ReferenceFile("api", [entry], _declared={kind}), live) if c.action != "retire"
        ]
        return _apply(session, changes, live, _organisation_id(session, None), (actor, reason, source), None)


def retire_record(db: Database, kind: str, key: tuple[str, ...], *, actor: str, reason: str) -> Applied:
    """Retire one live record of ``kind`` (404 when there is none)."""
    with db.transaction() as session:
        live = {kind: _live_rows(session, KINDS[kind])}
        row = live[kind].get(key)
        if row is None or not _is_live(row) or not KINDS[kind].retirable:
            raise NotFound(f"no live {_singular(kind)} {'/'.join(key)}")
        changes = [Change(kind, key, "retire")]
        return _apply(session, changes, live, "", (actor, reason, "careops"), None)


def _apply(
    session: Session,
    changes: list[Change],
    live: Live,
    organisation_id: str,
    who: tuple[str, str, str],
    progress: Callable[[int, int], None] | None,
) -> Applied:
    """Write ``changes`` (a field owned by another system than ``who``'s source is held instead)
    and their events, in the caller's transaction."""
    actor, reason, source = who
    owners = {(o.kind, o.field): o.owner for o in session.scalars(select(FieldOwner))}
    applied = Applied([], [])
    events: list[Event] = []
    for done, change in enumerate(changes, 1):
        kind = KINDS[change.kind]
        if change.action in ("change", "restore"):
            held = [f for f in change.fields if owners.get((_singular(change.kind), f), source) != source]
            for name in held:
                applied.held.append(_hold(session, change, name, owners[(_singular(change.kind), name)]))
            fields = tuple(f for f in change.fields if f not in held)
            if change.action == "change" and not fields:
                continue
            change = Change(change.kind, change.key, change.action, fields, change.record)
        subject_id = _write(session, kind, change, live[kind.name].get(change.key), organisation_id, actor)
        events.append(_event(change, subject_id, actor, reason, source))
        applied.changes.append(change)
        if len(events) >= EVENT_BATCH:
            record_events(session, *events)
            events = []
        if progress is not None:
            progress(done, len(changes))
    session.flush()
    if events:
        record_events(session, *events)
    return applied


def _singular(kind: str) -> str:
    return next((one for one, many in SINGULAR.items() if many == kind), kind)


def _organisation_id(session: Session, wanted: dict[str, str] | None) -> str:
    """The organisation new records belong to: the file's (created if new), else the only one."""
    if wanted is not None:
        found = session.scalars(select(Organisation).where(Organisation.slug == wanted["slug"])).first()
        if found is None:
            found = Organisation(id=new_id(), slug=wanted["slug"], name=wanted["name"])
            session.add(found)
            session.flush()
        elif found.name != wanted["name"]:
            found.name = wanted["name"]
        return found.id
    ids = list(session.scalars(select(Organisation.id).limit(2)))
    if len(ids) != 1:
        raise ValidationFailed(
            "name the organisation in the file (organisation: {slug: ..., name: ...}): "
            + ("there is none yet" if not ids else "there are several")
        )
    return ids[0]


def _write(session: Session, kind: Kind, change: Change, row: Any, organisation_id: str, actor: str) -> str:
    """The row written for ``change`` (``row``: the one it changes, if any); returns its id (the
    event's subject)."""
    model = kind.model
    if kind.name == "field_owners":
        assert change.record is not None
        session.merge(FieldOwner(**change.record))
        return f"{change.key[0]}.{change.key[1]}"[:32]
    if kind.name == "mappings":
        return _write_mapping(session, change, row, actor)
    if change.action == "retire":
        row.retired_at = utcnow()
        return str(row.id)
    assert change.record is not None
    if kind.name == "resources":
        _check_location(session, change.record["location"])
    if row is None:
        owned = {"organisation_id": organisation_id} if hasattr(model, "organisation_id") else {}
        row = model(id=new_id(), **owned, **change.record)
        session.add(row)
        return str(row.id)
    for name in change.fields:
        setattr(row, name, change.record[name])
    row.retired_at = None
    return str(row.id)


def _check_location(session: Session, slug: str) -> None:
    found = session.scalars(select(Location.id).where(Location.slug == slug, Location.retired_at.is_(None)))
    if found.first() is None:
        raise Conflict(f"no live location {slug!r} for the resource")


def _write_mapping(session: Session, change: Change, row: CodeMapping | None, actor: str) -> str:
    """A mapping is never edited: a new version replaces the live one, which is retired."""
    live = row if row is not None and row.retired_at is None else None
    version = row.version + 1 if row is not None else 1
    if live is not None:
        live.retired_at = utcnow()
        session.flush()  # before the new version takes its place in the unique index
    if change.action == "retire":
        return str(live.id) if live is not None else ""
    assert change.record is not None
    mapping = CodeMapping(id=new_id(), version=version, created_by=actor[:100], **change.record)
    session.add(mapping)
    return mapping.id


def _hold(session: Session, change: Change, name: str, owner: str) -> str:
    """An exception item for a field change its owner must make; its description."""
    what = f"{change.kind}.{name}:{'/'.join(change.key)}"[:100]
    session.add(
        ExceptionItem(
            id=new_id(),
            queue=MASTER_DATA_QUEUE,
            reason_codes=[f"field_owned_elsewhere:{what}", f"owner:{owner}"[:100]],
            dedupe_key=None,
            created_at=utcnow(),
        )
    )
    return f"{change.kind} {'/'.join(change.key)}: {name} is owned by {owner}"


_EVENT_TYPES = {
    "add": EventType.REFERENCE_ADDED,
    "change": EventType.REFERENCE_CHANGED,
    "restore": EventType.REFERENCE_CHANGED,
    "retire": EventType.REFERENCE_RETIRED,
}


def _event(change: Change, subject_id: str, actor: str, reason: str, source: str) -> Event:
    return Event(
        _EVENT_TYPES[change.action],
        subject_type=_singular(change.kind)[:32],
        subject_id=subject_id[:32],
        actor=actor,
        payload={
            "kind": change.kind,
            "key": list(change.key),
            "fields": list(change.fields),
            "restored": change.action == "restore",
            "source": source,
            "reason": reason[:500],
        },
    )


# -- reading one kind ------------------------------------------------------------------------

SEARCHED = ("name", "target", "owner", "organisation")


def list_records(
    db: Database, kind: str, text: str = "", *, retired: bool = False, limit: int = 100, offset: int = 0
) -> list[dict[str, Any]]:
    """Records of ``kind`` whose key or name holds ``text`` (any case), by key; live ones only unless
    ``retired``. Each with ``retired_at``."""
    spec = KINDS[kind]
    model: Any = spec.model
    query = select(model).order_by(*(getattr(model, k) for k in spec.key))
    if spec.retirable and not retired:
        query = query.where(model.retired_at.is_(None))
    if text.strip():
        pattern = f"%{text.strip().lower()}%"
        columns = [getattr(model, c) for c in (*spec.key, *SEARCHED) if hasattr(model, c)]
        query = query.where(or_(*(func.lower(c).like(pattern) for c in columns)))
    with db.sessions() as session:
        rows = session.scalars(query.limit(limit).offset(offset)).all()
        return [{**spec.record_of(row), "retired_at": getattr(row, "retired_at", None)} for row in rows]


def get_record(db: Database, kind: str, key: tuple[str, ...]) -> dict[str, Any]:
    """One record by key (a retired one too), or 404."""
    spec = KINDS[kind]
    model: Any = spec.model
    with db.sessions() as session:
        rows = session.scalars(
            select(model).where(*(getattr(model, k) == v for k, v in zip(spec.key, key, strict=True)))
        ).all()
        row = next((r for r in rows if _is_live(r)), rows[-1] if rows else None)
        if row is None:
            raise NotFound(f"no {_singular(kind)} {'/'.join(key)}")
        return {**spec.record_of(row), "retired_at": getattr(row, "retired_at", None)}


# -- exporting -------------------------------------------------------------------------------


def export_records(db: Database, kinds: Iterable[str]) -> dict[str, Any]:
    """The organisation (when there is one) and the live records of each kind, ordered by key, as a
    file holds them."""
    document: dict[str, Any] = {}
    with db.sessions() as session:
        organisations = list(session.scalars(select(Organisation).limit(2)))
        if len(organisations) == 1:
            document["organisation"] = {"slug": organisations[0].slug, "name": organisations[0].name}
        for name in kinds:
            kind = KINDS[name]
            rows = [row for row in _live_rows(session, kind).values() if _is_live(row)]
            records = (kind.record_of(row, exclude_defaults=True) for row in rows)
            document[name] = sorted(records, key=kind.key_of)
    return document


def to_yaml(document: dict[str, Any]) -> str:
    return str(yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=110))


def to_csv(kind: str, records: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(KINDS[kind].fields), restval="", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({name: cell(value) for name, value in record.items()})
    return out.getvalue()


def cell(value: Any) -> str:
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, list):
        return CSV_LIST_SEPARATOR.join(str(v) for v in value)
    if isinstance(value, dict):
        return CSV_LIST_SEPARATOR.join(
            f"{k}={CSV_INNER_SEPARATOR.join(map(str, v)) if isinstance(v, list) else cell(v)}"
            for k, v in value.items()
        )
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)
