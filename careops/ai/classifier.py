"""Referral classification, offline on the CPU: TF-IDF over words (1-2-grams) and characters
(3-5-grams within words), a class-balanced logistic regression, and isotonic calibration (5-fold)
so that a confidence of 0.8 is right about 80% of the time.

A trained model is saved as one file: the pickled pipeline and its model card (task, labels, the
training data's hash, the model's own hash, metrics, versions). Loading checks the pickle's hash
against the card before unpickling, so a file changed after training is refused; load only model
files you made or trust (a pickle runs code when loaded).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import pickle
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline, make_union

from careops.ai.corpus import Corpus

MAGIC = b"CAREOPS-MODEL-1\n"


class ModelError(ValueError):
    """A model file that cannot be trusted or read."""


@dataclass
class ModelCard:
    task: str
    labels: list[str]
    training_sha256: str
    training_rows: int
    trained_at: str
    train_seconds: float
    model_sha256: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    description: str = "TF-IDF words 1-2 + characters 3-5, balanced logistic regression, isotonic calibration"


@dataclass
class Model:
    pipeline: Pipeline
    card: ModelCard

    @property
    def labels(self) -> list[str]:
        return [str(c) for c in self.pipeline.classes_]

    def probabilities(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.pipeline.predict_proba(texts))

    def recommend(self, text: str) -> list[tuple[str, float]]:
        """Every label with its calibrated probability, best first."""
        found = self.probabilities([text])[0]
        return sorted(zip(self.labels, (float(p) for p in found), strict=True), key=lambda x: -x[1])


def new_pipeline() -> Pipeline:
    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, stop_words="english")
    chars = TfidfVectorizer(
        analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=3, max_features=100_000
    )
    regression = LogisticRegression(C=8, class_weight="balanced", max_iter=3000)
    return make_pipeline(
        make_union(words, chars), CalibratedClassifierCV(regression, method="isotonic", cv=5)
    )


def train(corpus: Corpus, task: str = "classification") -> Model:
    began = time.perf_counter()
    pipeline = new_pipeline()
    pipeline.fit(corpus.texts, corpus.labels)
    card = ModelCard(
        task=task,
        labels=[str(c) for c in pipeline.classes_],
        training_sha256=corpus.sha256,
        training_rows=len(corpus.texts),
        trained_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        train_seconds=round(time.perf_counter() - began, 2),
        versions={"scikit-learn": sklearn.__version__, "numpy": np.__version__},
    )
    return Model(pipeline, card)


def save(model: Model, path: Path) -> ModelCard:
    """Write the model file: a header, the card as one JSON line, then the pickled pipeline."""
    body = pickle.dumps(model.pipeline, protocol=pickle.HIGHEST_PROTOCOL)
    model.card.model_sha256 = hashlib.sha256(body).hexdigest()
    write(path, model.card, body)
    return model.card


def write(path: Path, card: ModelCard, body: bytes) -> None:
    """The model file: a header, the card as one JSON line, the pickled pipeline (``body``)."""
    path.write_bytes(MAGIC + json.dumps(asdict(card)).encode() + b"\n" + body)


def read_card(path: Path) -> tuple[ModelCard, bytes]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror}") from exc
    if not raw.startswith(MAGIC):
        raise ModelError(f"{path} is not a careops model file")
    card_line, _, body = raw[len(MAGIC) :].partition(b"\n")
    try:
        card = ModelCard(**json.loads(card_line))
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{path} has no readable model card") from exc
    return card, body


def load(path: Path) -> Model:
    card, body = read_card(path)
    if hashlib.sha256(body).hexdigest() != card.model_sha256:
        raise ModelError(
            f"{path} was changed after training (its hash differs from its model card's): refused"
        )
    return Model(pickle.loads(body), card)  # noqa: S301 - checked against the card's hash above


def out_of_fold(corpus: Corpus, folds: int = 5, seed: int = 0) -> tuple[list[str], np.ndarray, float]:
    """Each document's probabilities from a model trained without it (stratified ``folds``-fold
    cross-validation), the labels in column order, and the seconds spent predicting."""
    from sklearn.model_selection import StratifiedKFold

    texts, truth = np.array(corpus.texts, dtype=object), np.array(corpus.labels)
    labels = sorted(set(corpus.labels))
    found = np.zeros((len(texts), len(labels)))
    predicting = 0.0
    for train_rows, test_rows in StratifiedKFold(folds, shuffle=True, random_state=seed).split(texts, truth):
        pipeline = new_pipeline().fit(list(texts[train_rows]), list(truth[train_rows]))
        began = time.perf_counter()
        part = pipeline.predict_proba(list(texts[test_rows]))
        predicting += time.perf_counter() - began
        columns = [labels.index(str(c)) for c in pipeline.classes_]
        found[np.ix_(test_rows, columns)] = part
    return labels, found, predicting
