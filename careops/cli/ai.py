"""``careops ai``: train, evaluate and calibrate the offline classification model."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from careops.cli.common import err, fail, out

ai_app = typer.Typer(
    help="Offline AI models: train, evaluate, calibrate the confidence gate.", no_args_is_help=True
)
DataOption = Annotated[Path, typer.Option("--data", help="CSV with a text column and a label column.")]
TextOption = Annotated[
    str | None, typer.Option("--text-column", help="Default: the column with the longest values.")
]
LabelOption = Annotated[str | None, typer.Option("--label-column", help="Default: the column named …label.")]
TASKS = ("classification",)


def _corpus(data: Path, text: str | None, label: str | None):  # type: ignore[no-untyped-def]
    from careops.ai.corpus import CorpusError, read_corpus

    try:
        return read_corpus(data, text, label)
    except CorpusError as exc:
        fail(str(exc))


def _task(task: str) -> None:
    if task not in TASKS:
        fail(f"no task {task!r}; tasks: {', '.join(TASKS)}")


@ai_app.command("train")
def train_command(
    data: DataOption,
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the model file.")] = Path(
        "model.careops"
    ),
    task: Annotated[str, typer.Option(help="The task (classification).")] = "classification",
    text_column: TextOption = None,
    label_column: LabelOption = None,
) -> None:
    """Train a calibrated model on labelled texts and save it with its model card."""
    from careops.ai.classifier import save, train

    _task(task)
    corpus = _corpus(data, text_column, label_column)
    with err.status(f"training on {len(corpus.texts)} documents…"):
        model = train(corpus, task)
    card = save(model, out_path)
    err.print(
        f"model written to {out_path}: {len(card.labels)} labels, {card.training_rows} documents, "
        f"{card.train_seconds:.1f} s, model hash {card.model_sha256[:12]}"
    )


@ai_app.command("eval")
def eval_command(
    data: DataOption,
    task: Annotated[str, typer.Option(help="The task (classification).")] = "classification",
    model: Annotated[
        Path | None, typer.Option(help="A model file; without it, 5-fold cross-validation.")
    ] = None,
    text_column: TextOption = None,
    label_column: LabelOption = None,
    diagram: Annotated[Path, typer.Option(help="Where to write the reliability diagram (PNG).")] = Path(
        "reliability.png"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line of the results.")] = False,
) -> None:
    """Macro-F1, per-class precision and recall, precision at coverage, calibration error (ECE)
    and milliseconds per document, on a model file or by cross-validation."""
    from careops.ai.classifier import ModelError, load, out_of_fold
    from careops.ai.evaluation import evaluate, reliability_png, timed_probabilities

    _task(task)
    corpus = _corpus(data, text_column, label_column)
    if model is None:
        with err.status("5-fold cross-validation…"):
            labels, found, seconds = out_of_fold(corpus)
    else:
        try:
            loaded = load(model)
        except ModelError as exc:
            fail(str(exc))
        labels = loaded.labels
        found, seconds = timed_probabilities(loaded.probabilities, corpus.texts)
    result = evaluate(labels, found, corpus.labels, seconds)
    reliability_png(result.reliability, diagram)
    table = Table("label", "precision", "recall", "support")
    for label, scores in result.per_class.items():
        table.add_row(label, f"{scores['precision']:.3f}", f"{scores['recall']:.3f}", str(scores["support"]))
    out.print(table)
    out.print(
        f"macro-F1 {result.macro_f1:.4f} · ECE {result.ece:.4f} · {result.ms_per_doc:.2f} ms/doc · "
        f"precision at coverage {result.precision_at_coverage} · diagram {diagram}"
    )
    if as_json:
        typer.echo(json.dumps(result.summary()))


@ai_app.command("calibrate")
def calibrate_command(
    data: DataOption,
    model: Annotated[Path, typer.Option(help="The model file; the gate is written into its card.")],
    precision: Annotated[
        float, typer.Option(min=0.5, max=0.999, help="The precision auto-applied items must reach.")
    ] = 0.85,
    text_column: TextOption = None,
    label_column: LabelOption = None,
) -> None:
    """Choose the auto-apply threshold for a precision on half of validation data, check it on the
    other half, and write it into the model's card (below it, a person reviews). On the model's
    own training file, out-of-fold probabilities stand in for validation data."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    from careops.ai.classifier import ModelError, load, out_of_fold, read_card, write
    from careops.ai.evaluation import choose_threshold, gate_on

    corpus = _corpus(data, text_column, label_column)
    try:
        loaded = load(model)
    except ModelError as exc:
        fail(str(exc))
    if loaded.card.training_sha256 == corpus.sha256:  # the model has seen these: judge it without them
        err.print("the model was trained on this file: its out-of-fold probabilities are used (5-fold)")
        labels, found, _ = out_of_fold(corpus)
    else:
        labels, found = loaded.labels, loaded.probabilities(corpus.texts)
    confidence = found.max(axis=1)
    correct = np.array(labels)[found.argmax(axis=1)] == np.array(corpus.labels)
    chosen, checked = train_test_split(
        np.arange(len(correct)), test_size=0.5, random_state=0, stratify=np.array(corpus.labels)
    )
    gate = choose_threshold(confidence[chosen], correct[chosen], precision)
    held_precision, held_coverage = gate_on(confidence[checked], correct[checked], gate)
    card, body = read_card(model)
    card.metrics["gate"] = {
        **asdict(gate),
        "checked_precision": held_precision,
        "checked_coverage": held_coverage,
    }
    write(model, card, body)
    out.print(
        f"auto-apply at confidence ≥ {gate.threshold:.3f}: precision {gate.precision:.3f} covering "
        f"{gate.coverage:.1%} where chosen; {held_precision:.3f} covering {held_coverage:.1%} on the other "
        "half"
    )


@ai_app.command("anomalies")
def anomalies_command(
    hours: Annotated[int, typer.Option(min=1, max=24 * 14, help="Check the last N complete hours.")] = 24,
    weeks: Annotated[
        int, typer.Option(min=2, max=12, help="Compare with the same hour of N weeks before.")
    ] = 4,
    threshold: Annotated[float, typer.Option(min=2.0, help="Robust deviations that make an anomaly.")] = 4.0,
) -> None:
    """Hours of intake per channel, exceptions per queue and stock consumed per item far from
    their seasonal baseline; each written once as ``anomaly.detected`` with its evidence."""
    from careops.ai.anomalies import scan
    from careops.cli.common import ready_database
    from careops.settings import get_settings

    found = scan(ready_database(get_settings()), hours=hours, weeks=weeks, threshold=threshold)
    table = Table("hour (UTC)", "metric", "key", "value", "baseline", "score")
    for anomaly in found:
        table.add_row(
            anomaly.hour.isoformat()[:16],
            anomaly.metric,
            anomaly.key,
            f"{anomaly.value:g}",
            f"{anomaly.baseline:g}",
            f"{anomaly.score:+.1f}",
        )
    out.print(table if found else "no anomaly")
