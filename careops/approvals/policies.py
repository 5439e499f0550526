"""Approval policies: YAML files in ``workflows/policies/``, parsed into typed objects with errors
that name the file, the line and the path, pinned by their content hash, with location overlays.

A policy ``applies_to`` one kind of record and declares its ``inputs`` (numbers, or words with
their ``values``); its ``rules`` form a decision table: each rule's ``when`` tests some inputs
(a list of words, or a number range ``{from: A, below: B}``) and its ``chain`` is the sequence of
steps that decide. Under ``hit_policy: first`` the first matching rule chooses the chain; under
``collect`` the chains of every matching rule run one after the other. A step names who decides
(``role``, ``user`` or ``group``), a ``quorum`` (``any``, ``all`` or a number), a time limit
(``within``), what happens when it passes (``on_timeout``: notify, add_next, reassign, expire)
and a ``fallback`` (who covers absent approvers, and takes over on ``reassign``).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from careops.yamldoc import Document, DocumentError, PathError, content_hash, mapping, parse_duration

SUBJECTS = ("case", "replenishment", "invoice", "staff_conflict")
HIT_POLICIES = ("first", "collect")
ON_TIMEOUT = ("notify", "add_next", "reassign", "expire")
SEPARATION = ("requester", "amenders", "one_step_each")
WHO = ("role", "user", "group")
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")

PolicyError = DocumentError  # a policy that does not load: file, line, path and what is wrong


@dataclass(frozen=True)
class Input:
    name: str
    kind: str  # "number" or "word"
    values: tuple[str, ...] = ()  # a word's closed list of values (empty: any word)
    minimum: float | None = None  # a number's lowest possible value


@dataclass(frozen=True)
class Range:
    start: float | None  # inclusive
    below: float | None  # exclusive

    def holds(self, value: float) -> bool:
        return (self.start is None or value >= self.start) and (self.below is None or value < self.below)

    def describe(self) -> str:
        if self.start is None:
            return f"below {self.below:g}" if self.below is not None else "any"
        return f"{self.start:g} and above" if self.below is None else f"{self.start:g} to {self.below:g}"


Test = tuple[str, ...] | Range


@dataclass(frozen=True)
class Who:
    kind: str  # role, user, group
    name: str

    def describe(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class Step:
    name: str
    who: Who
    quorum: str | int = "any"
    within_seconds: float = 86400.0
    on_timeout: str = "notify"
    fallback: Who | None = None


@dataclass(frozen=True)
class Rule:
    name: str
    when: dict[str, Test]
    chain: tuple[Step, ...]


@dataclass(frozen=True)
class Overlay:
    name: str
    locations: tuple[str, ...]
    steps: dict[str, dict[str, Any]]  # "rule.step" -> fields that replace the base's


@dataclass(frozen=True)
class Policy:
    name: str
    version: str
    owner: str
    applies_to: str
    description: str
    content_hash: str
    data: dict[str, Any]
    hit_policy: str = "first"
    inputs: dict[str, Input] = field(default_factory=dict)
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    separation: dict[str, bool] = field(default_factory=dict)
    link_hours: float = 48.0
    rules: tuple[Rule, ...] = ()
    overlays: tuple[Overlay, ...] = ()
    overlay: str | None = None  # the overlay an effective policy was made with
    source: str = "<policy>"


def load_text(text: str, source: str = "<policy>") -> Policy:
    """Parse a policy's YAML; PolicyError with the line of what is wrong."""
    return Document(text, source).parse(_policy)


def load_file(path: Path) -> Policy:
    return load_text(path.read_text(encoding="utf-8"), str(path))


def load_directory(directory: Path) -> list[Policy]:
    return [load_file(path) for path in sorted(directory.glob("*.yaml"))]


def _name(raw: dict[str, Any], at: tuple[str | int, ...]) -> str:
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise PathError("a name is lower-case letters, digits, '-' and '_'", (*at, "name"))
    return name


