"""Workflow templates: YAML files in ``workflows/``, one per operational process, parsed into typed
objects with errors that name the file, the line and the path; their content hash; location
overlays and the effective workflow of a location.

A template has a ``name``, a ``version`` label, an ``owner``, the role it ``run_as`` (whose
permissions must cover every action it takes), optional ``locations`` (slugs, or ``group:NAME``),
``parameters``, an ``sla``, ``rules`` and ``overlays``. A rule has a ``name``, a trigger (``on``),
a condition (``when``, see conditions.py), an optional ``rate_limit`` and ``steps`` (each a named
server action with its arguments, ``with``). An overlay names the locations it covers and
overrides parameters, or the arguments of named steps (``RULE.STEP``), of the base template.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from croniter import croniter

from careops.automation.conditions import TRUE, Condition, ConditionError, parse
from careops.automation.rendering import RenderError, render
from careops.yamldoc import (
    Document,
    DocumentError,
    content_hash,
    parse_duration,
)

TRIGGER_KINDS = ("event", "change", "after", "before", "schedule")
CATCH_UP = ("all", "latest", "skip")
# Field changes a trigger can name: the event that reports them, with "from" and "to" in its payload.
CHANGES: dict[tuple[str, str], str] = {("case", "status"): "case.transitioned"}
_NAME = r"^[a-z][a-z0-9-]{0,63}$"


# A template that does not load: where (file, line, path) and what is wrong.
TemplateError = DocumentError


@dataclass(frozen=True)
class Trigger:
    kind: str
    event: str | None = None  # what starts it (for a schedule: None)
    field_from: str | None = None  # a change trigger's from / to
    field_to: str | None = None
    delay_seconds: float = 0.0  # after / before
    anchor: str | None = None  # before: the fact path of the moment (after: the event's time)
    cron: str | None = None
    catch_up: str = "latest"
    timezone: str = "UTC"

    def describe(self) -> str:
        if self.kind == "schedule":
            return f"schedule {self.cron} ({self.timezone}, catch-up {self.catch_up})"
        if self.kind == "change":
            return f"{self.event} from {self.field_from or 'any'} to {self.field_to or 'any'}"
        if self.kind in ("after", "before"):
            return f"{self.delay_seconds / 3600:g} h {self.kind} {self.anchor or self.event}"
        return f"event {self.event}"


@dataclass(frozen=True)
class Step:
    name: str
    action: str
    args: dict[str, Any]


@dataclass(frozen=True)
class RateLimit:
    count: int
    per_seconds: float


@dataclass(frozen=True)
class Rule:
    name: str
    trigger: Trigger
    when: Condition = TRUE
    steps: tuple[Step, ...] = ()
    rate_limit: RateLimit | None = None
    raw_when: Any = None


@dataclass(frozen=True)
class Overlay:
    name: str
    locations: tuple[str, ...]
    parameters: dict[str, Any]
    steps: dict[str, dict[str, Any]]  # "rule.step" -> arguments that replace the base's


@dataclass(frozen=True)
class Template:
    name: str
    version: str
    owner: str
    run_as: str
    description: str
    content_hash: str
    data: dict[str, Any]  # as loaded (the effective workflow's, for an overlaid one)
    source: str = "<template>"
    locations: tuple[str, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)
    sla: dict[str, Any] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    overlays: tuple[Overlay, ...] = ()
    overlay: str | None = None  # the overlay an effective workflow was made with

    def rule(self, name: str) -> Rule:
        return next(r for r in self.rules if r.name == name)

    def covers(self, slug: str, groups: list[str]) -> bool:
        return not self.locations or _matches(self.locations, slug, groups)


def _matches(targets: tuple[str, ...], slug: str, groups: list[str]) -> bool:
    return slug in targets or any(f"group:{g}" in targets for g in groups)


# --- loading ----------------------------------------------------------------------------------


def load_text(text: str, source: str = "<template>") -> Template:
    """Parse a template's YAML text; TemplateError with the line of what is wrong."""
    return Document(text, source).parse(_template)


def load_file(path: Path) -> Template:
    return load_text(path.read_text(encoding="utf-8"), str(path))


def load_directory(directory: Path) -> list[Template]:
    """Every ``*.yaml`` template directly in ``directory`` (tests and policies live below it)."""
    return [load_file(path) for path in sorted(directory.glob("*.yaml"))]


def _need(raw: Mapping[str, Any], key: str, kind: type, at: tuple[str | int, ...]) -> Any:
    if key not in raw:
        raise ConditionError(f"{key} is required", at)
    value = raw[key]
    if not isinstance(value, kind) or (kind is str and not value):
        raise ConditionError(
            f"{key} must be a {'non-empty text' if kind is str else kind.__name__}", (*at, key)
        )
    return value


def _name(raw: Mapping[str, Any], at: tuple[str | int, ...]) -> str:
    name = str(_need(raw, "name", str, at))
    if not re.match(_NAME, name):
        raise ConditionError("a name is lower-case letters, digits and dashes", (*at, "name"))
    return name


