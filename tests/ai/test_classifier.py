"""The offline classifier on the sample clinical abstracts: cross-validated macro-F1 and
calibration, a gate that keeps its precision on data it was not chosen on, model files that refuse
tampering, the evaluation's numbers on known inputs and the CLI's JSON line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from careops.ai.classifier import ModelError, load, out_of_fold, save, train
from careops.ai.corpus import Corpus, CorpusError, read_corpus
from careops.ai.evaluation import calibration_error, choose_threshold, evaluate, gate_on, precision_at
from tests.e2e.test_crash_recovery import CAREOPS

ABSTRACTS = Path(__file__).resolve().parents[1] / "data" / "abstracts" / "medical_abstracts_dev.csv"


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return read_corpus(ABSTRACTS)


@pytest.fixture(scope="module")
def held_out(corpus: Corpus) -> tuple[list[str], np.ndarray]:
    labels, found, _ = out_of_fold(corpus)
    return labels, found


def test_cross_validated_macro_f1_and_calibration_on_the_abstracts(
    corpus: Corpus, held_out: tuple[list[str], np.ndarray]
) -> None:
    labels, found = held_out
    result = evaluate(labels, found, corpus.labels, 1.0)
    assert result.documents == 1926 and labels == ["1", "2", "3", "4", "5"]
    assert result.macro_f1 >= 0.58  # measured 0.59 (bench/RESULTS.md); the goal is 0.62
    assert result.ece <= 0.05
    coverage = result.precision_at_coverage
    assert coverage["0.10"] >= coverage["0.50"] >= coverage["1.00"]  # confidence ranks the right ones first


def test_the_gate_chosen_for_a_precision_keeps_it_on_the_other_half(
    corpus: Corpus, held_out: tuple[list[str], np.ndarray]
) -> None:
    labels, found = held_out
    confidence = found.max(axis=1)
    correct = np.array(labels)[found.argmax(axis=1)] == np.array(corpus.labels)
    rows = np.random.default_rng(31).permutation(len(correct))
    chosen, checked = rows[: len(rows) // 2], rows[len(rows) // 2 :]
    gate = choose_threshold(confidence[chosen], correct[chosen], 0.80)
    assert gate.precision >= 0.80 and 0 < gate.coverage < 1
    precision, coverage = gate_on(confidence[checked], correct[checked], gate)
    assert precision >= 0.80 - 0.03 and coverage > 0  # it keeps its word on data it was not chosen on


def test_a_model_file_carries_its_card_and_refuses_a_change(corpus: Corpus, tmp_path: Path) -> None:
    small = Corpus(corpus.texts[::5], corpus.labels[::5], corpus.sha256, corpus.source)
    model = train(small)
    path = tmp_path / "m.careops"
    card = save(model, path)
    loaded = load(path)
    assert loaded.card.training_sha256 == corpus.sha256 and loaded.card.model_sha256 == card.model_sha256
    sample = corpus.texts[501:520]
    assert np.allclose(loaded.probabilities(sample), model.probabilities(sample))  # the same model back
    best = loaded.recommend(corpus.texts[501])
    assert abs(sum(p for _, p in best) - 1) < 1e-6
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="changed after training"):
        load(path)
    (tmp_path / "other").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a careops model file"):
        load(tmp_path / "other")


def test_eval_ends_with_one_json_line_and_writes_its_diagram(corpus: Corpus, tmp_path: Path) -> None:
    small = Corpus(corpus.texts[::6], corpus.labels[::6], corpus.sha256, corpus.source)
    save(train(small), tmp_path / "m.careops")
    done = subprocess.run(
        [CAREOPS, "ai", "eval", "--data", str(ABSTRACTS), "--model", str(tmp_path / "m.careops"), "--json",
         "--diagram", str(tmp_path / "r.png")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    last = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"macro_f1", "ece", "precision_at_coverage", "ms_per_doc"} <= set(last)
    assert 0 < last["macro_f1"] <= 1 and (tmp_path / "r.png").read_bytes().startswith(b"\x89PNG")


def test_unusable_files_are_refused_with_the_reason(tmp_path: Path) -> None:
    one = tmp_path / "one.csv"
    one.write_text("label,text\na,some words\na,more words\n")
    with pytest.raises(CorpusError, match="at least two labels"):
        read_corpus(one)
    with pytest.raises(CorpusError, match="no label column"):
        read_corpus(one, label_column="kind")
    with pytest.raises(CorpusError, match="cannot read"):
        read_corpus(tmp_path / "missing.csv")


def test_calibration_error_and_precision_at_coverage_on_known_inputs() -> None:
    confidence = np.array([0.95, 0.95, 0.55, 0.55])
    correct = np.array([True, True, True, False])
    ece, _ = calibration_error(confidence, correct)
    assert ece == pytest.approx(0.5 * 0.05 + 0.5 * 0.05)
    assert precision_at(confidence, correct, 0.5) == 1.0 and precision_at(confidence, correct, 1.0) == 0.75


@given(st.lists(st.tuples(st.floats(0.2, 1.0), st.booleans()), min_size=5, max_size=60), st.floats(0.5, 0.95))
def test_a_chosen_gate_reaches_its_precision_where_it_was_chosen(
    pairs: list[tuple[float, bool]], target: float
) -> None:
    confidence = np.array([c for c, _ in pairs])
    correct = np.array([ok for _, ok in pairs])
    gate = choose_threshold(confidence, correct, target)
    if gate.coverage:
        assert correct[confidence >= gate.threshold].mean() >= target - 1e-9