def _policy(data: Any, source: str) -> Policy:
    known = ("name", "version", "owner", "applies_to", "description", "hit_policy", "inputs", "groups",
             "separation", "decision_link_hours", "rules", "overlays")  # fmt: skip
    raw = mapping(data, known, (), "a policy")
    for key in ("version", "owner", "applies_to", "rules"):
        if key not in raw:
            raise PathError(f"{key} is required", ())
    if raw["applies_to"] not in SUBJECTS:
        raise PathError(f"applies_to is one of {', '.join(SUBJECTS)}", ("applies_to",))
    hit = raw.get("hit_policy", "first")
    if hit not in HIT_POLICIES:
        raise PathError(f"hit_policy is {' or '.join(HIT_POLICIES)}", ("hit_policy",))
    inputs = {name: _input(name, spec, ("inputs", name)) for name, spec in (raw.get("inputs") or {}).items()}
    groups = {
        str(name): tuple(str(u) for u in members) for name, members in (raw.get("groups") or {}).items()
    }
    separation = mapping(raw.get("separation") or {}, SEPARATION, ("separation",), "separation")
    if not isinstance(raw["rules"], list) or not raw["rules"]:
        raise PathError("rules is a list of at least one rule", ("rules",))
    rules = tuple(_rule(r, ("rules", i), inputs, groups) for i, r in enumerate(raw["rules"]))
    if len({r.name for r in rules}) != len(rules):
        raise PathError("two rules have the same name", ("rules",))
    overlays = tuple(_overlay(o, ("overlays", i), rules) for i, o in enumerate(raw.get("overlays") or []))
    link_hours = raw.get("decision_link_hours", 48)
    if not isinstance(link_hours, int | float) or not 0 < link_hours <= 24 * 30:
        raise PathError("decision_link_hours is a number of hours, at most 720", ("decision_link_hours",))
    return Policy(
        name=_name(raw, ()),
        version=str(raw["version"]),
        owner=str(raw["owner"]),
        applies_to=str(raw["applies_to"]),
        description=str(raw.get("description", "")),
        content_hash=content_hash(data),
        data=data,
        hit_policy=hit,
        inputs=inputs,
        groups=groups,
        separation={key: bool(separation.get(key, True)) for key in SEPARATION},
        link_hours=float(link_hours),
        rules=rules,
        overlays=overlays,
        source=source,
    )


def _input(name: str, spec: Any, at: tuple[str | int, ...]) -> Input:
    spec = mapping(spec or {}, ("type", "values", "min"), at, "an input")
    kind = spec.get("type", "word")
    if kind not in ("number", "word"):
        raise PathError("an input's type is number or word", (*at, "type"))
    if kind == "number":
        minimum = spec.get("min")
        if minimum is not None and not isinstance(minimum, int | float):
            raise PathError("min is a number", (*at, "min"))
        return Input(name, kind, minimum=None if minimum is None else float(minimum))
    values = spec.get("values") or []
    if not isinstance(values, list):
        raise PathError("values is a list of words", (*at, "values"))
    return Input(name, kind, values=tuple(str(v) for v in values))


def _rule(raw: Any, at: tuple[str | int, ...], inputs: dict[str, Input], groups: dict[str, Any]) -> Rule:
    raw = mapping(raw, ("name", "when", "chain", "description"), at, "a rule")
    when_raw = mapping(raw.get("when") or {}, tuple(inputs), (*at, "when"), "when")
    when = {key: _test(inputs[key], value, (*at, "when", key)) for key, value in when_raw.items()}
    chain_raw = raw.get("chain")
    if not isinstance(chain_raw, list) or not chain_raw:
        raise PathError("a rule's chain is a list of at least one step", (*at, "chain"))
    chain = tuple(_step(s, (*at, "chain", i), groups) for i, s in enumerate(chain_raw))
    if len({s.name for s in chain}) != len(chain):
        raise PathError("two steps of a chain have the same name", (*at, "chain"))
    return Rule(_name(raw, at), when, chain)


