"""Policies as data, without a database: loader errors name the line and path; overlays; the
decision-table check finds gaps and shadowed rules, and (hypothesis) a table it passes gives every
input exactly one rule under first-match, while each gap it reports is a real input no rule takes."""

from __future__ import annotations

import textwrap

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from careops.approvals.policies import Policy, PolicyError, effective, load_directory, load_text
from careops.approvals.store import shipped_directory
from careops.approvals.tables import OTHER, NoRule, check, choose, matches

BASE = """
name: t
version: "1"
owner: o
applies_to: replenishment
inputs:
  amount: {type: number, min: 0}
  urgency: {values: [routine, urgent]}
rules:
{rules}
"""


def policy(rules: str) -> Policy:
    return load_text(BASE.replace("{rules}", textwrap.indent(textwrap.dedent(rules), "  ")))


def test_errors_name_the_line_and_the_path() -> None:
    with pytest.raises(PolicyError) as caught:
        policy("""
        - name: a
          when: {amount: {from: 10, below: 5}}
          chain: [{name: s, role: procurement}]
        """)
    assert ":12 rules[0].when.amount: below must be more than from" in str(caught.value)
    with pytest.raises(PolicyError, match=r"rules\[0\]\.when\.urgency: stat not among the values"):
        policy("""
        - name: a
          when: {urgency: stat}
          chain: [{name: s, role: procurement}]
        """)
    with pytest.raises(PolicyError, match="reassign needs a fallback"):
        policy("""
        - name: a
          chain: [{name: s, role: procurement, on_timeout: reassign}]
        """)
    with pytest.raises(PolicyError, match="exactly one of role, user or group"):
        policy("""
        - name: a
          chain: [{name: s, role: procurement, user: bea}]
        """)


def test_the_check_finds_gaps_and_shadowed_rules() -> None:
    found = check(
        policy("""
    - name: small
      when: {amount: {below: 500}}
      chain: [{name: s, role: procurement}]
    - name: small-urgent
      when: {amount: {below: 100}, urgency: urgent}
      chain: [{name: s, role: procurement}]
    """)
    )
    assert [c.describe() for c in found.gaps] == [
        "amount 500 and above, urgency = routine",
        "amount 500 and above, urgency = urgent",
    ]
    assert found.shadowed == ["small-urgent"]
    assert not found.ok and "rule small-urgent never applies" in found.problems()[-1]


def test_every_shipped_policy_passes_its_check() -> None:
    for shipped in load_directory(shipped_directory()):
        assert check(shipped).ok, shipped.name


def test_an_overlay_changes_a_step_at_its_locations_only() -> None:
    [prior] = [p for p in load_directory(shipped_directory()) if p.name == "prior-authorisation"]
    rural = effective(prior, "valley", ["rural"])
    town = effective(prior, "south", ["urban"])
    step = lambda p: next(r for r in p.rules if r.name == "standard").chain[0]  # noqa: E731
    assert (step(rural).within_seconds, step(town).within_seconds) == (8 * 3600, 4 * 3600)
    assert rural.overlay == "rural" and town.overlay is None and rural.content_hash == prior.content_hash


BOUNDS = st.one_of(st.none(), st.sampled_from([0, 100, 500, 1000, 5000]))
WORDS = st.lists(st.sampled_from(["routine", "urgent"]), min_size=1, max_size=2, unique=True)


@st.composite
def tables(draw: st.DrawFn) -> Policy:
    rules = []
    for i in range(draw(st.integers(1, 5))):
        when = {}
        start, below = draw(BOUNDS), draw(BOUNDS)
        if start is not None or below is not None:
            if start is not None and below is not None and below <= start:
                start, below = below, (start if start > below else None)
            when["amount"] = {k: v for k, v in (("from", start), ("below", below)) if v is not None}
        if draw(st.booleans()):
            when["urgency"] = draw(WORDS)
        rules.append({"name": f"r{i}", "when": when, "chain": [{"name": "s", "role": "procurement"}]})
    if draw(st.booleans()):
        rules.append({"name": "otherwise", "chain": [{"name": "s", "role": "finance"}]})

    return load_text(BASE.replace("{rules}", textwrap.indent(yaml.safe_dump(rules), "  ")))


INPUTS = st.fixed_dictionaries(
    {
        "amount": st.one_of(st.integers(0, 10_000), st.floats(0, 10_000)),
        "urgency": st.sampled_from(["routine", "urgent"]),
    }
)


@given(tables(), st.lists(INPUTS, min_size=1, max_size=20))
def test_a_table_without_gaps_gives_every_input_exactly_one_rule(
    table: Policy, inputs: list[dict[str, object]]
) -> None:
    report = check(table)
    for facts in inputs:
        if report.ok:
            assert len(choose(table, facts)) == 1
    for cell in report.gaps:
        assert not any(matches(rule, cell.values) for rule in table.rules)
        with pytest.raises(NoRule):
            choose(table, cell.values)
    assert OTHER not in {c.values.get("urgency") for c in report.gaps}  # urgency's values are closed
