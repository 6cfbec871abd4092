"""The Skill-It update rule and graph estimators against hand-computed examples; graph validation errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from src.data.errors import DataError
from src.data.skills_graph import (
    approximate_graph,
    brute_force_graph,
    skillit_mixture,
    target_mask,
    validate_graph,
)
from src.data.tasks.lego import LEGO_GRAPH


def test_update_rule_matches_a_hand_computed_example() -> None:
    """A = [[1, 0], [0.5, 1]] (skill 1 helps skill 0), window L = [[1, 2], [0.5, 1]], η = 0.5.

    Σ_τ L = [1.5, 3.0]; score_0 = 1·1.5 = 1.5; score_1 = 0.5·1.5 + 1·3.0 = 3.75;
    p ∝ exp(0.5·[1.5, 3.75]) → p_0 = 1 / (1 + e^{1.125}) = 0.245085...
    """
    a = np.array([[1.0, 0.0], [0.5, 1.0]])
    p = skillit_mixture(a, np.array([[1.0, 2.0], [0.5, 1.0]]), eta=0.5)
    p0 = 1.0 / (1.0 + math.exp(1.125))
    np.testing.assert_allclose(p, [p0, 1 - p0], rtol=1e-12)
    # orientation matters: with A.T (skill 0 helps skill 1) score_0 = 1.5 + 0.5·3.0 = 3.0 = score_1 → p = 1/2
    np.testing.assert_allclose(skillit_mixture(a.T, np.array([[1.0, 2.0], [0.5, 1.0]]), eta=0.5), [0.5, 0.5])


def test_initial_mixture_is_softmax_of_eta_times_row_sums() -> None:
    a = np.asarray(LEGO_GRAPH)  # row sums [1, 2.5, 1, 1, 1]
    p = skillit_mixture(a, None, eta=0.5)
    z = np.exp(0.5 * np.array([1, 2.5, 1, 1, 1]))
    np.testing.assert_allclose(p, z / z.sum(), rtol=1e-12)
    assert p.argmax() == 1  # skill 2 (1-based) helps the most skills


def test_window_is_recomputed_not_multiplied_and_target_mask_selects_columns() -> None:
    a = np.asarray(LEGO_GRAPH)
    window = np.array([[0.7, 0.69, 0.1, 0.69, 0.69]] * 3)
    # recomputed from the window alone: p ∝ exp(η A Σ_τ L(τ)), with no trace of an earlier mixture
    expected = np.exp(0.5 * a @ window.sum(axis=0))
    np.testing.assert_allclose(skillit_mixture(a, window, 0.5), expected / expected.sum(), rtol=1e-12)
    # fine-tuning for skill 3 (index 2) only: only rows with an edge into column 2 gain weight
    p = skillit_mixture(a, window, 0.5, target_mask(5, [2]))
    expected = np.exp(0.5 * a[:, 2] * window[:, 2].sum())
    np.testing.assert_allclose(p, expected / expected.sum(), rtol=1e-12)
    with pytest.raises(DataError, match="out of range"):
        target_mask(5, [5])


@pytest.mark.parametrize(
    ("graph", "match"),
    [
        ([[1, 0, 0], [0, 1, 0]], "square"),
        ([[1, 0], [0, 1]], "3 skills"),
        ([[1, 0, 0], [0, 1, -0.5], [0, 0, 1]], r"\[1\]\[2\] = -0.5 is negative"),
        ([[1, 0, 0], [0, float("nan"), 0], [0, 0, 1]], "NaN"),
    ],
)
def test_bad_graphs_are_rejected_with_the_fix(graph: list, match: str) -> None:
    with pytest.raises(DataError, match=match):
        validate_graph(graph, 3, "data.skills_graph")


def test_brute_force_and_approximate_estimators() -> None:
    # d_j alone; d_ij on the (i, j) mix measured on j. Only 1→0 beats training 0 alone.
    single = np.array([0.2, 0.3, 0.1])
    pair = np.array([[0.2, 0.25, 0.05], [0.4, 0.3, 0.05], [0.1, 0.2, 0.1]])
    np.testing.assert_array_equal(brute_force_graph(single, pair),
                                  [[1, 0, 0], [0.5, 1, 0], [0, 0, 1]])
    before = np.array([0.7, 0.7, 0.7])
    after = np.array([[0.3, 0.7, 0.8], [0.5, 0.5, 0.7], [0.7, 0.7, 0.6]])  # row i = trained on i
    np.testing.assert_allclose(approximate_graph(before, after),
                               [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.25]], atol=1e-12)


@pytest.mark.parametrize("method", ["approximate", pytest.param("brute", marks=pytest.mark.heavy)])
def test_learn_skills_graph_script_writes_a_usable_graph(tmp_path, method) -> None:
    """The estimator script end to end (tiny model, 3 probe steps): a k x k graph the Skill-It callback accepts,
    the gains it was decided from, and the heatmap."""
    import subprocess
    import sys

    import yaml

    from tests.helpers import ROOT

    proc = subprocess.run(
        [sys.executable, "scripts/learn_skills_graph.py", "--method", method, "--steps", "3", "--warmup-steps", "0",
         "--out", str(tmp_path), "experiment=skillit/lego", "model.d_model=32", "model.n_layers=1",
         "data.n_train=550", "data.n_val_per_skill=8"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = yaml.safe_load((tmp_path / "skills_graph.yaml").read_text())
    graph = validate_graph(doc["graph"], 5, "learned graph")
    assert (tmp_path / "skills_graph.png").is_file()
    if method == "brute":
        assert np.all(np.diag(graph) == 1.0) and set(np.unique(graph)) <= {0.0, 0.5, 1.0}
        gains = np.asarray(doc["gain_pair"])
        single = np.asarray(doc["gain_single"])
        off = ~np.eye(5, dtype=bool)
        clear = off & (np.abs(gains - single[None, :]) > 2e-4)  # the yaml rounds gains to 4 decimals
        np.testing.assert_array_equal(graph[clear] == 0.5, (gains > single[None, :])[clear])  # edge iff d_ij > d_j
    else:
        assert graph.max() == pytest.approx(1.0) and graph.min() >= 0.0
