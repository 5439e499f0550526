"""The condition language: what a rule's ``when`` says, parsed into typed objects and interpreted
(never ``eval``).

A condition is a mapping. ``all: [...]``, ``any: [...]`` and ``not: {...}`` combine conditions;
any other key is a path into the facts (``record.status``, ``event.payload.urgency``,
``params.max_value``) with a test: a plain value (equality) or a mapping of operators (``eq``,
``ne``, ``lt``, ``le``, ``gt``, ``ge``, ``in``, ``not_in``, ``between: [low, high]``,
``exists: true|false``, ``before`` / ``after`` a moment). A value may be a literal, ``{ref: PATH}``
(another fact) or a moment: ``now``, ``now - 4h``, ``event.occurred_at + 2d`` (units ``m``, ``h``,
``d``). ``lookup: {table: payer, key: PATH, field: NAME}`` in place of a path reads reference
data (the facts' look-up). Several tests in one mapping must all hold.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from careops.yamldoc import PathError

OPERATORS = ("eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "between", "exists", "before", "after")
LOOKUP_TABLES = ("location", "service", "payer", "referrer", "item", "exception")
_MOMENT = re.compile(r"^\s*(now|[a-z_]+(?:\.[A-Za-z0-9_]+)+)\s*(?:([+-])\s*(\d+)\s*([mhd]))?\s*$")
_UNITS = {"m": 60, "h": 3600, "d": 86400}
_PATH = re.compile(r"^(event|record|params|case|location)(\.[A-Za-z0-9_]+)*$")


class ConditionError(PathError):
    """A condition that does not parse; ``path`` says where in the template (a tuple of keys)."""


@dataclass(frozen=True)
class Ref:
    path: str


@dataclass(frozen=True)
class Moment:
    base: str  # "now" or a path
    offset_seconds: int


@dataclass(frozen=True)
class Lookup:
    table: str
    key: str  # a path
    field: str


Operand = Any  # a literal, a Ref, a Moment, a Lookup, or a tuple of them


@dataclass(frozen=True)
class Test:
    subject: str | Lookup
    operator: str
    value: Operand


@dataclass(frozen=True)
class All:
    parts: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    part: Condition


Condition = All | AnyOf | Not | Test
TRUE: Condition = All(())


def parse(raw: Any, at: tuple[str | int, ...] = ("when",)) -> Condition:
    """The typed condition of ``raw`` (None: always true); ConditionError names the path."""
    if raw is None:
        return TRUE
    if not isinstance(raw, Mapping) or not raw:
        raise ConditionError("a condition is a mapping (all, any, not, or a path with its test)", at)
    parts: list[Condition] = []
    for key, value in raw.items():
        where = (*at, str(key))
        if key in ("all", "any"):
            if not isinstance(value, list):
                raise ConditionError(f"{key} takes a list of conditions", where)
            inner = tuple(parse(part, (*where, i)) for i, part in enumerate(value))
            parts.append(All(inner) if key == "all" else AnyOf(inner))
        elif key == "not":
            parts.append(Not(parse(value, where)))
        elif key == "lookup" or ("lookup" in raw and key in OPERATORS):
            continue  # a look-up with its tests: read below
        else:
            parts.extend(_tests(_path(str(key), where), value, where))
    if "lookup" in raw:
        parts.extend(_lookup_tests(raw, at))
    return parts[0] if len(parts) == 1 else All(tuple(parts))


def _lookup_tests(raw: Mapping[str, Any], at: tuple[str | int, ...]) -> list[Condition]:
    spec = raw["lookup"]
    where = (*at, "lookup")
    if not isinstance(spec, Mapping) or set(spec) != {"table", "key", "field"}:
        raise ConditionError("lookup takes table, key and field", where)
    if spec["table"] not in LOOKUP_TABLES:
        raise ConditionError(
            f"unknown look-up table {spec['table']!r}; known: {', '.join(LOOKUP_TABLES)}", where
        )
    subject = Lookup(str(spec["table"]), _path(str(spec["key"]), (*where, "key")), str(spec["field"]))
    tests = {k: v for k, v in raw.items() if k in OPERATORS}
    if not tests:
        raise ConditionError("a lookup needs a test (eq, in, gt, ...)", at)
    return _tests(subject, tests, at)


def _path(text: str, at: tuple[str | int, ...]) -> str:
    if not _PATH.match(text):
        raise ConditionError(
            f"{text!r} is not a path: it starts with event, record, case, location or params", at
        )
    return text


def _tests(subject: str | Lookup, raw: Any, at: tuple[str | int, ...]) -> list[Condition]:
    if not isinstance(raw, Mapping):
        return [Test(subject, "eq", _operand(raw, at))]
    if not raw:
        raise ConditionError("an empty test", at)
    tests: list[Condition] = []
    for operator, value in raw.items():
        where = (*at, str(operator))
        if operator == "lookup":
            continue
        if operator not in OPERATORS:
            raise ConditionError(f"unknown operator {operator!r}; known: {', '.join(OPERATORS)}", where)
        if operator in ("in", "not_in") and not isinstance(value, list):
            raise ConditionError(f"{operator} takes a list", where)
        if operator == "between" and not (isinstance(value, list) and len(value) == 2):
            raise ConditionError("between takes [low, high]", where)
        if operator == "exists" and not isinstance(value, bool):
            raise ConditionError("exists takes true or false", where)
        if operator in ("before", "after"):
            tests.append(Test(subject, operator, _moment(value, where)))
        elif isinstance(value, list):
            tests.append(
                Test(subject, operator, tuple(_operand(v, (*where, i)) for i, v in enumerate(value)))
            )
        else:
            tests.append(Test(subject, operator, _operand(value, where)))
    return tests


def _operand(raw: Any, at: tuple[str | int, ...]) -> Operand:
    if isinstance(raw, Mapping):
        if set(raw) == {"ref"}:
            return Ref(_path(str(raw["ref"]), (*at, "ref")))
        raise ConditionError("a value is a literal or {ref: PATH}", at)
    if (
        isinstance(raw, str)
        and _MOMENT.match(raw)
        and (raw.strip().startswith("now") or re.search(r"[+-]", raw))
    ):
        return _moment(raw, at)
    return raw


def _moment(raw: Any, at: tuple[str | int, ...]) -> Moment:
    match = _MOMENT.match(str(raw))
    if match is None:
        raise ConditionError(f"{raw!r} is not a moment (now, now - 4h, event.occurred_at + 2d)", at)
    base, sign, amount, unit = match.groups()
    offset = int(amount) * _UNITS[unit] * (-1 if sign == "-" else 1) if amount else 0
    return Moment(base, offset)


# --- interpretation ---------------------------------------------------------------------------

LookupFn = Callable[[str, Any, str], Any]


@dataclass(frozen=True)
class Facts:
    """What a condition reads: nested mappings under ``event``, ``record``, ``case``, ``location``
    and ``params``; the time now; reference data by ``lookup(table, key, field)``."""

    values: Mapping[str, Any]
    now: dt.datetime
    lookup: LookupFn = lambda table, key, field: None

    def get(self, path: str) -> Any:
        value: Any = self.values
        for part in path.split("."):
            if isinstance(value, Mapping):
                value = value.get(part)
            else:
                return None
            if value is None:
                return None
        return value


def evaluate(condition: Condition, facts: Facts) -> bool:
    if isinstance(condition, All):
        return all(evaluate(part, facts) for part in condition.parts)
    if isinstance(condition, AnyOf):
        return any(evaluate(part, facts) for part in condition.parts)
    if isinstance(condition, Not):
        return not evaluate(condition.part, facts)
    return _test(condition, facts)


def _value(operand: Operand, facts: Facts) -> Any:
    if isinstance(operand, Ref):
        return facts.get(operand.path)
    if isinstance(operand, Moment):
        base = facts.now if operand.base == "now" else as_time(facts.get(operand.base))
        return None if base is None else base + dt.timedelta(seconds=operand.offset_seconds)
    if isinstance(operand, Lookup):
        return facts.lookup(operand.table, facts.get(operand.key), operand.field)
    if isinstance(operand, tuple):
        return tuple(_value(v, facts) for v in operand)
    return operand


def as_time(value: Any) -> dt.datetime | None:
    """A datetime (UTC when naive) from a datetime, a date or ISO 8601 text; None otherwise."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(), dt.UTC)
    if isinstance(value, str):
        try:
            return as_time(dt.datetime.fromisoformat(value))
        except ValueError:
            return None
    return None


