"""What ``careops workflows`` offers besides running: validation (references, permissions,
reachability, rule cycles without a guard), the Mermaid graph of a workflow, a dry run of an
event through the active workflows (no side effects), template tests in YAML and a readable
difference between two versions."""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from careops.approvals.policies import load_directory as load_policies
from careops.approvals.store import shipped_directory as policies_directory
from careops.automation.actions import ACTIONS
from careops.automation.conditions import TRUE, Facts, evaluate, referenced_paths
from careops.automation.rendering import RenderError, render_value
from careops.automation.templates import Template, TemplateError, effective
from careops.domain.events import EventType
from careops.governance.permissions import SHIPPED_ROLES, grants
from careops.yamldoc import load_yaml

QUEUES = (
    "intake",
    "triage",
    "scheduling",
    "authorisation",
    "results",
    "finance",
    "inventory",
    "staffing",
    "patients",
    "master_data",
    "referral_updates",
    "approvals",
    "automation",
    "integration",
)
_EVENTS = {str(e) for e in EventType}


@cache
def _shipped_policies() -> frozenset[str]:
    """The names of the policies in workflows/policies (read once, when a template is validated)."""
    return frozenset(p.name for p in load_policies(policies_directory()))


def validate(templates: list[Template], roles: dict[str, frozenset[str]] | None = None) -> list[str]:
    """Every problem found across the templates (empty: they may be activated)."""
    roles = roles if roles is not None else {name: spec.permissions for name, spec in SHIPPED_ROLES.items()}
    names = {t.name for t in templates}
    problems: list[str] = []
    if len(names) != len(templates):
        problems.append("two templates have the same name")
    for template in templates:
        where = f"{template.source} ({template.name})"
        permissions = roles.get(template.run_as)
        if permissions is None:
            problems.append(f"{where}: run_as {template.run_as!r} is not a role")
        for rule in template.rules:
            problems += _rule_problems(where, template, rule, permissions, names, templates)
    problems += cycles(templates)
    return problems


def _rule_problems(
    where: str,
    template: Template,
    rule: Any,
    permissions: frozenset[str] | None,
    names: set[str],
    templates: list[Template],
) -> list[str]:
    found = []
    at = f"{where} rule {rule.name}"
    if rule.trigger.event is not None and rule.trigger.event not in _EVENTS:
        found.append(f"{at}: no event {rule.trigger.event!r} in the catalogue")
    roots = {path.split(".")[0] for path in referenced_paths(rule.when)}
    if rule.trigger.kind == "schedule" and roots & {"event", "record", "case"}:
        found.append(f"{at}: a scheduled rule has no event or record; its condition can never read them")
    for step in rule.steps:
        spec = ACTIONS[step.action]
        if permissions is not None and not grants(permissions, spec.permission):
            found.append(
                f"{at} step {step.name}: {template.run_as} lacks {spec.permission} for {step.action}"
            )
        queue = step.args.get("queue")
        if isinstance(queue, str) and "{{" not in queue and queue not in QUEUES:
            found.append(f"{at} step {step.name}: no queue {queue!r}; queues: {', '.join(QUEUES)}")
        awaited = step.args.get("event")
        if step.action == "wait" and awaited is not None and awaited not in _EVENTS:
            found.append(f"{at} step {step.name}: no event {awaited!r} to wait for")
        policy = step.args.get("policy")
        if (
            step.action == "request_approval"
            and isinstance(policy, str)
            and policy not in _shipped_policies()
        ):
            found.append(f"{at} step {step.name}: no approval policy {policy!r} in workflows/policies")
        if step.action == "start_workflow":
            target = next((t for t in templates if t.name == step.args.get("workflow")), None)
            if target is None or not any(r.name == step.args.get("rule") for r in target.rules):
                wanted = f"{step.args.get('workflow')}/{step.args.get('rule')}"
                found.append(f"{at} step {step.name}: no workflow rule {wanted}")
    return found


def cycles(templates: list[Template]) -> list[str]:
    """Chains of rules that trigger each other with neither a condition nor a rate limit on any
    of them: the engine's depth limit would stop them, but only after the damage."""
    rules = [(t, r) for t in templates for r in t.rules]

    def key(t: Template, r: Any) -> str:
        return f"{t.name}/{r.name}"

    edges: dict[str, list[str]] = {key(t, r): [] for t, r in rules}
    for t, r in rules:
        written = {e for s in r.steps for e in ACTIONS[s.action].writes}
        for t2, r2 in rules:
            if r2.trigger.event in written and r2.trigger.kind in ("event", "change", "after", "before"):
                edges[key(t, r)].append(key(t2, r2))
    guarded = {key(t, r) for t, r in rules if r.when != TRUE or r.rate_limit is not None}
    found, seen = [], set()
    for start in edges:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in edges[node]:
                if nxt == start:
                    cycle = frozenset(path)
                    if cycle not in seen and not cycle & guarded:
                        seen.add(cycle)
                        found.append(
                            f"rules trigger each other without a guard: {' -> '.join([*path, start])}"
                        )
                elif nxt not in path and len(path) < 8:
                    stack.append((nxt, [*path, nxt]))
    return found


