"""Per-token log-probs through Apple's Cut Cross-Entropy (`cut_cross_entropy`), as a `TokenLogprobsFn`.

Why: on an H100, CCE's fused Triton kernels run forward+backward at 1.0–2.3x the naive time, where our chunked path
takes 1.7–3.3x and our own Triton kernels 3.3–9.6x (docs/benchmarks.md). CCE computes the cross-entropy
−log softmax(e·cᵀ)[y]; we call it with ``reduction="none"`` and return logp = −loss.

What was checked in CCE's source (25.1.1, the version on our GPU machines, and the newer 25.6.x API):

- ``reduction="none"`` backward is exact for ANY per-token upstream gradient: the kernel builds
  d_accum = (softmax − onehot(y)) for each [BLOCK_B, BLOCK_V] tile and multiplies it by ``grad_out[row]`` before the
  dE / dC matmuls, and only the non-ignored rows are visited (ignored rows get no gradient). So DPO / GRPO losses
  need no ``grad_hint``.
- Gradient filtering: with the default ``filter_eps`` ("auto"; the PyPI 25.1.1 wheel: "high", the same eps/32 =
  2.4e-4 in bf16) the backward SKIPS every tile whose |softmax − onehot| entries are all below eps, and it
  accumulates dE / dC with locked bf16 adds.
  That is an approximation, not "the same numbers" (our bar: within the error budget of the fp64 reference that the
  chunked path meets), so this backend passes ``filter_eps=None`` and asks for compensated / fp32 accumulation
  where the installed CCE offers it (git 25.1.x: ``use_kahan=True``; 25.6+: ``accum_e_fp32=accum_c_fp32=True``;
  the PyPI 25.1.1 wheel offers neither, see ``cce_accumulates_exactly``) — what CCE itself calls ``cce_exact``.
  Both cost speed; ``EXACT_KWARGS`` is the one place to relax them if the GPU measurements show the budget holds.
- Dtypes: 25.1.1's backward asserts bf16/fp16 inputs ("Backwards requires embeddings to be bf16 or fp16"), so fp32
  is not routed here (``unsupported_reason``). Temperature is folded into the hidden states (z/T = (h/T)·Wᵀ).
- Bias: 25.1.1 has no ``bias`` argument; a bias is folded in as one extra input column, (h/T, 1)·(W, b/T)ᵀ,
  zero-padded to a multiple of 16 columns (aligned loads). That copies W once per call, so ``auto`` does not route
  biased heads here.
- No entropy: ``with_entropy=True`` is refused here; the dispatcher sends such calls to our own paths.

CCE needs CUDA (an Ampere or newer GPU) and Triton; it is imported only when this backend runs.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect

import torch
from torch import Tensor

from src.kernels.chunked import accumulate_dtype, chunked_token_logprobs
from src.kernels.signature import implements

CCE_DTYPES = (torch.bfloat16, torch.float16)
BIAS_PAD = 16  # columns: the augmented [h, 1] / [W, b] width is padded to a multiple of this
# Exactness switches per CCE API (only those the installed version accepts are passed). See the module docstring.
EXACT_KWARGS = {"filter_eps": None, "use_kahan": True, "accum_e_fp32": True, "accum_c_fp32": True}


@functools.lru_cache(maxsize=1)
def cce_installed() -> bool:
    """True when the `cut_cross_entropy` package can be found (not imported: that compiles nothing, but is slow)."""
    return importlib.util.find_spec("cut_cross_entropy") is not None


def unsupported_reason(device: torch.device, dtype: torch.dtype, *, with_entropy: bool = False) -> str | None:
    """Why CCE cannot run this call (None when it can): the one capability check the dispatcher and the backend
    share, so a forced ``impl="cce"`` fails with the same reason ``auto`` used to skip it."""
    if device.type != "cuda":
        return f"it needs a CUDA device (tensors are on {device.type})"
    if not cce_installed():
        return "the package cut_cross_entropy is not installed (pip install cut-cross-entropy)"
    if with_entropy:
        return "CCE does not compute the entropy (with_entropy=True); use impl='chunked'"
    if dtype not in CCE_DTYPES:
        return (f"CCE's backward takes only bf16/fp16 inputs, got {dtype}; use impl='chunked' (or run under bf16 "
                "autocast)")
    return None


@functools.lru_cache(maxsize=1)
def cce_accumulates_exactly() -> bool:
    """True when the installed CCE can accumulate dE / dC beyond bf16 (``use_kahan`` or ``accum_e_fp32``).

    The PyPI 25.1.1 wheel cannot: its backward adds every vocabulary block's bf16 dE contribution into a bf16
    buffer, and on an H200 (N=4096, V=32768, d=512, random per-token gradient) its dhidden error was 2.4x the
    chunked path's (0.056 vs 0.024, max|truth| 2.5), outside the 2x budget of tests/kernels/test_backends_gpu.py,
    while logp and dweight were more accurate than chunked. So ``auto`` uses CCE only where this is True."""
    if not cce_installed():
        return False
    params = inspect.signature(_cce_call()[0]).parameters
    return "use_kahan" in params or "accum_e_fp32" in params


@functools.lru_cache(maxsize=1)
def _cce_call():
    """(linear_cross_entropy, the exactness kwargs its signature accepts)."""
    from cut_cross_entropy import linear_cross_entropy

    params = inspect.signature(linear_cross_entropy).parameters
    return linear_cross_entropy, {k: v for k, v in EXACT_KWARGS.items() if k in params}


def _fold_bias(h: Tensor, weight: Tensor, bias: Tensor, inv_t: float) -> tuple[Tensor, Tensor]:
    """(h/T, W, b) → (h', W') with h'·W'ᵀ = h/T·Wᵀ + b/T: a column of ones in h', of b/T (computed in fp32, rounded
    once) in W', then zero columns up to BIAS_PAD. The ones are exact, so b/T carries no rounding of 1/T (a bf16
    1/0.7 is 0.08 % off: a systematic shift of every logit's bias). Differentiable through the concatenations."""
    n, d = h.shape
    pad = -(d + 1) % BIAS_PAD
    h_aug = torch.cat([h, h.new_ones(n, 1), h.new_zeros(n, pad)], dim=1)  # [N, d+1+pad]
    b_t = (bias.to(torch.promote_types(bias.dtype, torch.float32)) * inv_t).to(weight.dtype)  # [V]
    w_aug = torch.cat([weight, b_t[:, None], weight.new_zeros(weight.shape[0], pad)], dim=1)  # [V, d+1+pad]
    return h_aug, w_aug


