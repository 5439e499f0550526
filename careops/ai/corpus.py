"""Labelled texts from CSV (a text column and a label column), with errors a person can act on."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path


class CorpusError(ValueError):
    """A training or evaluation file that cannot be used, and why."""


@dataclass(frozen=True)
class Corpus:
    texts: list[str]
    labels: list[str]
    sha256: str  # of the file's bytes: the model card names what it was trained on
    source: str


def read_corpus(path: Path, text_column: str | None = None, label_column: str | None = None) -> Corpus:
    """The rows of a CSV file; without column names, the label is the column whose name ends in
    ``label`` and the text the other one with the longest values."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CorpusError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        rows = list(csv.DictReader(raw.decode("utf-8-sig").splitlines()))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CorpusError(f"{path} is not UTF-8 CSV: {exc}") from exc
    if not rows:
        raise CorpusError(f"{path} has no rows")
    columns = list(rows[0])
    label = label_column or next((c for c in columns if c.lower().endswith("label")), None)
    if label is None or label not in columns:
        raise CorpusError(
            f"no label column {label_column or '(…label)'} in {path}; columns: {', '.join(columns)}"
        )
    others = [c for c in columns if c != label]
    text = text_column or max(others, key=lambda c: sum(len(r[c] or "") for r in rows[:50]), default=None)
    if text is None or text not in columns:
        raise CorpusError(f"no text column {text_column} in {path}; columns: {', '.join(columns)}")
    kept = [
        (r[text] or "", r[label] or "") for r in rows if (r[text] or "").strip() and (r[label] or "").strip()
    ]
    if len({lab for _, lab in kept}) < 2:
        raise CorpusError(f"{path} needs at least two labels to learn from")
    return Corpus([t for t, _ in kept], [lab for _, lab in kept], hashlib.sha256(raw).hexdigest(), str(path))
