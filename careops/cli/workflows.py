"""``careops workflows``: validate, test, graph, dry-run, diff, activate and list workflow
templates, and show recent rule runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from careops.cli.common import cli_actor, err, fail, ready_database
from careops.settings import get_settings

workflows_app = typer.Typer(
    help="Workflow templates: validate, test, graph, dry-run, diff, activate; recent rule runs.",
    no_args_is_help=True,
)
out = Console()
DirectoryOption = Annotated[
    Path | None,
    typer.Option("--directory", "-d", help="The templates' directory (default: the shipped workflows/)."),
]
LocationOption = Annotated[
    str | None, typer.Option("--location", "-l", help="As it runs at this location (slug).")
]


def _directory(directory: Path | None) -> Path:
    from careops.automation.store import shipped_directory

    found = directory or shipped_directory()
    if not found.is_dir():
        fail(f"no directory {found}")
    return found


def _templates(directory: Path | None) -> list:  # type: ignore[type-arg]
    from careops.automation.templates import TemplateError, load_directory

    try:
        return load_directory(_directory(directory))
    except TemplateError as exc:
        fail(str(exc))


@workflows_app.command("validate")
def validate_command(directory: DirectoryOption = None) -> None:
    """Check every template: schema, events, actions, roles and their permissions, queues,
    sub-workflows, and no cycle of rules that trigger each other without a guard."""
    from careops.automation.tooling import validate

    templates = _templates(directory)
    problems = validate(templates)
    for problem in problems:
        err.print(f"[red]✗[/red] {problem}")
    if problems:
        raise typer.Exit(1)
    err.print(f"[green]✓[/green] {len(templates)} templates valid")


@workflows_app.command("test")
def test_command(directory: DirectoryOption = None) -> None:
    """Run the template tests (``tests/*.yaml`` beside the templates): given events and records,
    the rules that fire and the actions they would take."""
    from careops.automation.tooling import run_template_tests

    found = _directory(directory)
    outcomes = run_template_tests(found, _templates(found))
    for outcome in outcomes:
        mark = "[green]✓[/green]" if not outcome.failures else "[red]✗[/red]"
        err.print(f"{mark} {Path(outcome.file).name}: {outcome.name}")
        for failure in outcome.failures:
            err.print(f"    {failure}")
    failed = sum(1 for o in outcomes if o.failures)
    err.print(f"{len(outcomes) - failed} passed, {failed} failed")
    if failed or not outcomes:
        raise typer.Exit(1)


def _template_named(name: str, directory: Path | None, from_database: bool):  # type: ignore[no-untyped-def]
    from careops.automation.store import stored_text
    from careops.automation.templates import load_text

    if from_database:
        text, _ = stored_text(ready_database(get_settings()), name)
        return load_text(text, name)
    found = [t for t in _templates(directory) if t.name == name]
    if not found:
        fail(f"no template {name!r} in {_directory(directory)}")
    return found[0]


@workflows_app.command("graph")
def graph_command(
    name: str,
    location: LocationOption = None,
    groups: Annotated[
        str, typer.Option(help="The location's groups, comma-separated (for --location).")
    ] = "",
    active: Annotated[bool, typer.Option("--active", help="The active version in the database.")] = False,
    directory: DirectoryOption = None,
) -> None:
    """A workflow as a Mermaid flowchart (paste into any Mermaid viewer)."""
    from careops.automation.templates import effective
    from careops.automation.tooling import graph

    template = _template_named(name, directory, active)
    if location:
        template = effective(template, location, [g for g in groups.split(",") if g])
    typer.echo(graph(template), nl=False)


@workflows_app.command("dry-run")
def dry_run_command(
    name: str,
    event: Annotated[
        Path, typer.Option("--event", help="A JSON file: type, subject_type, subject_id, case_id, payload.")
    ],
    location: LocationOption = None,
) -> None:
    """Which rules of the active workflow NAME (or 'all') the event would start and what each step
    would do, reading the database but changing nothing."""
    from careops.automation.service import dry_run
    from careops.governance.scoping import EVERYWHERE

    try:
        body = json.loads(event.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        fail(f"cannot read the event: {exc}")
    planned = dry_run(
        ready_database(get_settings()), None if name == "all" else name, body, location, EVERYWHERE
    )
    if not planned:
        err.print("no active rule is triggered by this event")
    for item in planned:
        out.print(f"[bold]{item['workflow']}/{item['rule']}[/bold]: {item['outcome']}")
        for step in item["steps"]:
            out.print(
                f"  {step['step']}: {step['action']} {json.dumps(step['with'], default=str)}", markup=False
            )


@workflows_app.command("diff")
def diff_command(
    first: Annotated[
        str, typer.Argument(help="A file, or NAME@HASH / NAME (the active version) in the database.")
    ],
    second: Annotated[str | None, typer.Argument(help="The same; left out with --location.")] = None,
    location: LocationOption = None,
    groups: Annotated[str, typer.Option(help="The location's groups, comma-separated.")] = "",
) -> None:
    """The difference between two versions, or (with --location) between a template and the
    effective workflow of a location."""
    from careops.automation.templates import load_text
    from careops.automation.tooling import diff_text, effective_text

    base = _text_of(first)
    if location:
        changed = effective_text(load_text(base, first), location, [g for g in groups.split(",") if g])
        label = f"{first} at {location}"
    elif second is not None:
        changed, label = _text_of(second), second
    else:
        fail("name a second version, or --location")
    text = diff_text(base, changed, first, label)
    typer.echo(text or "no difference", nl=not text)


def _text_of(ref: str) -> str:
    from careops.automation.store import stored_text

    path = Path(ref)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    name, _, prefix = ref.partition("@")
    return stored_text(ready_database(get_settings()), name, prefix or None)[0]


@workflows_app.command("activate")
def activate_command(
    why: Annotated[str, typer.Option("--why", help="Why (recorded in the audit log).")],
    directory: DirectoryOption = None,
) -> None:
    """Validate the templates, then make each the active version of its name (new runs take it;
    running timers and waits keep theirs). Every activation is an audited event."""
    from careops.automation.store import activate_directory

    done = activate_directory(
        ready_database(get_settings()), _directory(directory), actor=cli_actor(), reason=why
    )
    for activation in done:
        state = "activated" if activation.changed else "already active"
        err.print(f"{activation.name} v{activation.version} ({activation.content_hash[:12]}): {state}")


@workflows_app.command("deactivate")
def deactivate_command(name: str, why: Annotated[str, typer.Option("--why", help="Why (audited).")]) -> None:
    """Stop a workflow: no new runs (its pending timers are cancelled when they come due)."""
    from careops.automation.store import deactivate

    deactivate(ready_database(get_settings()), name, actor=cli_actor(), reason=why)
    err.print(f"{name} deactivated")


@workflows_app.command("list")
def list_command() -> None:
    """The active workflows with their version, owner and rules."""
    from careops.automation.service import list_workflows

    table = Table("workflow", "version", "hash", "owner", "rules", "activated by")
    for item in list_workflows(ready_database(get_settings())):
        rules = ", ".join(f"{r['name']} ({r['trigger']})" for r in item["rules"])
        table.add_row(
            item["name"],
            item["version"],
            item["content_hash"][:12],
            item["owner"],
            rules,
            item["activated_by"] or "",
        )
    out.print(table)


@workflows_app.command("runs")
def runs_command(
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first.")] = 20,
    status: Annotated[
        str | None, typer.Option(help="done, failed, waiting, rate_limited, loop_stopped.")
    ] = None,
) -> None:
    """Recent rule runs with their outcome."""
    from careops.automation.service import recent_runs
    from careops.governance.scoping import EVERYWHERE

    table = Table("started", "workflow/rule", "step", "action", "trigger", "status", "detail")
    for run in recent_runs(ready_database(get_settings()), EVERYWHERE, status=status, limit=limit):
        table.add_row(
            run["started_at"][:19],
            f"{run['workflow']}/{run['rule']}",
            run["step"],
            run["action"],
            run["trigger"],
            run["status"],
            json.dumps(run["detail"], default=str)[:60],
        )
    out.print(table)


@workflows_app.command("schema")
def schema_command() -> None:
    """The JSON Schema of a workflow template, for editors."""
    from careops.automation.templates import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))
