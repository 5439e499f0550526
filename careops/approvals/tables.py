"""Decision tables: which rules of a policy match a request's facts, and what a table misses.

``check`` cuts every input's domain into cells (a number at each bound any rule names; a word into
its declared values, or the values rules name plus "any other"), tests every combination, and
reports the combinations no rule covers (gaps), those several rules cover (overlaps) and, under
first-match, rules that never win (shadowed). A table without gaps gives every possible request
exactly one rule under first-match.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from careops.approvals.policies import Input, Policy, Range, Rule, Test

OTHER = "(any other)"
MAX_CELLS = 200_000


class NoRule(LookupError):
    """No rule of the policy matches the facts."""


def holds(test: Test, value: Any) -> bool:
    if value is None:
        return False
    if isinstance(test, Range):
        return isinstance(value, int | float) and not isinstance(value, bool) and test.holds(float(value))
    return str(value) in test


def matches(rule: Rule, facts: Mapping[str, Any]) -> bool:
    return all(holds(test, facts.get(name)) for name, test in rule.when.items())


def choose(policy: Policy, facts: Mapping[str, Any]) -> list[Rule]:
    """The rules that decide: the first match, or every match under ``collect``; NoRule if none."""
    found = [rule for rule in policy.rules if matches(rule, facts)]
    if not found:
        shown = ", ".join(f"{name}={facts.get(name)!r}" for name in policy.inputs)
        raise NoRule(f"no rule of the policy {policy.name} covers {shown}")
    return found[:1] if policy.hit_policy == "first" else found


@dataclass(frozen=True)
class Cell:
    """One combination of input values, with a value to test and how to say it."""

    values: dict[str, Any]
    text: dict[str, str]

    def describe(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.text.items()) or "every request"


@dataclass(frozen=True)
class Report:
    gaps: list[Cell]
    overlaps: list[tuple[Cell, list[str]]]
    shadowed: list[str]
    cells: int

    @property
    def ok(self) -> bool:
        return not self.gaps and not self.shadowed

    def problems(self, limit: int = 10) -> list[str]:
        found = [f"no rule covers {cell.describe()}" for cell in self.gaps[:limit]]
        if len(self.gaps) > limit:
            found.append(f"… and {len(self.gaps) - limit} more uncovered combinations")
        found += [f"rule {name} never applies: rules above it cover all it covers" for name in self.shadowed]
        return found


def _number_cells(spec: Input, rules: tuple[Rule, ...]) -> list[tuple[float, str]]:
    bounds = sorted(
        {
            b
            for r in rules
            if isinstance(t := r.when.get(spec.name), Range)
            for b in (t.start, t.below)
            if b is not None
        }
        | ({spec.minimum} if spec.minimum is not None else set())
    )
    bounds = [b for b in bounds if spec.minimum is None or b >= spec.minimum]
    cells: list[tuple[float, str]] = []
    if spec.minimum is None:
        first = bounds[0] if bounds else 0.0
        cells.append((first - 1.0, Range(None, first).describe() if bounds else "any"))
    for low, high in zip(bounds, [*bounds[1:], None], strict=True):
        cells.append((low, Range(low, high).describe()))
    return cells


def _word_cells(spec: Input, rules: tuple[Rule, ...]) -> list[tuple[str, str]]:
    if spec.values:
        return [(v, f"= {v}") for v in spec.values]
    named = sorted({w for r in rules if isinstance(t := r.when.get(spec.name), tuple) for w in t})
    return [(v, f"= {v}") for v in named] + [(OTHER, f"= {OTHER}")]


def cells(policy: Policy) -> list[Cell]:
    axes = []
    for spec in policy.inputs.values():
        cut: list[tuple[Any, str]] = (
            list(_number_cells(spec, policy.rules))
            if spec.kind == "number"
            else list(_word_cells(spec, policy.rules))
        )
        axes.append([(spec.name, value, text) for value, text in cut])
    size = 1
    for axis in axes:
        size *= len(axis)
    if size > MAX_CELLS:
        raise ValueError(f"the table has {size} combinations of inputs, more than {MAX_CELLS} to check")
    return [
        Cell({n: v for n, v, _ in combo}, {n: t for n, _, t in combo}) for combo in itertools.product(*axes)
    ]


def check(policy: Policy) -> Report:
    gaps: list[Cell] = []
    overlaps: list[tuple[Cell, list[str]]] = []
    winners: set[str] = set()
    every = cells(policy)
    for cell in every:
        hit = [rule.name for rule in policy.rules if matches(rule, cell.values)]
        if not hit:
            gaps.append(cell)
            continue
        winners.update(hit[:1] if policy.hit_policy == "first" else hit)
        if len(hit) > 1:
            overlaps.append((cell, hit))
    shadowed = [r.name for r in policy.rules if r.name not in winners] if policy.hit_policy == "first" else []
    return Report(gaps, overlaps, shadowed, len(every))
