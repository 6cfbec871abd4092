"""The CCE wrapper's own algebra on CPU: sign, temperature and bias folding, ignored rows, gradients.

CCE itself needs CUDA (tests/kernels/test_backends_gpu.py checks the real library); here its
`linear_cross_entropy(e, c, targets, ignore_index=, reduction="none")` is replaced by the same cross-entropy on
materialised logits, so what is checked is everything the wrapper adds around it, in float64.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from src.kernels import cce_backend, reference_token_logprobs


def _fake_cce(e, c, targets, *, ignore_index, reduction):  # noqa: ANN001, ANN202
    assert reduction == "none"
    return F.cross_entropy(e @ c.t(), targets, ignore_index=ignore_index, reduction="none")


@pytest.mark.parametrize("bias", [False, True])
def test_wrapper_matches_reference_with_temperature_bias_and_ignored_rows(bias: bool,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cce_backend, "_cce_call", lambda: (_fake_cce, {}))
    monkeypatch.setattr(cce_backend, "unsupported_reason", lambda *a, **k: None)
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(13, 7, generator=gen, dtype=torch.float64)
    w = torch.randn(29, 7, generator=gen, dtype=torch.float64)
    b = torch.randn(29, generator=gen, dtype=torch.float64) if bias else None
    y = torch.randint(0, 29, (13,), generator=gen)
    y[[2, 5]] = -100
    g = torch.randn(13, generator=gen, dtype=torch.float64)  # arbitrary per-token upstream gradient
    grads = []
    for fn in (cce_backend.cce_token_logprobs, reference_token_logprobs):
        leaves = [t.clone().requires_grad_(True) for t in (h, w, b) if t is not None]
        logp = fn(leaves[0], leaves[1], y, bias=leaves[2] if bias else None, temperature=0.7)
        (logp * g).sum().backward()
        grads.append([logp.detach()] + [t.grad for t in leaves])
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert (grads[0][0][[2, 5]] == 0).all() and (grads[0][1][[2, 5]] == 0).all()


def test_all_rows_ignored_gives_zeros(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cce_backend, "unsupported_reason", lambda *a, **k: None)
    h = torch.randn(3, 4, requires_grad=True)
    logp = cce_backend.cce_token_logprobs(h, torch.randn(5, 4), torch.full((3,), -100))
    logp.sum().backward()
    assert (logp == 0).all() and (h.grad == 0).all()