def _template(data: Any, source: str) -> Template:
    if not isinstance(data, dict):
        raise ConditionError("a template is a mapping with name, version, owner, run_as and rules")
    known = {
        "name",
        "version",
        "owner",
        "run_as",
        "description",
        "locations",
        "parameters",
        "sla",
        "rules",
        "overlays",
    }
    for key in data:
        if key not in known:
            raise ConditionError(f"unknown key {key!r}; known: {', '.join(sorted(known))}", (str(key),))
    rules_raw = _need(data, "rules", list, ())
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ConditionError("parameters is a mapping", ("parameters",))
    rules = tuple(_rule(r, ("rules", i), parameters) for i, r in enumerate(rules_raw))
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise ConditionError("two rules have the same name", ("rules",))
    overlays = tuple(_overlay(o, ("overlays", i), rules) for i, o in enumerate(data.get("overlays") or []))
    return Template(
        name=_name(data, ()),
        version=str(_need(data, "version", str | int | float, ())),  # type: ignore[arg-type]
        owner=str(_need(data, "owner", str, ())),
        run_as=str(_need(data, "run_as", str, ())),
        description=str(data.get("description", "")),
        content_hash=content_hash(data),
        data=data,
        source=source,
        locations=tuple(str(x) for x in data.get("locations") or ()),
        parameters=dict(parameters),
        sla=dict(data.get("sla") or {}),
        rules=rules,
        overlays=overlays,
    )


def _rule(raw: Any, at: tuple[str | int, ...], parameters: dict[str, Any]) -> Rule:
    if not isinstance(raw, dict):
        raise ConditionError("a rule is a mapping with name, on and steps", at)
    for key in raw:
        if key not in ("name", "on", "when", "steps", "rate_limit", "description"):
            raise ConditionError(f"unknown key {key!r} in a rule", (*at, str(key)))
    steps_raw = _need(raw, "steps", list, at)
    if not steps_raw:
        raise ConditionError("a rule needs at least one step", (*at, "steps"))
    steps = tuple(_step(s, (*at, "steps", i)) for i, s in enumerate(steps_raw))
    if len({s.name for s in steps}) != len(steps):
        raise ConditionError("two steps have the same name", (*at, "steps"))
    limit = raw.get("rate_limit")
    rate = None
    if limit is not None:
        if not isinstance(limit, dict) or not isinstance(limit.get("count"), int) or limit["count"] < 1:
            raise ConditionError(
                "rate_limit takes count (at least 1) and per (a duration)", (*at, "rate_limit")
            )
        rate = RateLimit(
            limit["count"], parse_duration(limit.get("per", "1h"), (*at, "rate_limit", "per")).total_seconds()
        )
    return Rule(
        name=_name(raw, at),
        trigger=_trigger(_need(raw, "on", dict, at), (*at, "on"), parameters),
        when=parse(raw.get("when"), (*at, "when")),
        steps=steps,
        rate_limit=rate,
        raw_when=raw.get("when"),
    )


def _trigger(raw: dict[str, Any], at: tuple[str | int, ...], parameters: dict[str, Any]) -> Trigger:
    if len(raw) != 1 or next(iter(raw)) not in TRIGGER_KINDS:
        raise ConditionError(f"on names one trigger: {', '.join(TRIGGER_KINDS)}", at)
    kind, spec = next(iter(raw.items()))
    where = (*at, kind)
    if kind == "event":
        if not isinstance(spec, str):
            raise ConditionError("event takes an event type", where)
        return Trigger("event", event=spec)
    if not isinstance(spec, dict):
        raise ConditionError(f"{kind} takes a mapping", where)
    if kind == "change":
        key = (str(spec.get("record")), str(spec.get("field")))
        if key not in CHANGES:
            known = ", ".join(f"{r}.{f}" for r, f in CHANGES)
            raise ConditionError(f"no event reports changes of {key[0]}.{key[1]}; known: {known}", where)
        return Trigger("change", event=CHANGES[key], field_from=spec.get("from"), field_to=spec.get("to"))
    if kind == "schedule":
        cron = str(spec.get("cron", ""))
        if not croniter.is_valid(cron):
            raise ConditionError(
                f"{cron!r} is not a cron expression (minute hour day month weekday)", (*where, "cron")
            )
        catch_up = str(spec.get("catch_up", "latest"))
        if catch_up not in CATCH_UP:
            raise ConditionError(f"catch_up is one of {', '.join(CATCH_UP)}", (*where, "catch_up"))
        return Trigger("schedule", cron=cron, catch_up=catch_up, timezone=str(spec.get("timezone", "UTC")))
    event = spec.get("event")
    if not isinstance(event, str):
        raise ConditionError(f"{kind} needs the event it counts from", (*where, "event"))
    delay = spec.get("delay")
    anchor = spec.get("field") if kind == "before" else None
    if kind == "before" and not isinstance(anchor, str):
        raise ConditionError("before needs the field holding the moment (event.payload.expires)", where)
    if _templated(delay):
        try:
            delay = render(str(delay), {"params": parameters})
        except RenderError as exc:
            raise ConditionError(str(exc), (*where, "delay")) from exc
    seconds = parse_duration(delay, (*where, "delay")).total_seconds()
    return Trigger(kind, event=event, delay_seconds=seconds, anchor=anchor)