@implements
def cce_token_logprobs(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    bias: Tensor | None = None,
    temperature: float = 1.0,
    ignore_index: int = -100,
    with_entropy: bool = False,
    entropy_grad: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Per-token logp through CCE (`TokenLogprobsFn`): hidden [N, d], weight [V, d], targets [N] → fp32 logp [N].

    Ignored rows give 0 and no gradient; exact gradients for any per-token upstream gradient (module docstring).
    Raises RuntimeError when CCE cannot run the call (CPU, not installed, entropy requested, fp32 inputs).
    """
    reason = unsupported_reason(hidden.device, hidden.dtype, with_entropy=with_entropy)
    if reason is None and weight.dtype != hidden.dtype:
        reason = f"hidden ({hidden.dtype}) and weight ({weight.dtype}) must share a dtype"
    if reason is not None:
        raise RuntimeError(f"impl='cce' cannot run this call: {reason}")
    valid = targets != ignore_index  # [N]
    if not bool(valid.any()):  # no row left would hand CCE an empty row index; chunked handles it, cheaply
        return chunked_token_logprobs(hidden, weight, targets, bias=bias, temperature=temperature,
                                      ignore_index=ignore_index)
    inv_t = 1.0 / temperature
    h = hidden * inv_t if temperature != 1.0 else hidden  # z/T = (h/T)·Wᵀ
    weight = weight.contiguous()  # CCE's backward asserts its gradient buffers share their inputs' strides
    if bias is not None:
        h, weight = _fold_bias(h, weight, bias, inv_t)  # + b/T through a column of ones
    linear_cross_entropy, exact = _cce_call()
    nll = linear_cross_entropy(h, weight, targets, ignore_index=ignore_index, reduction="none", **exact)  # [N]
    # fp32 (fp64 stays fp64); ignored rows: CCE's loss is 0 there, so logp is (-)0 with no gradient
    return nll.to(accumulate_dtype(nll.dtype)).neg()