def _test(test: Test, facts: Facts) -> bool:
    actual = _value(test.subject, facts) if isinstance(test.subject, Lookup) else facts.get(test.subject)
    wanted = _value(test.value, facts)
    op = test.operator
    if op == "exists":
        return (actual is not None) is wanted
    if op == "eq":
        return bool(actual == wanted)
    if op == "ne":
        return bool(actual != wanted)
    if op == "in":
        return actual in wanted
    if op == "not_in":
        return actual not in wanted
    if op in ("before", "after"):
        moment, when = as_time(actual), wanted
        if moment is None or when is None:
            return False
        return bool(moment < when) if op == "before" else bool(moment > when)
    try:
        if op == "between":
            low, high = wanted
            return bool(low <= actual <= high)
        return bool(
            {"lt": actual < wanted, "le": actual <= wanted, "gt": actual > wanted, "ge": actual >= wanted}[op]
        )
    except TypeError:  # None or values of kinds that do not compare: the test does not hold
        return False


def referenced_paths(condition: Condition) -> set[str]:
    """Every fact path a condition reads (the validator checks their roots)."""
    if isinstance(condition, All | AnyOf):
        return set().union(*(referenced_paths(p) for p in condition.parts)) if condition.parts else set()
    if isinstance(condition, Not):
        return referenced_paths(condition.part)
    found = {condition.subject} if isinstance(condition.subject, str) else {condition.subject.key}
    values = condition.value if isinstance(condition.value, tuple) else (condition.value,)
    found |= {v.path for v in values if isinstance(v, Ref)}
    return found
