"""``careops reference``: import, export and diff master data as YAML or CSV files (a dry run unless
``--apply``); ``careops mapping``: a sender's codes for careops' records."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from careops.cli.common import cli_actor, err, fail, out, progress_bars, ready_database
from careops.domain.master_data import KINDS
from careops.settings import get_settings

if TYPE_CHECKING:
    from careops.orchestration.reference_files import Change, ReferenceFile

reference_app = typer.Typer(
    help="Master data (locations, services, payers, referrers, mappings, field owners) as files.",
    no_args_is_help=True,
)
SHOWN_CHANGES = 50
KindOption = Annotated[
    str | None,
    typer.Option(
        "--kind", help=f"Only this kind ({', '.join(KINDS)}); a CSV file's kind by default its name."
    ),
]


def _read(path: Path, kind: str | None) -> ReferenceFile:
    from careops.orchestration.reference_files import read_reference_file

    if kind is not None and kind not in KINDS:
        fail(f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    read = read_reference_file(path, kind)
    if read.problems:
        for problem in read.problems[:200]:
            err.print(f"[red]{escape(problem)}[/red]")
        more = f" (the first 200 of {len(read.problems)})" if len(read.problems) > 200 else ""
        fail(f"{len(read.problems)} error(s) in {path}{more}; nothing was changed")
    return read


def _print_changes(changes: list[Change], verb: str) -> None:
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.action] = counts.get(change.action, 0) + 1
    for change in changes[:SHOWN_CHANGES]:
        out.print(escape(change.describe()))
    if len(changes) > SHOWN_CHANGES:
        out.print(f"… and {len(changes) - SHOWN_CHANGES} more")
    summary = ", ".join(f"{n} to {action}" for action, n in sorted(counts.items())) or "nothing to change"
    err.print(f"{verb}: {summary}")


@reference_app.command("import")
def reference_import(
    file: Annotated[Path, typer.Argument(help="A .yaml/.yml file of kinds, or a .csv file of one kind.")],
    kind: KindOption = None,
    apply: Annotated[bool, typer.Option("--apply", help="Commit the changes (else: a dry run).")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why: recorded on every change.")] = "",
    source: Annotated[
        str,
        typer.Option("--source", help="The system the file comes from; fields owned by another are held."),
    ] = "careops",
) -> None:
    """Validate FILE and show what it would add, change and retire; with --apply, commit it all in
    one transaction. A file holds the whole of each kind in it: live records it leaves out are retired."""
    from careops.orchestration.reference_files import apply_file, diff

    read = _read(file, kind)
    db = ready_database(get_settings(), field_keys=False)
    if not apply:
        _print_changes(diff(db, read), "dry run (nothing changed; --apply to commit)")
        return
    with progress_bars() as report:
        applied = apply_file(
            db,
            read,
            actor=cli_actor(),
            reason=reason or f"import of {file.name}",
            source=source,
            progress=lambda done, total: report("applying", done, total),
        )
    _print_changes(applied.changes, "applied")
    for held in applied.held:
        err.print(f"[yellow]held for its owner:[/yellow] {escape(held)} (an item in the master_data queue)")


@reference_app.command("diff")
def reference_diff(
    file: Annotated[Path, typer.Argument(help="A .yaml/.yml or .csv reference file.")],
    kind: KindOption = None,
) -> None:
    """What FILE would change against what is live (exit 1 when it differs, as diff does)."""
    from careops.orchestration.reference_files import diff

    read = _read(file, kind)
    changes = diff(ready_database(get_settings(), field_keys=False), read)
    _print_changes(changes, "differences")
    if changes:
        raise typer.Exit(1)


@reference_app.command("export")
def reference_export(
    kind: KindOption = None,
    output_format: Annotated[str, typer.Option("--format", help="yaml, or csv (with --kind).")] = "yaml",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
) -> None:
    """The live master data, as a file `careops reference import` reads back unchanged."""
    from careops.orchestration.reference_files import export_records, to_csv, to_yaml

    if kind is not None and kind not in KINDS:
        fail(f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    if output_format not in ("yaml", "csv"):
        fail("--format is yaml or csv")
    if output_format == "csv" and kind is None:
        fail("a CSV file holds one kind: add --kind")
    document = export_records(
        ready_database(get_settings(), field_keys=False), [kind] if kind else list(KINDS)
    )
    text = to_csv(kind, document[kind]) if output_format == "csv" and kind else to_yaml(document)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"written to {output}")
