"""Skills graphs and the Skill-It mixture rule (Chen et al. 2023, Algorithm 1). Pure numpy, no I/O, no torch.

Orientation (docs/skillit.md): `A[i, j] > 0` when training on skill i helps skill j (row = training skill,
column = evaluated skill). The mixture puts weight on *training* skills, so it sums over columns:

    p[i] ∝ exp(η · Σ_τ Σ_j A[i, j] · L_j(τ))        (τ over the last w evaluations)

Skills whose helped skills still have a high loss get more weight. The rule is recomputed from the window at
every round (not multiplied into the previous p), as in the spec. With no losses yet (round 1) the losses are
taken as 1, which gives the spec's initial mixture p_1[i] ∝ exp(η · Σ_j A[i, j]).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from src.data.errors import DataError


def validate_graph(
    graph: Sequence[Sequence[float]] | np.ndarray, n_skills: int, where: str = "skills graph"
) -> np.ndarray:
    """The graph as a float64 `[k, k]` array, or a DataError naming what is wrong and how to fix it."""
    try:
        a = np.asarray(graph, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(
            f"{where}: not a numeric matrix ({e}); give a list of {n_skills} rows of {n_skills} numbers"
        ) from None
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise DataError(
            f"{where}: must be square, got shape {list(a.shape)}; give {n_skills} rows of {n_skills} numbers"
        )
    if a.shape[0] != n_skills:
        raise DataError(
            f"{where}: is {a.shape[0]}x{a.shape[0]} but the data has {n_skills} skills; give one row and one column "
            "per skill (row = training skill, column = evaluated skill)"
        )
    if not np.all(np.isfinite(a)):
        raise DataError(f"{where}: contains NaN or inf; every entry must be a finite number >= 0")
    if np.any(a < 0):
        i, j = map(int, np.argwhere(a < 0)[0])
        raise DataError(f"{where}: entry [{i}][{j}] = {a[i, j]} is negative; edges are non-negative (0 = no edge)")
    return a


def target_mask(n_skills: int, target_skills: Sequence[int | str] | None,
                names: Sequence[str] | None = None) -> np.ndarray:
    """`[k]` 0/1 mask of the evaluated skills that count (fine-tuning for targets); None = all skills. A target is
    a skill index from 0, or a skill name from `names` (the data module's, e.g. a skills file's)."""
    m = np.zeros(n_skills) if target_skills is not None else np.ones(n_skills)
    for j in target_skills or ():
        if isinstance(j, str) and not j.lstrip("-").isdigit():
            if names is None or j not in names:
                raise DataError(f"target skill {j!r} is not a skill name; the skills are {list(names or [])}")
            j = list(names).index(j)
        if not 0 <= int(j) < n_skills:
            raise DataError(f"target skill {j} is out of range [0, {n_skills}); list skill indices from 0")
        m[int(j)] = 1.0
    if target_skills is not None and not m.any():
        raise DataError("target_skills is empty; list at least one skill index or set it to null (all skills)")
    return m


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


def skillit_mixture(
    graph: np.ndarray,
    losses_window: np.ndarray | None,
    eta: float,
    target: np.ndarray | None = None,
) -> np.ndarray:
    """Skill-It weights p `[k]` from graph A `[k, k]` and the window of per-skill losses `[w, k]` (None = round 1).

    p[i] ∝ exp(η Σ_τ Σ_j A[i, j] · mask_j · L_j(τ)); with no losses, L ≡ 1 (the initial mixture).
    """
    k = graph.shape[0]
    mask = np.ones(k) if target is None else np.asarray(target, dtype=np.float64)
    if losses_window is None or len(losses_window) == 0:
        summed = np.ones(k)  # [k]
    else:
        lw = np.asarray(losses_window, dtype=np.float64).reshape(-1, k)  # [w, k]
        summed = lw.sum(axis=0)  # [k]
    score = graph @ (mask * summed)  # [k]: Σ_j A[i, j] m_j ΣL_j
    return softmax(eta * score)


def brute_force_graph(gain_single: np.ndarray, gain_pair: np.ndarray, edge: float = 0.5) -> np.ndarray:
    """Brute-force estimator: edge i→j when training on the balanced mix of i and j reduced L_j more than j alone.

    gain_single `[k]`: d_j = L_j(before) − L_j(after training on j alone).
    gain_pair `[k, k]`: d_ij = L_j(before) − L_j(after training on the (i, j) mix), measured on skill j.
    Returns A with 1 on the diagonal and `edge` (the paper's 0.5) on detected edges.
    """
    k = len(gain_single)
    a = np.where(np.asarray(gain_pair) > np.asarray(gain_single)[None, :], edge, 0.0)  # [k, k]
    a[np.arange(k), np.arange(k)] = 1.0
    return a


def approximate_graph(loss_before: np.ndarray, loss_after: np.ndarray) -> np.ndarray:
    """Approximate estimator: A[i, j] = max(0, L_j(before) − L_j(after training on i alone)), scaled to max 1.

    loss_before `[k]`, loss_after `[k, k]` (row i = the run trained on skill i, column j = evaluated skill j).
    Scaling by the largest gain keeps η meaning the same as for hand-written graphs (entries in [0, 1]).
    """
    gains = np.maximum(0.0, np.asarray(loss_before)[None, :] - np.asarray(loss_after))  # [k, k]
    top = gains.max()
    return gains / top if top > 0 else gains
