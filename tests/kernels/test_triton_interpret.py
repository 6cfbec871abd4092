"""Triton path under TRITON_INTERPRET=1 on CPU (small shapes; the interpreter is slow), same error budget.

On a CUDA machine run with TOKENSMITH_TRITON_CUDA=1 to test the compiled kernels on the GPU instead.
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest
import torch

ON_CUDA = os.environ.get("TOKENSMITH_TRITON_CUDA") == "1" and torch.cuda.is_available()
if not ON_CUDA:
    # The interpreter is chosen when @triton.jit runs, i.e. when our module is imported: set it first, and
    # re-import if another test already imported the module without it.
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")
if "src.kernels.triton_logprobs" in sys.modules:
    importlib.reload(sys.modules["src.kernels.triton_logprobs"])

from src.kernels import token_logprobs  # noqa: E402
from src.kernels.dispatch import triton_available  # noqa: E402
from tests.kernels.kernel_cases import CASES, Case, check_error_budget, make_inputs  # noqa: E402

DEVICE = "cuda" if ON_CUDA else "cpu"


def test_triton_importable() -> None:
    assert triton_available()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_error_budget(case: Case, dtype: torch.dtype) -> None:
    check_error_budget("triton", case, dtype, device=DEVICE)


def test_matches_chunked_with_ignored_rows_and_no_bias_grad() -> None:
    """Ignored rows give 0 / no gradient; a bias that needs no grad and a weight that does are handled."""
    case = Case(n=20, d=12, v=45, bias=True, temperature=0.8, n_ignored=6, entropy_grad=True)
    x = make_inputs(case, torch.float32)
    ignored = x["targets"] == -100
    res = {}
    for impl in ("chunked", "triton"):
        h = x["hidden"].to(DEVICE).requires_grad_(True)
        w = x["weight"].to(DEVICE).requires_grad_(True)
        logp, ent = token_logprobs(h, w, x["targets"].to(DEVICE), bias=x["bias"].to(DEVICE), temperature=0.8,
                                   with_entropy=True, entropy_grad=True, impl=impl)
        ((logp * x["g_logp"].to(DEVICE)).sum() + (ent * x["g_ent"].to(DEVICE)).sum()).backward()
        res[impl] = [t.detach().cpu() for t in (logp, ent, h.grad, w.grad)]
    for a, b in zip(res["chunked"], res["triton"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    logp, ent, dh, _ = res["triton"]
    assert torch.all(logp[ignored] == 0) and torch.all(ent[ignored] == 0) and torch.all(dh[ignored] == 0)


def test_non_contiguous_bias_is_read_correctly() -> None:
    """A bias that is a strided view (e.g. one column of a [V, 2] parameter) must give the chunked path's results;
    the kernels read the bias with stride 1 (it was 2.1 nats off before the bias was made contiguous)."""
    gen = torch.Generator().manual_seed(0)
    h, w = torch.randn(9, 8, generator=gen), torch.randn(40, 8, generator=gen)
    b = torch.randn(40, 2, generator=gen)[:, 0]  # stride 2
    y = torch.randint(0, 40, (9,), generator=gen)
    got = token_logprobs(h.to(DEVICE), w.to(DEVICE), y.to(DEVICE), bias=b.to(DEVICE), impl="triton").cpu()
    want = token_logprobs(h, w, y, bias=b, impl="chunked")
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
