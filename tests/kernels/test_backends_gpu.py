"""Third-party GPU backends (Cut Cross-Entropy) against the float64 reference, and the `auto` rule on CUDA.

Budget (not invented): in bf16, for logp and every gradient, |backend − fp64 truth| ≤ 2·|chunked − truth| +
ATOL_REL·max|truth|, where chunked is our own path run on the same bf16 inputs and upstream gradients in the same
test (the budget the auto-routed path replaces). Measured errors are reported as warnings, so a plain
`pytest -q -m gpu` run shows them in its summary.

    python3 -m pytest -p no:xdist -q -m gpu tests/kernels/test_backends_gpu.py
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import dataclass

import pytest
import torch

CUDA = torch.cuda.is_available()
if CUDA:
    # tests/conftest.py turns on the Triton interpreter unless TOKENSMITH_TRITON_CUDA=1; CCE's kernels must be
    # compiled. Triton reads this when a kernel is created, i.e. when cut_cross_entropy is first imported (later).
    os.environ["TRITON_INTERPRET"] = "0"

from src.kernels import reference_token_logprobs, resolve_impl, token_logprobs  # noqa: E402

HAS_CCE = importlib.util.find_spec("cut_cross_entropy") is not None
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU"),
    pytest.mark.skipif(not HAS_CCE, reason="cut_cross_entropy is not installed"),
]

DEVICE = "cuda"
ATOL_REL = 1e-3  # slack relative to max|truth|: half the bf16 REL_TOL of tests/kernels/kernel_cases.py
TEMPERATURE = 0.7


@dataclass(frozen=True)
class Shape:
    n: int
    v: int
    d: int


SMALL, LARGE = Shape(512, 4096, 256), Shape(4096, 32768, 512)


def _inputs(shape: Shape, bias: bool, seed: int = 0) -> dict[str, torch.Tensor | None]:
    """fp32 CPU inputs with realistic logit spread (std ≈ 3), ~10 % ignored rows, a random per-token gradient."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(shape.n, shape.d, generator=gen)  # [N, d]
    weight = torch.randn(shape.v, shape.d, generator=gen) * (3.0 / shape.d**0.5)  # [V, d]
    b = torch.randn(shape.v, generator=gen) if bias else None  # [V]
    targets = torch.randint(0, shape.v, (shape.n,), generator=gen)  # [N]
    targets[torch.randperm(shape.n, generator=gen)[: shape.n // 10]] = -100
    g = torch.randn(shape.n, generator=gen)  # [N] arbitrary upstream gradient (DPO / GRPO-like)
    return dict(hidden=hidden, weight=weight, bias=b, targets=targets, g=g)


def _run(impl: str | None, inp: dict, dtype: torch.dtype, loss: str) -> dict[str, torch.Tensor]:
    """Forward + backward on DEVICE in ``dtype``; loss "ce" = mean −logp over non-ignored rows, "random" = Σ g·logp.
    Returns logp and the gradients in float64 (CPU)."""
    leaves = {k: inp[k].to(DEVICE, dtype).requires_grad_(True) for k in ("hidden", "weight", "bias")
              if inp[k] is not None}
    y = inp["targets"].to(DEVICE)
    mask = (y != -100).float()  # [N]  (fp32: a bf16 sum would round the token count, e.g. 461 → 460)
    n_valid = int(mask.sum())
    kw = dict(bias=leaves.get("bias"), temperature=TEMPERATURE)
    if impl == "truth":
        logp = reference_token_logprobs(leaves["hidden"], leaves["weight"], y, **kw)
    else:  # chunked gets the CE grad_hint as the LM objective passes it; other paths ignore it
        logp = token_logprobs(leaves["hidden"], leaves["weight"], y, impl=impl, **kw,
                              grad_hint=mask if loss == "ce" else None)
    if loss == "ce":
        obj = -(logp * mask.to(logp.dtype)).sum() / n_valid
    else:
        obj = (logp * inp["g"].to(DEVICE, logp.dtype)).sum()
    obj.backward()
    out = {"logp": logp.detach().double().cpu()}
    out.update({"d" + k: t.grad.double().cpu() for k, t in leaves.items()})
    return out


CASES = [pytest.param(s, b, loss, id=f"N{s.n}-V{s.v}-d{s.d}-{'bias' if b else 'nobias'}-{loss}")
         for s, b in ((SMALL, False), (SMALL, True), (LARGE, False)) for loss in ("ce", "random")]


@pytest.mark.parametrize(("shape", "bias", "loss"), CASES)
def test_cce_bf16_within_chunked_error_budget(shape: Shape, bias: bool, loss: str) -> None:
    """CCE (forced and via auto where auto routes to it) matches the fp64 truth as well as our chunked path does:
    for cross-entropy and for an arbitrary per-token upstream gradient, T ≠ 1, ignored rows (zero logp, no grad)."""
    is_float = lambda v: isinstance(v, torch.Tensor) and v.is_floating_point()  # noqa: E731
    # Every path sees the same bf16-rounded inputs and upstream gradients; the truth runs on them in float64.
    inp = {k: v.bfloat16().float() if is_float(v) else v for k, v in _inputs(shape, bias).items()}
    truth = _run("truth", {k: v.double() if is_float(v) else v for k, v in inp.items()}, torch.float64, loss)
    chunked = _run("chunked", inp, torch.bfloat16, loss)
    cce = _run("cce", inp, torch.bfloat16, loss)
    naive = _run("reference", inp, torch.bfloat16, loss)  # reported only: the project-wide bar (kernel_cases.py)
    ignored = inp["targets"] == -100
    assert (cce["logp"][ignored] == 0).all() and (cce["dhidden"][ignored] == 0).all()
    report, failures = [], []
    for key, ref in truth.items():
        scale = ref.abs().max().item()
        e_cce, e_chunked, e_naive = ((run[key] - ref).abs().max().item() for run in (cce, chunked, naive))
        budget = 2 * e_chunked + ATOL_REL * scale
        report.append(f"{key}: cce {e_cce:.3g} chunked {e_chunked:.3g} naive {e_naive:.3g} (max|truth| {scale:.3g})")
        if not e_cce <= budget:
            failures.append(f"{key}: cce err {e_cce:.3g} > 2·chunked err {e_chunked:.3g} + {ATOL_REL}·{scale:.3g}")
    warnings.warn(f"bf16 errors vs fp64, N{shape.n} V{shape.v} d{shape.d} bias={bias} {loss}: " + "; ".join(report),
                  stacklevel=1)
    if failures and not _accumulates_exactly():
        # Known and measured (H200): the PyPI 25.1.1 wheel adds each vocabulary block's dE into a bf16 buffer, so
        # its dhidden error grows with V (2.4x chunked's at V=32k); auto does not route to it for that reason.
        pytest.xfail("CCE without exact accumulation (auto keeps chunked): " + "; ".join(failures))
    assert not failures, "; ".join(failures)


def _accumulates_exactly() -> bool:
    from src.kernels.cce_backend import cce_accumulates_exactly

    return cce_accumulates_exactly()


def _errors(run: dict, truth: dict) -> dict[str, float]:
    return {k: (run[k] - ref).abs().max().item() for k, ref in truth.items()}


@pytest.mark.parametrize("loss", ["ce", "random"])
def test_cce_default_settings_change_only_gradients(loss: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """CCE's own defaults (gradient filtering, plain bf16 accumulation) against the exact settings the backend uses
    (src/kernels/cce_backend.py EXACT_KWARGS), at the larger shape. The forward must not change (filtering only
    skips gradient tiles); whether the gradients stay within the budget above is reported (warning), so the GPU
    run tells whether EXACT_KWARGS can be relaxed for speed."""
    from cut_cross_entropy import linear_cross_entropy

    from src.kernels import cce_backend

    is_float = lambda v: isinstance(v, torch.Tensor) and v.is_floating_point()  # noqa: E731
    inp = {k: v.bfloat16().float() if is_float(v) else v for k, v in _inputs(LARGE, False).items()}
    truth = _run("truth", {k: v.double() if is_float(v) else v for k, v in inp.items()}, torch.float64, loss)
    chunked, exact = _run("chunked", inp, torch.bfloat16, loss), _run("cce", inp, torch.bfloat16, loss)
    monkeypatch.setattr(cce_backend, "_cce_call", lambda: (linear_cross_entropy, {}))  # CCE's defaults
    fast = _run("cce", inp, torch.bfloat16, loss)
    torch.testing.assert_close(fast["logp"], exact["logp"], rtol=0, atol=1e-4 * truth["logp"].abs().max().item())
    e_fast, e_exact, e_chunked = _errors(fast, truth), _errors(exact, truth), _errors(chunked, truth)
    within = all(e_fast[k] <= 2 * e_chunked[k] + ATOL_REL * truth[k].abs().max().item() for k in truth)
    warnings.warn(f"CCE defaults vs exact settings, {loss}, N{LARGE.n} V{LARGE.v} d{LARGE.d}: within budget: {within}; "
                  + "; ".join(f"{k}: defaults {e_fast[k]:.3g} exact {e_exact[k]:.3g} chunked {e_chunked[k]:.3g}"
                              for k in truth), stacklevel=1)


def test_cce_refuses_fp32_and_entropy_with_one_clear_error() -> None:
    h, w = torch.randn(8, 16, device="cuda"), torch.randn(32, 16, device="cuda")
    y = torch.randint(0, 32, (8,), device="cuda")
    with pytest.raises(RuntimeError, match="bf16/fp16"):
        token_logprobs(h, w, y, impl="cce")
    with pytest.raises(RuntimeError, match="entropy"):
        token_logprobs(h.bfloat16(), w.bfloat16(), y, impl="cce", with_entropy=True)


def _auto_cce() -> str:
    """What auto picks for a plain bf16 CUDA call: cce only when the installed CCE accumulates beyond bf16."""
    return "cce" if _accumulates_exactly() else "chunked"


def test_auto_routes_to_cce_on_cuda_and_keeps_entropy_fp32_and_bias_on_chunked() -> None:
    cuda = torch.device("cuda")
    assert resolve_impl("auto", cuda, dtype=torch.bfloat16) == _auto_cce()
    assert resolve_impl("auto", cuda, dtype=torch.bfloat16, with_entropy=True) == "chunked"
    assert resolve_impl("auto", cuda, dtype=torch.float32) == "chunked"
    assert resolve_impl("auto", cuda, dtype=torch.bfloat16, has_bias=True) == "chunked"
    # Through the dispatcher: an entropy call on bf16 CUDA tensors runs (on chunked) and returns both outputs.
    h, w = torch.randn(64, 32, device="cuda").bfloat16(), torch.randn(128, 32, device="cuda").bfloat16()
    y = torch.randint(0, 128, (64,), device="cuda")
    logp, ent = token_logprobs(h, w, y, with_entropy=True)
    assert logp.shape == ent.shape == (64,) and torch.isfinite(ent).all()


def test_cce_under_bf16_autocast_reaches_fp32_weights() -> None:
    """Lightning's bf16-mixed: fp32 parameters, autocast on. auto sees the bf16 matmul dtype (and picks CCE where
    it accumulates exactly); CCE gets bf16 operands, the gradient still reaches the fp32 master weight, and logp
    matches the chunked path's."""
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(256, 64, generator=gen).cuda()
    w = (torch.randn(1024, 64, generator=gen) * 0.4).cuda().requires_grad_(True)
    y = torch.randint(0, 1024, (256,), generator=gen).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert resolve_impl(None, h.device, dtype=torch.get_autocast_dtype("cuda")) == _auto_cce()
        logp = token_logprobs(h, w, y, impl="cce")
        ref = token_logprobs(h, w, y, impl="chunked")
    logp.sum().backward()
    assert w.grad is not None and w.grad.dtype == torch.float32 and torch.isfinite(w.grad).all()
    torch.testing.assert_close(logp, ref.float(), rtol=0, atol=0.1)
