"""One entry point, ``token_logprobs``, that routes to the reference, chunked, CCE or Triton implementation.

The choice is made per call (``impl=``), else by a process-wide default (``set_default_impl`` or the
``TOKENSMITH_KERNEL_IMPL`` environment variable, so a Hydra config switch can force one), else automatically by
``auto_impl``: Apple's Cut Cross-Entropy (``cce``) on CUDA for bf16/fp16 calls without entropy or bias when an
installed version accumulates its gradients beyond bf16 (not the PyPI 25.1.1 wheel), the chunked PyTorch path
everywhere else (always on CPU). Our own Triton path is experimental and
opt-in only: it is slower than both on every GPU shape measured (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import torch
from torch import Tensor

from src.kernels.reference import reference_token_logprobs
from src.kernels.signature import TokenLogprobsFn, implements

ENV_VAR = "TOKENSMITH_KERNEL_IMPL"

_default_impl: str | None = None


def set_default_impl(name: str | None) -> None:
    """Force an implementation for every later call that passes no ``impl`` (None or "auto" restores auto)."""
    global _default_impl
    if name is not None and name not in IMPLS:
        raise ValueError(f"unknown kernel impl {name!r}; expected one of {IMPLS}")
    _default_impl = None if name in (None, "auto") else name


def get_default_impl() -> str:
    """The process-wide default: set_default_impl's value, else the environment variable, else "auto"."""
    if _default_impl is not None:
        return _default_impl
    name = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if name not in IMPLS:
        raise ValueError(f"{ENV_VAR}={name!r}; expected one of {IMPLS}")
    return name


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """True when the Triton path can be imported (Triton installed and our kernels compile-importable)."""
    try:
        import src.kernels.triton_logprobs  # noqa: F401
    except Exception:  # ImportError, or a broken Triton install: fall back rather than fail a training run
        return False
    return True


def _chunked() -> TokenLogprobsFn:
    from src.kernels.chunked import chunked_token_logprobs

    return chunked_token_logprobs


def _triton() -> TokenLogprobsFn:
    if not triton_available():
        raise RuntimeError("impl='triton' requested but Triton (or src.kernels.triton_logprobs) is unavailable")
    from src.kernels.triton_logprobs import triton_token_logprobs

    return triton_token_logprobs


def _cce() -> TokenLogprobsFn:
    from src.kernels.cce_backend import cce_token_logprobs  # imports nothing of CCE until a call runs

    return cce_token_logprobs


# name -> loader of a `TokenLogprobsFn` (src/kernels/signature.py). Loaders, so that Triton / CCE are imported only
# when chosen. The routing below passes every implementation the contract's arguments, and the speed hints
# (`chunk_size`, `grad_hint`) only to those listed in TAKES_HINTS; the others would ignore them anyway.
IMPLEMENTATIONS: dict[str, Callable[[], TokenLogprobsFn]] = {
    "reference": lambda: reference_token_logprobs,
    "chunked": _chunked,
    "triton": _triton,  # experimental: slower than chunked and cce on every GPU shape measured
    "cce": _cce,
}
TAKES_HINTS = frozenset({"chunked"})
IMPLS = ("auto", *IMPLEMENTATIONS)


def resolve_impl(impl: str | None, device: torch.device, *, dtype: torch.dtype | None = None,
                 with_entropy: bool = False, has_bias: bool = False) -> str:
    """Turn a requested impl (None/"auto"/name) into the concrete one used for tensors on ``device``.

    ``dtype`` (the dtype the matmul will run in, after autocast), ``with_entropy`` and ``has_bias`` describe the
    call for ``auto_impl``; a named impl is returned as is (it raises itself if it cannot run the call).
    """
    name = get_default_impl() if impl is None else impl
    if name not in IMPLS:
        raise ValueError(f"unknown kernel impl {name!r}; expected one of {IMPLS}")
    if name != "auto":
        return name
    return auto_impl(device, dtype, with_entropy=with_entropy, has_bias=has_bias)


def auto_impl(device: torch.device, dtype: torch.dtype | None, *, with_entropy: bool = False,
              has_bias: bool = False) -> str:
    """The `auto` rule, in one place so it can follow the measurements: the fastest backend that gives the same
    numbers (within the fp64-reference error budget of tests/kernels) on this device.

    - ``cce`` on CUDA when cut_cross_entropy is installed and accumulates its gradients beyond bf16
      (``cce_accumulates_exactly``: not the PyPI 25.1.1 wheel, whose dhidden error was 2.4x chunked's on an H200),
      and the call is bf16/fp16, without entropy and without a bias: on an H100 CCE is 1.0–2.3x the naive
      forward+backward time, the chunked path 1.7–3.3x (docs/benchmarks.md); run exact (no gradient filtering:
      src/kernels/cce_backend.py). A bias is supported by the backend only through a per-call copy of W, so biased
      heads stay on chunked. To accept CCE 25.1.1's bf16 accumulation, drop the ``cce_accumulates_exactly()`` term.
    - ``chunked`` otherwise: CPU (bit-identical to before), fp32 (CCE 25.1.1's backward is bf16/fp16 only), entropy.
    Our Triton path is never chosen automatically (experimental: 3.3–9.6x the naive time on the H100).
    """
    from src.kernels import cce_backend

    if (dtype is not None and not has_bias
            and cce_backend.unsupported_reason(device, dtype, with_entropy=with_entropy) is None
            and cce_backend.cce_accumulates_exactly()):
        return "cce"
    return "chunked"


