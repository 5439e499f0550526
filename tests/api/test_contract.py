"""The OpenAPI document is the contract: schemathesis (every check; the examples, coverage,
fuzzing and stateful phases) against `careops serve` on SQLite and PostgreSQL finds no answer the
document does not declare, no 5xx, no schema-valid request refused and no invalid one taken.

In CI the seed is fixed (a run judges the change); PostgreSQL, the stricter database (column
lengths, types), draws 25 examples an operation and SQLite 10 (the suite's time limit);
``pytest --deep`` draws 300 on each from a random seed. What is allowed beyond schemathesis's
defaults is in contract/schemathesis.toml, each with its reason.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from careops.api.app import OPEN_ROUTES, create_app
from careops.api.contract import FHIR_JSON, FHIR_PREFIX, PROBLEM_JSON
from careops.settings import Settings
from tests.conftest import referral
from tests.e2e.test_crash_recovery import CAREOPS, cli, free_port, wait_for_health

CONTRACT = Path(__file__).parent / "contract"
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
EMAIL = Path(__file__).parents[1] / "data" / "email" / "mail_test_2.eml"


EXAMPLES = {"postgresql+psycopg": "15", "sqlite": "10"}  # an operation, in CI (--deep: 300)


@pytest.mark.slow
def test_schemathesis_finds_no_failure(
    database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    deep = request.config.getoption("--deep")
    env = {
        **os.environ,
        "CAREOPS_DATABASE_URL": database_url,
        "CAREOPS_API_REQUESTS_PER_MINUTE_PER_ADDRESS": "0",  # schemathesis sends thousands a minute
        "CAREOPS_API_REQUESTS_PER_MINUTE_PER_TOKEN": "0",
    }
    cli(env, "migrate")
    cli(env, "seed", "--demo")
    token = cli(env, "token", "create", "--name", "contract", "--all-scopes")
    secret = cli(env, "connector", "create", "contract-partner", "--direction", "inbound")
    cli(env, "intake", "eml", str(EMAIL))  # an intake item with documents, for the links to reach
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [CAREOPS, "serve", "--port", str(port), "--workers", "1"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            wait_for_health(base)
            _records_to_walk(base, token)
            seed = random.randrange(2**31) if deep else 20261207
            run = subprocess.run(
                [SCHEMATHESIS, "--config-file", str(CONTRACT / "schemathesis.toml"), "run",
                 f"{base}/openapi.json", "--header", f"Authorization: Bearer {token}",
                 "--max-examples", "300" if deep else EXAMPLES[database_url.split(":")[0]],
                 "--seed", str(seed), "--no-color"],
                env={**env, "SCHEMATHESIS_HOOKS": "tests.api.contract.hooks",
                     "CAREOPS_CONTRACT_CONNECTOR": "contract-partner", "CAREOPS_CONTRACT_SECRET": secret,
                     "PYTHONPATH": str(Path(__file__).parents[2])},
                capture_output=True, text=True, timeout=900, check=False, cwd=tmp_path,
            )  # fmt: skip
            healthy = httpx.get(f"{base}/readyz", timeout=10).status_code
            paths = httpx.get(f"{base}/openapi.json", timeout=10).json()["paths"]
            operations = sum(len(methods) for methods in paths.values())
        finally:
            server.terminate()
            server.wait(30)
    report = run.stdout[-20_000:]
    assert run.returncode == 0, f"seed {seed}:\n{report}"
    assert f"Tested: {operations}" in report, report  # every operation reached, none skipped
    assert all(f"✅ {phase}" in report for phase in ("Examples", "Coverage", "Fuzzing", "Stateful")), report
    assert healthy == 200
    assert "request.unexpected_error" not in log_path.read_text()


def _records_to_walk(base: str, token: str) -> None:
    """A case, an exception item and a quarantined payload, so that lists are not empty."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as api:
        assert api.post("/api/v1/referrals", json=referral()).status_code == 201
        assert api.post("/api/v1/referrals", json=referral(service_code="NO-SUCH-SCAN")).status_code == 202
        broken = api.post(
            "/api/v1/referrals", content=b'{"patient": ', headers={"Content-Type": "application/json"}
        )
        assert broken.status_code == 422


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path_factory.mktemp('doc')}/c.db"))
    return app.openapi()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in document["paths"].items() for method, op in ops.items()]


def test_every_operation_declares_its_security_and_its_errors(document: dict[str, Any]) -> None:
    for path, method, operation in _operations(document):
        where = f"{method.upper()} {path}"
        if path in OPEN_ROUTES:
            assert operation["security"] == [], where
            continue
        assert operation["security"], where
        responses = operation["responses"]
        assert "401" in responses and "429" in responses, where
        if "{" in path:
            assert "404" in responses, where
        media = FHIR_JSON if path.startswith(FHIR_PREFIX) else PROBLEM_JSON
        for status, answer in responses.items():
            if status.startswith("4") and path != "/api/v1/hl7":
                assert media in answer["content"], (where, status)


def test_links_name_operations_that_exist_with_their_parameters(document: dict[str, Any]) -> None:
    by_id = {op["operationId"]: (path, op) for path, _, op in _operations(document)}
    links = [
        link
        for _, _, op in _operations(document)
        for answer in op["responses"].values()
        for link in answer.get("links", {}).values()
    ]
    assert len(links) >= 15
    for link in links:
        path, operation = by_id[link["operationId"]]
        names = {p["name"] for p in operation.get("parameters", [])}
        assert set(link["parameters"]) <= names, (path, link)


def test_the_problem_schema_holds_every_field_a_problem_carries(document: dict[str, Any]) -> None:
    problem = document["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "code", "correlation_id", "quarantine_id", "errors"} <= set(
        problem["properties"]
    )
    assert json.dumps(document).count("HTTPValidationError") == 0
