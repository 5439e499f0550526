"""Docs coverage: every setting, CLI command, event type and route is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from careops.api.app import create_app
from careops.cli import app as cli_app
from careops.domain.events import EventType, FollowUp
from careops.settings import Settings

DOCS = Path(__file__).resolve().parents[1] / "docs"


def text(name: str) -> str:
    return (DOCS / name).read_text()


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    assert f"`{name}`" in text("settings.md")


def test_every_cli_command_is_documented() -> None:
    commands = [c.name or (c.callback.__name__ if c.callback else "") for c in cli_app.registered_commands]
    commands += [
        f"{group.name} {c.name}"
        for group in cli_app.registered_groups
        for c in group.typer_instance.registered_commands
    ]
    missing = [c for c in commands if f"careops {c}" not in text("cli.md")]
    assert missing == []


@pytest.mark.parametrize("event", [*EventType, *FollowUp])
def test_every_event_and_follow_up_is_documented(event: str) -> None:
    assert f"`{event}`" in text("events.md")


def test_every_route_is_documented(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'd.db'}"))
    paths = app.openapi()["paths"]
    routes = [f"{method.upper()} {path}" for path, operations in paths.items() for method in operations]
    assert len(routes) > 15
    missing = [r for r in routes if f"`{r}`" not in text("api.md")]
    assert missing == []


def test_every_role_and_permission_is_in_the_security_page() -> None:
    from careops.governance.permissions import PERMISSIONS, SHIPPED_ROLES

    page = text("security.md")
    assert [r for r in SHIPPED_ROLES if f"| `{r}` |" not in page] == []
    assert [p for p in PERMISSIONS if f"`{p}`" not in page] == []


def _subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


def test_every_problem_code_is_documented_with_its_status() -> None:
    import importlib
    import pkgutil

    import careops
    from careops.api.problems import FRAMEWORK_CODES, HTTP_ERROR, INTERNAL_ERROR
    from careops.errors import CareopsError

    for module in pkgutil.walk_packages(careops.__path__, "careops."):
        if ".migrations." not in module.name:
            importlib.import_module(module.name)  # every error class careops defines is loaded
    statuses = {error.code: str(error.status) for error in _subclasses(CareopsError)}
    statuses |= {code: str(status) for status, code in FRAMEWORK_CODES.items()}
    statuses |= {HTTP_ERROR: "as sent", INTERNAL_ERROR: "500"}
    assert len(statuses) >= 12
    page = text("api.md")
    missing = [
        f"| `{code}` | {status} |"
        for code, status in statuses.items()
        if f"| `{code}` | {status} |" not in page
    ]
    assert missing == []


def test_every_kpi_is_documented() -> None:
    from careops.observability.kpis import KPIS, RATES

    page = text("kpis.md")
    assert [k.name for k in KPIS if f"| `{k.name}` |" not in page] == []
    assert [name for name, *_ in RATES if f"| `{name}`" not in page] == []


def test_every_hl7_message_type_has_its_disposition_documented() -> None:
    from careops.integrations.inbound.hl7v2 import DISPOSITIONS

    table = [line for line in text("channels.md").splitlines() if line.startswith("| ")]
    for kind, disposition in DISPOSITIONS.items():
        message_type, trigger = kind.split("^")
        rows = [
            line for line in table if message_type in line.split("|")[1] and trigger[1:] in line.split("|")[1]
        ]
        assert any(f"| {disposition.action} |" in row for row in rows), kind
