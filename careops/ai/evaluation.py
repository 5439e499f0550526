"""How good a model is, measured: macro-F1, per-class precision and recall, the precision at each
coverage (predictions ranked by confidence), expected calibration error (10 equal-width bins,
top label), milliseconds per document, and a reliability diagram as PNG; and the confidence
threshold that reaches a stated precision (the gate), chosen on one part of the data and checked
on another."""

from __future__ import annotations

import itertools
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support

COVERAGES = (0.1, 0.25, 0.5, 0.75, 1.0)
BINS = 10


@dataclass
class Evaluation:
    documents: int
    macro_f1: float
    ece: float
    ms_per_doc: float
    per_class: dict[str, dict[str, float]]
    precision_at_coverage: dict[str, float]
    reliability: list[tuple[float, float, int]] = field(
        default_factory=list
    )  # per bin: confidence, accuracy, n

    def summary(self) -> dict[str, object]:
        return {"documents": self.documents, "macro_f1": round(self.macro_f1, 4), "ece": round(self.ece, 4),
                "ms_per_doc": round(self.ms_per_doc, 3), "precision_at_coverage": self.precision_at_coverage,
                "per_class": self.per_class}  # fmt: skip


def calibration_error(
    confidence: np.ndarray, correct: np.ndarray
) -> tuple[float, list[tuple[float, float, int]]]:
    """ECE over 10 equal-width bins of the top label's confidence, and each bin's (mean
    confidence, accuracy, count)."""
    edges = np.linspace(0.0, 1.0, BINS + 1)
    total, bins = 0.0, []
    for low, high in itertools.pairwise(edges):
        inside = (
            (confidence > low) & (confidence <= high)
            if low > 0
            else (confidence >= low) & (confidence <= high)
        )
        count = int(inside.sum())
        if count:
            mean_conf, accuracy = float(confidence[inside].mean()), float(correct[inside].mean())
            total += count / len(confidence) * abs(accuracy - mean_conf)
            bins.append((mean_conf, accuracy, count))
        else:
            bins.append(((low + high) / 2, 0.0, 0))
    return total, bins


def precision_at(confidence: np.ndarray, correct: np.ndarray, coverage: float) -> float:
    """The precision of the most confident ``coverage`` share of the predictions."""
    keep = max(1, round(coverage * len(confidence)))
    order = np.argsort(-confidence, kind="stable")[:keep]
    return float(correct[order].mean())


def evaluate(labels: list[str], probabilities: np.ndarray, truth: list[str], seconds: float) -> Evaluation:
    classes = np.array(labels)
    predicted = classes[probabilities.argmax(axis=1)]
    expected = np.array(truth)
    confidence = probabilities.max(axis=1)
    correct = predicted == expected
    precision, recall, _, support = precision_recall_fscore_support(
        expected, predicted, labels=classes, zero_division=0
    )
    ece, bins = calibration_error(confidence, correct)
    return Evaluation(
        documents=len(truth),
        macro_f1=float(f1_score(expected, predicted, labels=classes, average="macro", zero_division=0)),
        ece=ece,
        ms_per_doc=seconds * 1000 / max(len(truth), 1),
        per_class={
            str(c): {"precision": round(float(p), 4), "recall": round(float(r), 4), "support": int(s)}
            for c, p, r, s in zip(classes, precision, recall, support, strict=True)
        },
        precision_at_coverage={f"{c:.2f}": round(precision_at(confidence, correct, c), 4) for c in COVERAGES},
        reliability=bins,
    )


def timed_probabilities(predict: object, texts: list[str]) -> tuple[np.ndarray, float]:
    began = time.perf_counter()
    found = predict(texts)  # type: ignore[operator]
    return np.asarray(found), time.perf_counter() - began


@dataclass(frozen=True)
class Gate:
    """Confidence at or above ``threshold``: applied automatically; below: a person reviews."""

    threshold: float
    target_precision: float
    precision: float  # on the data it was chosen on
    coverage: float


def choose_threshold(confidence: np.ndarray, correct: np.ndarray, target: float) -> Gate:
    """The lowest threshold whose auto-applied share is at least ``target`` precise (1.0+: none)."""
    order = np.argsort(-confidence, kind="stable")
    ranked = confidence[order]
    hits = np.cumsum(correct[order])
    precision = hits / np.arange(1, len(order) + 1)
    # A threshold takes every prediction as confident as it: cut only where the confidence drops.
    cuts = np.append(ranked[:-1] > ranked[1:], True)
    reaching = np.nonzero((precision >= target) & cuts)[0]
    if len(reaching) == 0:
        return Gate(1.01, target, 0.0, 0.0)
    last = int(reaching.max())
    threshold = float(ranked[last])
    applied = confidence >= threshold
    return Gate(threshold, target, float(correct[applied].mean()), float(applied.mean()))


def gate_on(confidence: np.ndarray, correct: np.ndarray, gate: Gate) -> tuple[float, float]:
    """(precision, coverage) of a gate on other data."""
    applied = confidence >= gate.threshold
    return (float(correct[applied].mean()) if applied.any() else 1.0), float(applied.mean())


def reliability_png(bins: list[tuple[float, float, int]], path: Path, size: int = 200) -> None:
    """A reliability diagram: per confidence bin a bar of its accuracy, with the diagonal of
    perfect calibration, as a small greyscale PNG (no plotting library needed)."""
    image = np.full((size, size), 255, dtype=np.uint8)
    width = size // BINS
    for index, (_, accuracy, count) in enumerate(bins):
        if count:
            top = size - int(accuracy * (size - 1)) - 1
            image[top:, index * width + 1 : (index + 1) * width - 1] = 150
    for x in range(size):
        image[size - 1 - x, x] = 0
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
