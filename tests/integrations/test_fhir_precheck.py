"""fhir_precheck against fhir.resources itself: whatever the fast check accepts, the models accept.

The check is only worth having if it is sound (never accepts what the models refuse) and if it
answers for the resources careops really gets (else every request pays for both).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bench.messages import fhir_bundles
from careops.integrations.inbound import fhir_precheck, fhir_r4
from careops.integrations.inbound.fhir_precheck import accepts

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "fhir"


def models_accept(resource: dict[str, Any]) -> bool:
    try:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    except (ValidationError, AttributeError, TypeError):
        return False
    return True


def resources_in(document: Any) -> list[dict[str, Any]]:
    """Every resource in a document, nested ones (Bundle entries, contained) included."""
    found = []
    if isinstance(document, dict):
        if isinstance(document.get("resourceType"), str):
            found.append(document)
        for value in document.values():
            found += resources_in(value)
    elif isinstance(document, list):
        for value in document:
            found += resources_in(value)
    return found


SAMPLE_RESOURCES = [
    resource
    for path in sorted(SAMPLES.rglob("*.json"))
    for resource in resources_in(json.loads(path.read_bytes().decode("utf-8-sig")))
]
BENCH_RESOURCES = [
    entry["resource"] for bundle in fhir_bundles(3, 11) for entry in json.loads(bundle)["entry"]
]


def test_the_samples_hold_resources_of_many_types() -> None:
    assert len({r["resourceType"] for r in SAMPLE_RESOURCES}) >= 15
    assert not all(models_accept(r) for r in SAMPLE_RESOURCES)  # the invalid ones are there too


def test_what_the_check_accepts_the_models_accept_and_it_answers_for_valid_resources() -> None:
    wrong = []
    for resource in SAMPLE_RESOURCES + BENCH_RESOURCES:
        nested = resources_in({k: v for k, v in resource.items() if k != "resourceType"})
        # A Bundle with resources or a resource with contained ones is left to the models.
        expected = models_accept(resource) and not nested
        if accepts(resource) != expected:
            wrong.append((resource["resourceType"], resource.get("id"), expected))
    assert wrong == []


def test_the_bundle_shell_and_a_referral_bundles_resources_are_checked_fast() -> None:
    bundle = json.loads(fhir_bundles(1, 5)[0])
    shell = {**bundle, "entry": [{k: v for k, v in e.items() if k != "resource"} for e in bundle["entry"]]}
    assert accepts(shell)
    assert all(accepts(entry["resource"]) for entry in bundle["entry"])


def _bundle_accepted_by_the_models(bundle: dict[str, Any]) -> bool:
    """What ``accepts_bundle`` stands for: the models accept the shell and each entry's resource."""
    entries = bundle.get("entry") or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        return models_accept(bundle)
    resources = [e["resource"] for e in entries if isinstance(e.get("resource"), dict)]
    shell = {
        **bundle,
        "entry": [
            {k: v for k, v in e.items() if k != "resource" or not isinstance(v, dict)} for e in entries
        ],
    }
    if "entry" not in bundle:
        del shell["entry"]
    return models_accept(shell) and all(
        isinstance(r.get("resourceType"), str) and models_accept(r) for r in resources
    )


SAMPLE_BUNDLES = [
    document
    for path in sorted(SAMPLES.rglob("*.json"))
    if (document := json.loads(path.read_bytes().decode("utf-8-sig"))).get("resourceType") == "Bundle"
    and all(isinstance(e, dict) for e in document.get("entry") or [])
]


