"""Templates, conditions, overlays and tooling without a database: the condition language's
properties (hypothesis), errors that name the file and line, overlays, the cycle check, the
shipped templates valid with a passing template test each, and every trigger and action documented."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from careops.automation.actions import ACTIONS
from careops.automation.conditions import All, AnyOf, Facts, Not, evaluate, parse
from careops.automation.store import shipped_directory
from careops.automation.templates import (
    TRIGGER_KINDS,
    TemplateError,
    content_hash,
    effective,
    load_directory,
    load_text,
)
from careops.automation.tooling import cycles, diff_text, run_template_tests, validate

NOW = dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "automation.md"
values = st.one_of(st.integers(-5, 5), st.sampled_from(["a", "b", "c"]), st.none())
leaf = st.builds(lambda key, op, v: {f"record.{key}": {op: v}}, st.sampled_from("xyz"),
                 st.sampled_from(["eq", "ne", "lt", "ge"]), st.integers(-5, 5))  # fmt: skip
conditions = st.recursive(leaf, lambda inner: st.one_of(
    st.builds(lambda xs: {"all": xs}, st.lists(inner, max_size=3)),
    st.builds(lambda xs: {"any": xs}, st.lists(inner, max_size=3)),
    st.builds(lambda x: {"not": x}, inner),
), max_leaves=8)  # fmt: skip
records = st.fixed_dictionaries({k: values for k in "xyz"})


def facts(record: dict[str, object]) -> Facts:
    return Facts({"record": record}, NOW)


@given(conditions, records)
def test_not_not_is_the_condition_and_de_morgan_holds(
    raw: dict[str, object], record: dict[str, object]
) -> None:
    condition, f = parse(raw), facts(record)
    assert evaluate(Not(Not(condition)), f) == evaluate(condition, f)
    assert evaluate(Not(AnyOf((condition, condition))), f) == evaluate(All((Not(condition),)), f)


@given(st.integers(-10, 10), st.integers(-10, 10), st.integers(-10, 10))
def test_between_is_ge_low_and_le_high(value: int, low: int, high: int) -> None:
    f = facts({"v": value})
    between = evaluate(parse({"record.v": {"between": [low, high]}}), f)
    assert between == evaluate(parse({"all": [{"record.v": {"ge": low}}, {"record.v": {"le": high}}]}), f)


@given(values, st.lists(values, max_size=4))
def test_in_is_any_equal_and_not_in_its_negation(value: object, options: list[object]) -> None:
    f = facts({"v": value})
    is_in = evaluate(parse({"record.v": {"in": options}}), f)
    assert is_in == any(evaluate(parse({"record.v": o}), f) for o in options)
    assert evaluate(parse({"record.v": {"not_in": options}}), f) is not is_in


def test_moments_compare_with_date_arithmetic_and_missing_values_never_hold() -> None:
    f = Facts({"record": {"at": (NOW - dt.timedelta(hours=5)).isoformat()}, "event": {}}, NOW)
    assert evaluate(parse({"record.at": {"before": "now - 4h"}}), f)
    assert not evaluate(parse({"record.at": {"before": "now - 6h"}}), f)
    assert not evaluate(parse({"record.gone": {"gt": 1}}), f)
    assert evaluate(parse({"record.gone": {"exists": False}}), f)
    looked = Facts(
        {"case": {"payer_id": "P1"}}, NOW, lambda t, k, fld: {"P1": True}.get(k) if t == "payer" else None
    )
    assert evaluate(
        parse({"lookup": {"table": "payer", "key": "case.payer_id", "field": "x"}, "eq": True}), looked
    )


BAD = """name: broken
version: "1"
owner: x
run_as: scheduler
rules:
  - name: r
    on: {event: case.created}
    when:
      all:
        - record.status: {eqq: new}
    steps: [{name: s, action: create_task, with: {kind: k}}]
"""


def test_errors_name_the_file_the_line_and_the_path() -> None:
    with pytest.raises(TemplateError) as caught:
        load_text(BAD, "workflows/broken.yaml")
    assert str(caught.value).startswith(
        "workflows/broken.yaml:10 rules[0].when.all[0].record.status.eqq: unknown operator"
    )
    with pytest.raises(TemplateError, match="unknown action 'mail'"):
        load_text(BAD.replace("eqq", "eq").replace("create_task", "mail"), "t.yaml")
    with pytest.raises(TemplateError, match="create_task needs kind"):
        load_text(BAD.replace("eqq", "eq").replace("with: {kind: k}", "with: {}"), "t.yaml")


def test_comments_do_not_make_a_version_and_overlays_change_the_effective_workflow() -> None:
    [triage] = [t for t in load_directory(shipped_directory()) if t.name == "intake-triage-deadline"]
    text = (shipped_directory() / "intake-triage-deadline.yaml").read_text()
    assert load_text("# a comment\n" + text).content_hash == triage.content_hash == content_hash(triage.data)
    rural = effective(triage, "south", ["home-care"])
    assert rural.overlay == "home-care-sites" and rural.rules[0].trigger.delay_seconds == 8 * 3600
    assert effective(triage, "central", ["diagnostics"]).rules[0].trigger.delay_seconds == 4 * 3600
    assert "+  triage_hours: 8" in diff_text(
        text, text.replace("triage_hours: 4", "triage_hours: 8"), "a", "b"
    )


def test_a_cycle_without_a_guard_is_refused_and_a_guarded_one_allowed() -> None:
    loop = """name: loop
version: "1"
owner: x
run_as: intake_coordinator
rules:
  - name: again
    on: {event: task.created}
    steps: [{name: t, action: create_task, with: {kind: k}}]
"""
    assert cycles([load_text(loop)]) == ["rules trigger each other without a guard: loop/again -> loop/again"]
    guarded = loop.replace("    steps:", "    when: {event.payload.kind: first}\n    steps:")
    assert cycles([load_text(guarded)]) == []
    assert any(
        "lacks billing:approve" in p
        for p in validate([load_text(loop.replace("create_task, with: {kind: k}", "request_invoice"))])
    )


def test_the_shipped_templates_validate_and_each_has_a_passing_template_test() -> None:
    templates = load_directory(shipped_directory())
    assert validate(templates) == []
    outcomes = run_template_tests(shipped_directory(), templates)
    assert [(o.name, o.failures) for o in outcomes if o.failures] == []
    assert {Path(o.file).stem for o in outcomes} == {t.name for t in templates}


def test_a_template_test_with_a_wrong_expectation_fails(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    text = (shipped_directory() / "stock-replenishment.yaml").read_text()
    (tmp_path / "stock-replenishment.yaml").write_text(text)
    (tmp_path / "tests" / "wrong.yaml").write_text(
        "workflow: stock-replenishment\ncases:\n  - name: wrong\n    event: {type: stock.below_threshold,"
        " payload: {item: X, on_hand: 0, minimum: 10}}\n    expect:\n      actions:\n"
        "        - {rule: replenish, step: draft, with: {urgency: routine}}\n"
    )
    [outcome] = run_template_tests(tmp_path, load_directory(tmp_path))
    assert outcome.failures == ["replenish.draft urgency: 'urgent', expected 'routine'"]


def test_every_trigger_and_server_action_is_documented() -> None:
    page = DOCS.read_text()
    assert [t for t in TRIGGER_KINDS if f"| `{t}` |" not in page] == []
    assert [a for a in ACTIONS if f"| `{a}` | `{ACTIONS[a].permission}` |" not in page] == []