def _templated(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def _step(raw: Any, at: tuple[str | int, ...]) -> Step:
    from careops.automation.actions import ACTIONS

    if not isinstance(raw, dict):
        raise ConditionError("a step is a mapping with name, action and with", at)
    action = str(_need(raw, "action", str, at))
    if action not in ACTIONS:
        raise ConditionError(
            f"unknown action {action!r}; known: {', '.join(sorted(ACTIONS))}", (*at, "action")
        )
    args = raw.get("with") or {}
    if not isinstance(args, dict):
        raise ConditionError("with is a mapping of the action's arguments", (*at, "with"))
    ACTIONS[action].check(args, (*at, "with"))
    return Step(_name(raw, at), action, args)


def _overlay(raw: Any, at: tuple[str | int, ...], rules: tuple[Rule, ...]) -> Overlay:
    if not isinstance(raw, dict):
        raise ConditionError("an overlay is a mapping with name, locations, parameters, steps", at)
    locations = _need(raw, "locations", list, at)
    steps = raw.get("steps") or {}
    known = {f"{r.name}.{s.name}" for r in rules for s in r.steps}
    for key, value in steps.items():
        if key not in known:
            raise ConditionError(f"no step {key!r} to override; steps are RULE.STEP", (*at, "steps", key))
        if not isinstance(value, dict):
            raise ConditionError("a step override is a mapping of arguments", (*at, "steps", key))
    return Overlay(
        _name(raw, at), tuple(str(x) for x in locations), dict(raw.get("parameters") or {}), dict(steps)
    )


# --- overlays ---------------------------------------------------------------------------------


def effective(template: Template, slug: str, groups: list[str]) -> Template:
    """The template as it runs at a location: the first overlay covering it applied (its
    parameters over the base's, its step arguments over the steps'). Same hash as the base: the
    version pinned is the template's."""
    overlay = next((o for o in template.overlays if _matches(o.locations, slug, groups)), None)
    if overlay is None:
        return template
    data = copy.deepcopy(template.data)
    data["parameters"] = {**(data.get("parameters") or {}), **overlay.parameters}
    for rule in data["rules"]:
        for step in rule["steps"]:
            change = overlay.steps.get(f"{rule['name']}.{step['name']}")
            if change:
                step["with"] = {**(step.get("with") or {}), **change}
    data.pop("overlays", None)
    made = _template(data, template.source)
    return replace(made, content_hash=template.content_hash, overlays=template.overlays, overlay=overlay.name)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a template, for editors (``careops workflows schema``)."""
    from careops.automation.actions import ACTIONS

    duration = {"oneOf": [{"type": "string", "pattern": r"^\s*\d+\s*[smhd]\s*$|\{\{"}, {"type": "number"}]}
    trigger = {
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "properties": {
            "event": {"type": "string"},
            "change": {"type": "object", "required": ["record", "field"]},
            "after": {"type": "object", "required": ["event", "delay"], "properties": {"delay": duration}},
            "before": {
                "type": "object",
                "required": ["event", "field", "delay"],
                "properties": {"delay": duration},
            },
            "schedule": {
                "type": "object",
                "required": ["cron"],
                "properties": {
                    "cron": {"type": "string"},
                    "catch_up": {"enum": list(CATCH_UP)},
                    "timezone": {"type": "string"},
                },
            },
        },
        "additionalProperties": False,
    }
    step = {
        "type": "object",
        "required": ["name", "action"],
        "properties": {
            "name": {"type": "string", "pattern": _NAME},
            "action": {"enum": sorted(ACTIONS)},
            "with": {"type": "object"},
        },
        "additionalProperties": False,
    }
    rule = {
        "type": "object",
        "required": ["name", "on", "steps"],
        "properties": {
            "name": {"type": "string", "pattern": _NAME},
            "description": {"type": "string"},
            "on": trigger,
            "when": {"type": "object"},
            "rate_limit": {
                "type": "object",
                "required": ["count"],
                "properties": {"count": {"type": "integer", "minimum": 1}, "per": duration},
            },
            "steps": {"type": "array", "minItems": 1, "items": step},
        },
        "additionalProperties": False,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://careops.example/schemas/workflow-template.json",
        "title": "careops workflow template",
        "type": "object",
        "required": ["name", "version", "owner", "run_as", "rules"],
        "properties": {
            "name": {"type": "string", "pattern": _NAME},
            "version": {"type": ["string", "number"]},
            "owner": {"type": "string"},
            "run_as": {"type": "string"},
            "description": {"type": "string"},
            "locations": {"type": "array", "items": {"type": "string"}},
            "parameters": {"type": "object"},
            "sla": {"type": "object"},
            "rules": {"type": "array", "minItems": 1, "items": rule},
            "overlays": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "locations"],
                    "properties": {
                        "name": {"type": "string"},
                        "locations": {"type": "array", "items": {"type": "string"}},
                        "parameters": {"type": "object"},
                        "steps": {"type": "object"},
                    },
                    "additionalProperties": False,
                },
            },
        },
        "additionalProperties": False,
    }