def graph(template: Template) -> str:
    """A Mermaid flowchart: each rule's trigger, condition and steps (waits as dotted edges)."""
    lines = [
        "flowchart TD",
        f'  title["{template.name} v{template.version}'
        + (f" ({template.overlay})" if template.overlay else "")
        + '"]',
    ]
    for i, rule in enumerate(template.rules):
        trigger = f"r{i}t"
        lines.append(f'  {trigger}(["{rule.trigger.describe()}"])')
        previous = trigger
        if rule.when != TRUE:
            lines.append(f'  r{i}c{{"{rule.name}: when {_short(rule.raw_when)}"}}')
            lines.append(f"  {previous} --> r{i}c")
            previous = f"r{i}c"
        for j, step in enumerate(rule.steps):
            node = f"r{i}s{j}"
            lines.append(f'  {node}["{step.name}: {step.action}"]')
            arrow = "-.->" if j and rule.steps[j - 1].action == "wait" else "-->"
            lines.append(f"  {previous} {arrow} {node}")
            previous = node
    return "\n".join(lines) + "\n"


def _short(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.replace('"', "'")[:80]


# --- dry runs and template tests --------------------------------------------------------------


@dataclass
class Planned:
    """What a rule would do for an event: fire now, start a timer, or not fire (and why)."""

    workflow: str
    rule: str
    outcome: str  # fires, timer, condition_false, trigger_mismatch
    steps: list[dict[str, Any]] = field(default_factory=list)


def plan(
    templates: Iterable[Template], event: dict[str, Any], facts: Facts, slug: str | None, groups: list[str]
) -> list[Planned]:
    """The rules ``event`` would start, with their steps' rendered arguments; nothing is changed."""
    found = []
    for base in templates:
        template = effective(base, slug, groups) if slug else base
        if slug and not base.covers(slug, groups):
            continue
        scoped = Facts({**facts.values, "params": template.parameters}, facts.now, facts.lookup)
        for rule in template.rules:
            if rule.trigger.event != event.get("type"):
                continue
            if rule.trigger.kind in ("after", "before"):
                found.append(Planned(template.name, rule.name, "timer"))
                continue
            payload = event.get("payload") or {}
            if rule.trigger.kind == "change" and not (
                rule.trigger.field_from in (None, payload.get("from"))
                and rule.trigger.field_to in (None, payload.get("to"))
            ):
                found.append(Planned(template.name, rule.name, "trigger_mismatch"))
                continue
            if not evaluate(rule.when, scoped):
                found.append(Planned(template.name, rule.name, "condition_false"))
                continue
            steps = []
            for step in rule.steps:
                try:
                    rendered = render_value(step.args, dict(scoped.values))
                except RenderError as exc:
                    rendered = {"error": str(exc)}
                steps.append({"step": step.name, "action": step.action, "with": rendered})
            found.append(Planned(template.name, rule.name, "fires", steps))
    return found


@dataclass
class TestOutcome:
    file: str
    name: str
    failures: list[str]


def run_template_tests(directory: Path, templates: list[Template]) -> list[TestOutcome]:
    """Every case of every ``tests/*.yaml`` under ``directory``: given an event and records (as
    facts, no database), the rules that fire and the actions they would run."""
    by_name = {t.name: t for t in templates}
    outcomes = []
    for path in sorted((directory / "tests").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        template = by_name.get(spec.get("workflow", ""))
        for case in spec.get("cases") or []:
            name = str(case.get("name", "unnamed"))
            if template is None:
                outcomes.append(TestOutcome(str(path), name, [f"no template {spec.get('workflow')!r}"]))
                continue
            outcomes.append(TestOutcome(str(path), name, _check_case(template, case)))
    return outcomes


def _check_case(template: Template, case: dict[str, Any]) -> list[str]:
    event = dict(case.get("event") or {})
    now = dt.datetime.fromisoformat(str(case.get("now", "2026-01-05T09:00:00+00:00")))
    values = {"event": event, **(case.get("facts") or {})}
    lookups = case.get("lookups") or {}
    facts = Facts(values, now, lambda table, key, field: lookups.get(f"{table}.{key}.{field}"))
    planned = plan([template], event, facts, case.get("location"), list(case.get("groups") or []))
    expect = case.get("expect") or {}
    failures = []
    fired = sorted(p.rule for p in planned if p.outcome == "fires")
    if "fires" in expect and fired != sorted(expect["fires"]):
        failures.append(f"fires {fired}, expected {sorted(expect['fires'])}")
    timers = sorted(p.rule for p in planned if p.outcome == "timer")
    if "timers" in expect and timers != sorted(expect["timers"]):
        failures.append(f"starts timers {timers}, expected {sorted(expect['timers'])}")
    done = [(p.rule, s) for p in planned for s in p.steps]
    for wanted in expect.get("actions") or []:
        match = [
            s
            for rule, s in done
            if rule == wanted.get("rule", rule)
            and s["step"] == wanted.get("step", s["step"])
            and s["action"] == wanted.get("action", s["action"])
        ]
        if not match:
            failures.append(f"no step like {wanted}")
            continue
        for key, value in (wanted.get("with") or {}).items():
            got = match[0]["with"].get(key)
            if str(got) != str(value):
                failures.append(
                    f"{wanted.get('rule')}.{wanted.get('step')} {key}: {got!r}, expected {value!r}"
                )
    return failures


def diff_text(before: str, after: str, before_label: str, after_label: str) -> str:
    """A unified difference of two templates' data (canonical YAML: order and comments aside)."""

    def canonical(text: str) -> list[str]:
        try:
            data = load_yaml(text)
        except yaml.YAMLError as exc:
            raise TemplateError(before_label, None, (), f"not YAML: {exc}") from exc
        return yaml.safe_dump(data, sort_keys=True, width=100).splitlines(keepends=True)

    return "".join(difflib.unified_diff(canonical(before), canonical(after), before_label, after_label))


def effective_text(template: Template, slug: str, groups: list[str]) -> str:
    return yaml.safe_dump(effective(template, slug, groups).data, sort_keys=True, width=100)