def matmul_dtype(hidden: Tensor) -> torch.dtype:
    """The dtype the fused paths' matmul runs in: the autocast dtype inside an autocast region (cast_like_autocast
    casts to it), else the input's."""
    device_type = hidden.device.type
    if hidden.is_floating_point() and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return hidden.dtype


def cast_like_autocast(hidden: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Inside an autocast region, cast float inputs to the autocast dtype, as autocast does for F.linear.

    A custom autograd.Function is invisible to autocast (and its `out=` matmuls are never autocast), so under
    Lightning's bf16-mixed the fp32 master weight and the fp32 RMSNorm output would otherwise run the whole
    [N, V] matmul and its backward in fp32: measured 1.5x slower per step on an H100 for a 370M model. The casts
    are differentiable, so gradients still reach the fp32 parameters; the kernels accumulate in fp32 anyway.
    """
    device_type = hidden.device.type
    if not torch.is_autocast_enabled(device_type):
        return hidden, weight, bias
    dtype = torch.get_autocast_dtype(device_type)
    cast = lambda t: t.to(dtype) if t is not None and t.is_floating_point() and t.dtype != dtype else t
    return cast(hidden), cast(weight), cast(bias)


@implements
def token_logprobs(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    bias: Tensor | None = None,
    temperature: float = 1.0,
    ignore_index: int = -100,
    with_entropy: bool = False,
    entropy_grad: bool = False,
    chunk_size: int | None = None,
    impl: str | None = None,
    grad_hint: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Per-token log π(y) (and entropy) of softmax((h·Wᵀ + b) / temperature), without needing [N, V] logits: the
    `TokenLogprobsFn` contract (src/kernels/signature.py), routed to the implementation named by ``impl``.

    hidden [..., d], weight [V, d], targets [...] (long), bias [V] or None; leading dims are flattened to N and
    restored on the outputs. Returns logp [...] or (logp, entropy) when ``with_entropy``. Rows whose target is
    ``ignore_index`` give 0 and get no gradient. Differentiable w.r.t. hidden, weight and bias for ANY upstream
    gradient (DPO, GRPO, weighted CE); entropy is differentiable only with ``entropy_grad=True``.
    ``chunk_size`` (rows per chunk) overrides the chunked path's memory-budget choice; other paths ignore it.
    ``grad_hint`` [...]: per-token weights w when the caller's loss is c·Σ w·logp for a scalar c (cross-entropy:
    the label mask). The chunked path then builds the gradients during the forward (3 matmuls, not 4) and the
    backward only rescales them; a loss of any other form still gets exact gradients (the backward detects it and
    recomputes). A speed hint only: results do not depend on it (up to a 1e-5 relative check in fp32, 1e-12 in
    fp64), and the other paths ignore it.
    """
    if hidden.shape[-1] != weight.shape[-1]:
        raise ValueError(f"hidden [..., {hidden.shape[-1]}] and weight [V, {weight.shape[-1]}] disagree on d")
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and targets {tuple(targets.shape)} disagree on rows")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if grad_hint is not None and grad_hint.shape != targets.shape:
        raise ValueError(f"grad_hint {tuple(grad_hint.shape)} and targets {tuple(targets.shape)} disagree on rows")
    lead = targets.shape
    h = hidden.reshape(-1, hidden.shape[-1])  # [N, d]
    y = targets.reshape(-1)  # [N]
    dtype = matmul_dtype(h) if matmul_dtype(h) == matmul_dtype(weight) else None  # mixed: no fused-kernel dtype
    name = resolve_impl(impl, h.device, dtype=dtype, with_entropy=with_entropy, has_bias=bias is not None)
    if name != "reference":  # the reference path's matmul is autocast like any user's naive code
        h, weight, bias = cast_like_autocast(h, weight, bias)
    kwargs = dict(bias=bias, temperature=temperature, ignore_index=ignore_index, with_entropy=with_entropy,
                  entropy_grad=entropy_grad)
    if name in TAKES_HINTS:
        kwargs.update(chunk_size=chunk_size, grad_hint=grad_hint.reshape(-1) if grad_hint is not None else None)
    out = IMPLEMENTATIONS[name]()(h, weight, y, **kwargs)
    if with_entropy:
        logp, entropy = out
        return logp.reshape(lead), entropy.reshape(lead)
    return out.reshape(lead)