def test_a_bundle_is_checked_with_its_resources_in_one_pass_as_the_models_would() -> None:
    """``accepts_bundle`` of a valid referral Bundle; never of one the models refuse, nor of one
    holding a type it was not given (it has no model for it), nor of an invalid resource in it."""
    types = fhir_r4.ACCEPTED_TYPES
    bench = [json.loads(raw) for raw in fhir_bundles(5, 13)]
    assert all(fhir_precheck.accepts_bundle(bundle, types) for bundle in bench)
    assert len(SAMPLE_BUNDLES) >= 3
    for bundle in SAMPLE_BUNDLES:
        if fhir_precheck.accepts_bundle(bundle, types):
            assert _bundle_accepted_by_the_models(bundle)
            assert all(e["resource"]["resourceType"] in types for e in bundle["entry"] if "resource" in e)
    assert not fhir_precheck.accepts_bundle(bench[0], frozenset(types - {"Coverage"}))
    broken = copy.deepcopy(bench[1])
    broken["entry"][7]["resource"]["status"] = 5
    assert not fhir_precheck.accepts_bundle(broken, types) and not _bundle_accepted_by_the_models(broken)
    untyped = copy.deepcopy(bench[2])
    del untyped["entry"][0]["resource"]["resourceType"]
    assert not fhir_precheck.accepts_bundle(untyped, types)


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False),
    st.sampled_from(["", " ", "x y", "1.5", "[1]", "2020-13-01", "1980-02-30", "1980-04", "10:61:00"]),
    st.sampled_from(["1980-04-12T10:00:00", "2020-01-01T00:00:00Z", "urn:uuid:x", "AAAA", "==", "#"]),
    st.text(max_size=5),
    st.just([]),
    st.just([None]),
    st.just({}),
    st.just({"extension": []}),
    st.just({"url": "http://x", "valueString": "y", "valueBoolean": True}),
    st.just([{"reference": 1}]),
)
_KEYS = st.sampled_from(["bogus", "_status", "_birthDate", "valueString", "id", "extension", "resourceType"])


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutants(draw: st.DrawFn, sources: list[dict[str, Any]]) -> dict[str, Any]:
    """One of ``sources`` with up to three elements replaced, removed or added."""
    resource = copy.deepcopy(draw(st.sampled_from(sources)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(resource) if p != ("resourceType",)]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = resource
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "replace":
            parent[path[-1]] = copy.deepcopy(draw(_VALUES))
        elif action == "remove":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(_KEYS)] = copy.deepcopy(draw(_VALUES))
    return resource


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutants(BENCH_RESOURCES + SAMPLE_RESOURCES))
def test_a_mutated_resource_the_check_accepts_is_one_the_models_accept(resource: dict[str, Any]) -> None:
    if accepts(resource):
        assert models_accept(resource)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutants([json.loads(raw) for raw in fhir_bundles(2, 17)]))
def test_a_mutated_bundle_the_check_accepts_is_one_the_models_accept(bundle: dict[str, Any]) -> None:
    if fhir_precheck.accepts_bundle(bundle, fhir_r4.ACCEPTED_TYPES):
        assert _bundle_accepted_by_the_models(bundle)


def test_validate_reports_the_models_errors_when_the_check_refuses() -> None:
    resource = copy.deepcopy(BENCH_RESOURCES[7])
    assert resource["resourceType"] == "ServiceRequest"
    del resource["subject"]
    with pytest.raises(fhir_r4.FhirError) as raised:
        fhir_r4.validate(resource, "ServiceRequest")
    assert raised.value.expression == "ServiceRequest.subject"


def test_a_shape_the_models_trip_over_is_a_400_not_a_crash() -> None:
    # fhir.resources raises AttributeError (not a ValidationError) for an _element given as a
    # JSON string of a number; it is an invalid resource all the same.
    resource = {"resourceType": "Patient", "_gender": "1.5"}
    with pytest.raises(AttributeError):
        get_fhir_model_class("Patient").model_validate(resource)
    with pytest.raises(fhir_r4.FhirError) as raised:
        fhir_r4.validate(resource, "Patient")
    assert (raised.value.status, raised.value.code, raised.value.expression) == (400, "invalid", "Patient")


def test_a_model_the_check_cannot_compile_is_left_to_the_models(monkeypatch: pytest.MonkeyPatch) -> None:
    patient = next(r for r in BENCH_RESOURCES if r["resourceType"] == "Patient")

    def unreadable(model: type) -> None:
        raise RuntimeError(f"cannot read {model.__name__}")

    fhir_precheck._validator.cache_clear()
    fhir_precheck._COMPILER.reset()
    monkeypatch.setattr(fhir_precheck, "_rules", unreadable)
    assert not accepts(patient)
    assert fhir_precheck._COMPILER.definitions == {}  # no placeholder left to accept anything
    fhir_r4.validate(patient, "Patient")  # the models still say it is valid
    monkeypatch.undo()
    fhir_precheck._validator.cache_clear()
    assert accepts(patient)


def test_unknown_resource_types_are_refused_without_being_remembered() -> None:
    accepts({"resourceType": "Patient"})
    before = fhir_precheck._validator.cache_info().currsize
    assert not any(accepts({"resourceType": f"Nonsense{i}"}) for i in range(200))
    assert fhir_precheck._validator.cache_info().currsize == before
