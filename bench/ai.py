"""The offline classifier on the sample clinical abstracts: training time, inference per document,
memory, and the 5-fold cross-validated evaluation with the confidence gate.

    .venv/bin/python -m bench.ai [--data FILE.csv] [--precision 0.85]

(``--data`` defaults to tests/data/abstracts/medical_abstracts_dev.csv, a copy of the shared sample.)

Issue 31's targets (5-fold cross-validation on the 1,926 abstracts, 2 cores, offline): macro-F1 ≥ 0.62,
ECE ≤ 0.05, ≤ 40 ms per document, training ≤ 5 minutes; the gate chosen for ``--precision`` on half
of the out-of-fold predictions, checked on the other half, and the share it auto-applies. The
reference in the same run: the issue's baseline, balanced TF-IDF (words 1-2) + logistic regression,
uncalibrated.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
from rich.table import Table
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline

from bench.intake import console
from careops.ai.classifier import out_of_fold, train
from careops.ai.corpus import Corpus, read_corpus
from careops.ai.evaluation import Evaluation, choose_threshold, evaluate, gate_on

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "abstracts" / "medical_abstracts_dev.csv"


def _baseline(corpus: Corpus) -> Evaluation:
    texts, truth = np.array(corpus.texts, dtype=object), np.array(corpus.labels)
    labels = sorted(set(corpus.labels))
    found = np.zeros((len(texts), len(labels)))
    seconds = 0.0
    for rows, held in StratifiedKFold(5, shuffle=True, random_state=0).split(texts, truth):
        model = make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
            LogisticRegression(class_weight="balanced", max_iter=2000),
        )
        model.fit(list(texts[rows]), list(truth[rows]))
        began = time.perf_counter()
        found[held] = model.predict_proba(list(texts[held]))
        seconds += time.perf_counter() - began
    return evaluate(labels, found, corpus.labels, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--precision", type=float, default=0.85)
    args = parser.parse_args()
    corpus = read_corpus(args.data)
    began = time.perf_counter()
    train(corpus)
    train_seconds = time.perf_counter() - began
    labels, found, seconds = out_of_fold(corpus)
    ours = evaluate(labels, found, corpus.labels, seconds)
    baseline = _baseline(corpus)
    confidence = found.max(axis=1)
    correct = np.array(labels)[found.argmax(axis=1)] == np.array(corpus.labels)
    rows = np.random.default_rng(31).permutation(len(correct))
    chosen, checked = rows[: len(rows) // 2], rows[len(rows) // 2 :]
    gate = choose_threshold(confidence[chosen], correct[chosen], args.precision)
    held_precision, held_coverage = gate_on(confidence[checked], correct[checked], gate)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table = Table(title=f"Classification, 5-fold CV on {len(corpus.texts)} abstracts")
    for column in ("model", "macro-F1", "ECE", "ms/doc", "precision@25%", "precision@50%"):
        table.add_column(column, justify="right")
    for name, result in (("careops (calibrated)", ours), ("baseline TF-IDF + LR", baseline)):
        table.add_row(
            name,
            f"{result.macro_f1:.4f}",
            f"{result.ece:.4f}",
            f"{result.ms_per_doc:.2f}",
            f"{result.precision_at_coverage['0.25']:.3f}",
            f"{result.precision_at_coverage['0.50']:.3f}",
        )
    console.print(table)
    console.print(
        f"training on all {len(corpus.texts)}: {train_seconds:.1f} s · peak RSS {rss:.0f} MB · gate for "
        f"precision {args.precision}: threshold {gate.threshold:.3f}, precision {gate.precision:.3f} "
        f"covering {gate.coverage:.1%} where chosen, {held_precision:.3f} covering {held_coverage:.1%} "
        "on the other half"
    )


if __name__ == "__main__":
    main()