def _test(spec: Input, raw: Any, at: tuple[str | int, ...]) -> Test:
    if spec.kind == "number":
        bounds = mapping(raw, ("from", "below"), at, "a number test ({from: A, below: B})")
        start, below = bounds.get("from"), bounds.get("below")
        for key, value in (("from", start), ("below", below)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise PathError(f"{key} is a number", (*at, key))
        if start is not None and below is not None and below <= start:
            raise PathError("below must be more than from", at)
        return Range(None if start is None else float(start), None if below is None else float(below))
    words = tuple(str(v) for v in (raw if isinstance(raw, list) else [raw]))
    unknown = [w for w in words if spec.values and w not in spec.values]
    if unknown:
        raise PathError(
            f"{', '.join(unknown)} not among the values of {spec.name}: {', '.join(spec.values)}", at
        )
    return words


def _who(raw: dict[str, Any], at: tuple[str | int, ...], groups: dict[str, Any]) -> Who:
    named = [kind for kind in WHO if kind in raw]
    if len(named) != 1:
        raise PathError("name exactly one of role, user or group", at)
    kind = named[0]
    if kind == "group" and raw[kind] not in groups:
        raise PathError(f"no group {raw[kind]!r} in the policy's groups", (*at, kind))
    return Who(kind, str(raw[kind]))


def _step(raw: Any, at: tuple[str | int, ...], groups: dict[str, Any]) -> Step:
    raw = mapping(raw, ("name", *WHO, "quorum", "within", "on_timeout", "fallback"), at, "a step")
    quorum = raw.get("quorum", "any")
    if not (
        quorum in ("any", "all") or (isinstance(quorum, int) and not isinstance(quorum, bool) and quorum >= 1)
    ):
        raise PathError("quorum is any, all or a number of approvers (1 or more)", (*at, "quorum"))
    on_timeout = raw.get("on_timeout", "notify")
    if on_timeout not in ON_TIMEOUT:
        raise PathError(f"on_timeout is one of {', '.join(ON_TIMEOUT)}", (*at, "on_timeout"))
    fallback_raw = raw.get("fallback")
    fallback = None
    if fallback_raw is not None:
        fallback = _who(
            mapping(fallback_raw, WHO, (*at, "fallback"), "a fallback"), (*at, "fallback"), groups
        )
    if on_timeout == "reassign" and fallback is None:
        raise PathError("on_timeout: reassign needs a fallback to reassign to", (*at, "fallback"))
    within = parse_duration(raw.get("within", "1d"), (*at, "within")).total_seconds()
    return Step(_name(raw, at), _who(raw, at, groups), quorum, within, on_timeout, fallback)


def _overlay(raw: Any, at: tuple[str | int, ...], rules: tuple[Rule, ...]) -> Overlay:
    raw = mapping(raw, ("name", "locations", "steps"), at, "an overlay")
    locations = raw.get("locations")
    if not isinstance(locations, list) or not locations:
        raise PathError("an overlay names its locations (slugs or group:NAME)", (*at, "locations"))
    steps = raw.get("steps") or {}
    known = {f"{r.name}.{s.name}" for r in rules for s in r.chain}
    for key, fields in steps.items():
        if key not in known:
            raise PathError(
                f"no step {key!r}; steps are RULE.STEP: {', '.join(sorted(known))}", (*at, "steps", key)
            )
        mapping(
            fields,
            ("name", *WHO, "quorum", "within", "on_timeout", "fallback"),
            (*at, "steps", key),
            "a step",
        )
    return Overlay(_name(raw, at), tuple(str(x) for x in locations), dict(steps))


def effective(policy: Policy, slug: str, groups: list[str]) -> Policy:
    """The policy as it applies at a location: the first overlay that covers it, applied."""
    for overlay in policy.overlays:
        if slug in overlay.locations or any(f"group:{g}" in overlay.locations for g in groups):
            data = copy.deepcopy(policy.data)
            for key, fields in overlay.steps.items():
                rule_name, step_name = key.split(".", 1)
                rule = next(r for r in data["rules"] if r["name"] == rule_name)
                step = next(s for s in rule["chain"] if s["name"] == step_name)
                for kind in WHO if any(k in fields for k in WHO) else ():
                    step.pop(kind, None)
                step.update(fields)
            data.pop("overlays", None)
            made = load_text_data(data, policy.source)
            return replace(made, content_hash=policy.content_hash, overlay=overlay.name)
    return policy


def load_text_data(data: dict[str, Any], source: str) -> Policy:
    try:
        return _policy(data, source)
    except PathError as exc:
        raise PolicyError(source, None, exc.path, exc.message) from exc
