"""Triton linear → log-prob / entropy (Cut-Cross-Entropy style): [N, V] never reaches global memory.

Forward: each program owns a block of rows and a contiguous split of the vocabulary; it walks that split in
[BLOCK_N, BLOCK_V] tiles, computing each logits tile as a blockwise matmul (fp32 accumulation) and folding it into
an online logsumexp (running max m, Σe = Σ exp(z − m), Σe·(z − m) for the entropy, and z_y). The per-split partials
([splits, N]) are merged in PyTorch: splitting V keeps the GPU busy when N is small.
Backward: each program recomputes one logits tile, forms dz from the saved lse (and Σ p z) and the per-token
upstream gradients, and atomically adds dz·W into dh and dzᵀ·h into dW (fp32 buffers), dz summed into db.

On CPU this runs only under TRITON_INTERPRET=1 (tests); there a single config is used because the interpreter has
no driver to autotune against.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from src.kernels.signature import implements

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _fwd_configs() -> list[triton.Config]:
    if INTERPRET:
        return [triton.Config({"BLOCK_N": 16, "BLOCK_V": 32, "BLOCK_D": 16})]
    return [
        triton.Config({"BLOCK_N": 64, "BLOCK_V": 128, "BLOCK_D": 64}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_N": 128, "BLOCK_V": 128, "BLOCK_D": 32}, num_warps=8, num_stages=4),
        triton.Config({"BLOCK_N": 128, "BLOCK_V": 64, "BLOCK_D": 64}, num_warps=4, num_stages=3),
    ]


def _bwd_configs() -> list[triton.Config]:
    if INTERPRET:
        return [triton.Config({"BLOCK_N": 16, "BLOCK_V": 32, "BLOCK_D": 16})]
    return [
        triton.Config({"BLOCK_N": 64, "BLOCK_V": 128, "BLOCK_D": 64}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_N": 128, "BLOCK_V": 128, "BLOCK_D": 64}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_N": 64, "BLOCK_V": 64, "BLOCK_D": 64}, num_warps=4, num_stages=3),
    ]


@triton.jit
def _logits_tile(h_ptr, w_ptr, b_ptr, rows, cols, rmask, cmask, D, inv_t,
                 HAS_BIAS: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr):
    """(h[rows]·W[cols]ᵀ + b[cols]) / T as an fp32 [BLOCK_N, BLOCK_V] tile (padding rows/cols are garbage)."""
    acc = tl.zeros((BLOCK_N, BLOCK_V), dtype=tl.float32)
    for k in range(0, D, BLOCK_D):
        ks = k + tl.arange(0, BLOCK_D)
        kmask = ks < D
        h = tl.load(h_ptr + rows[:, None] * D + ks[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)
        w = tl.load(w_ptr + cols[None, :] * D + ks[:, None], mask=cmask[None, :] & kmask[:, None], other=0.0)
        if UPCAST:  # exact bf16 → fp32, works around the interpreter's broken bf16 dot
            h = h.to(tl.float32)
            w = w.to(tl.float32)
        if IEEE:  # noqa: SIM108  (constexpr branch: only one dot is compiled)
            acc = tl.dot(h, w, acc, input_precision="ieee")
        else:
            acc = tl.dot(h, w, acc)
    if HAS_BIAS:
        acc += tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    return acc * inv_t


@triton.autotune(configs=_fwd_configs(), key=["V", "D"])
@triton.jit
def _fwd_kernel(h_ptr, w_ptr, b_ptr, y_ptr, m_ptr, s_ptr, t_ptr, tz_ptr, N, V, D, n_splits, inv_t,
                HAS_BIAS: tl.constexpr, WITH_ENT: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < N
    y = tl.load(y_ptr + rows, mask=rmask, other=-1)
    n_tiles = tl.cdiv(V, BLOCK_V)
    tiles_per_split = tl.cdiv(n_tiles, n_splits)
    m = tl.full((BLOCK_N,), float("-inf"), dtype=tl.float32)  # running max
    s = tl.zeros((BLOCK_N,), dtype=tl.float32)  # Σ exp(z − m)
    t = tl.zeros((BLOCK_N,), dtype=tl.float32)  # Σ exp(z − m)·(z − m)
    tz = tl.zeros((BLOCK_N,), dtype=tl.float32)  # z_y (found in exactly one split)
    for i in range(0, tiles_per_split):
        cols = (pid_s * tiles_per_split + i) * BLOCK_V + tl.arange(0, BLOCK_V)
        cmask = cols < V
        z = _logits_tile(h_ptr, w_ptr, b_ptr, rows, cols, rmask, cmask, D, inv_t,
                         HAS_BIAS, IEEE, UPCAST, BLOCK_N, BLOCK_V, BLOCK_D)
        z = tl.where(cmask[None, :], z, float("-inf"))
        tz += tl.sum(tl.where(cols[None, :] == y[:, None], z, 0.0), axis=1)
        m_new = tl.maximum(m, tl.max(z, axis=1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # an all-padding tile leaves m at −inf
        alpha = tl.exp(m - m_ref)
        e = tl.exp(z - m_ref[:, None])  # [BLOCK_N, BLOCK_V], 0 on padding
        if WITH_ENT:
            shift = s * tl.where(s > 0, m - m_ref, 0.0)
            t = alpha * (t + shift) + tl.sum(e * tl.where(cmask[None, :], z - m_ref[:, None], 0.0), axis=1)
        s = s * alpha + tl.sum(e, axis=1)
        m = m_new
    out = pid_s * N + rows
    tl.store(m_ptr + out, m, mask=rmask)
    tl.store(s_ptr + out, s, mask=rmask)
    tl.store(tz_ptr + out, tz, mask=rmask)
    if WITH_ENT:
        tl.store(t_ptr + out, t, mask=rmask)


@triton.autotune(configs=_bwd_configs(), key=["V", "D"], reset_to_zero=["dh_ptr", "dw_ptr", "db_ptr"])
@triton.jit
def _bwd_kernel(h_ptr, w_ptr, b_ptr, y_ptr, lse_ptr, pz_ptr, g_ptr, gh_ptr, dh_ptr, dw_ptr, db_ptr,
                N, V, D, inv_t,
                HAS_BIAS: tl.constexpr, USE_GH: tl.constexpr, NEED_DH: tl.constexpr, NEED_DW: tl.constexpr,
                NEED_DB: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_v = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    rmask = rows < N
    cmask = cols < V
    z = _logits_tile(h_ptr, w_ptr, b_ptr, rows, cols, rmask, cmask, D, inv_t,
                     HAS_BIAS, IEEE, UPCAST, BLOCK_N, BLOCK_V, BLOCK_D)
    lse = tl.load(lse_ptr + rows, mask=rmask, other=0.0)
    g = tl.load(g_ptr + rows, mask=rmask, other=0.0)  # already × valid × 1/T
    y = tl.load(y_ptr + rows, mask=rmask, other=-1)
    valid = rmask[:, None] & cmask[None, :]
    p = tl.where(valid, tl.exp(z - lse[:, None]), 0.0)
    dz = tl.where(cols[None, :] == y[:, None], g[:, None], 0.0) - g[:, None] * p
    if USE_GH:
        gh = tl.load(gh_ptr + rows, mask=rmask, other=0.0)
        pz = tl.load(pz_ptr + rows, mask=rmask, other=0.0)
        dz += gh[:, None] * p * (pz[:, None] - tl.where(valid, z, 0.0))
    dz = tl.where(valid, dz, 0.0)
    if NEED_DB:
        tl.atomic_add(db_ptr + cols, tl.sum(dz, axis=0), mask=cmask)
    dz_lo = dz.to(h_ptr.dtype.element_ty)  # the tensor cores' input dtype; products accumulate in fp32
    if UPCAST:
        dz_lo = dz_lo.to(tl.float32)
    for k in range(0, D, BLOCK_D):
        ks = k + tl.arange(0, BLOCK_D)
        kmask = ks < D
        if NEED_DH:
            w = tl.load(w_ptr + cols[:, None] * D + ks[None, :], mask=cmask[:, None] & kmask[None, :], other=0.0)
            if UPCAST:
                w = w.to(tl.float32)
            if IEEE:  # noqa: SIM108  (constexpr branch: only one dot is compiled)
                dh = tl.dot(dz_lo, w, input_precision="ieee")  # [BLOCK_N, BLOCK_D]
            else:
                dh = tl.dot(dz_lo, w)
            tl.atomic_add(dh_ptr + rows[:, None] * D + ks[None, :], dh, mask=rmask[:, None] & kmask[None, :])
        if NEED_DW:
            h = tl.load(h_ptr + rows[:, None] * D + ks[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)
            if UPCAST:
                h = h.to(tl.float32)
            if IEEE:  # noqa: SIM108  (constexpr branch: only one dot is compiled)
                dw = tl.dot(tl.trans(dz_lo), h, input_precision="ieee")  # [BLOCK_V, BLOCK_D]
            else:
                dw = tl.dot(tl.trans(dz_lo), h)
            tl.atomic_add(dw_ptr + cols[:, None] * D + ks[None, :], dw, mask=cmask[:, None] & kmask[None, :])


def _n_splits(n: int, vocab: int, device: torch.device) -> int:
    """Vocabulary splits so that row-blocks × splits ≈ 4 programs per SM (1 when interpreting)."""
    if INTERPRET or device.type != "cuda":
        return 2 if vocab > 64 else 1  # still exercise the split-merge path in the interpreter tests
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    row_blocks = triton.cdiv(n, 64)
    return max(1, min(triton.cdiv(vocab, 128), triton.cdiv(4 * sms, row_blocks)))


class TritonTokenLogprobs(torch.autograd.Function):
    """autograd.Function over (hidden, weight, bias) backed by the two kernels above."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, ignore_index, with_entropy, entropy_grad):
        hidden, weight = hidden.contiguous(), weight.contiguous()
        bias = bias.contiguous() if bias is not None else None  # the kernels read it with stride 1
        n, d = hidden.shape
        vocab = weight.shape[0]
        inv_t = 1.0 / temperature
        valid = targets != ignore_index  # [N]
        y = torch.where(valid, targets, torch.full_like(targets, -1)).contiguous()  # [N]; −1 never matches a column
        # an id >= V would silently give logp = -inf (the other paths raise); checked on the device, no sync
        torch._assert_async(((y >= -1) & (y < vocab)).all(), "token_logprobs: a target id is outside [0, V)")
        splits = _n_splits(n, vocab, hidden.device)
        part = torch.empty(4, splits, n, dtype=torch.float32, device=hidden.device)  # m, Σe, Σe(z−m), z_y
        ieee = hidden.dtype == torch.float32
        grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), splits)
        _fwd_kernel[grid](hidden, weight, bias if bias is not None else hidden, y, part[0], part[1], part[2],
                          part[3], n, vocab, d, splits, inv_t,
                          HAS_BIAS=bias is not None, WITH_ENT=with_entropy, IEEE=ieee, UPCAST=INTERPRET and not ieee)
        m_j, s_j, t_j, tz_j = part  # [splits, N] each
        m = m_j.amax(0)  # [N]
        a = torch.exp(m_j - m)  # [splits, N]; 0 for empty splits (m_j = −inf)
        s = (a * s_j).sum(0)  # [N]
        lse = m + s.log()
        logp = torch.where(valid, tz_j.sum(0) - lse, 0.0)
        pz = None
        if with_entropy:
            shift = torch.where(s_j > 0, s_j * (m_j - m), 0.0)
            t = (a * (t_j + shift)).sum(0)  # Σ e·(z − m) at the global max
            entropy = torch.where(valid, s.log() - t / s, 0.0)
            pz = m + t / s  # Σ_v p_v z_v
        ctx.save_for_backward(hidden, weight, bias, y, valid, lse, pz if entropy_grad else None)
        ctx.inv_t, ctx.entropy_grad = inv_t, entropy_grad
        if with_entropy:
            if not entropy_grad:
                ctx.mark_non_differentiable(entropy)
            return logp, entropy
        return logp

    @staticmethod
    def backward(ctx, g_logp, g_entropy=None):
        hidden, weight, bias, y, valid, lse, pz = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        need_b = need_b and bias is not None
        n, d = hidden.shape
        vocab = weight.shape[0]
        f32 = dict(dtype=torch.float32, device=hidden.device)
        vmask = valid.to(torch.float32)
        g = ((g_logp.float() if g_logp is not None else torch.zeros(n, **f32)) * vmask * ctx.inv_t).contiguous()
        use_gh = ctx.entropy_grad and g_entropy is not None
        gh = (g_entropy.float() * vmask * ctx.inv_t).contiguous() if use_gh else g
        # fp32 atomic-add targets. Unused ones get their own dummy: autotune's reset_to_zero zeroes these
        # arguments, so aliasing them to a live input (g) would silently zero the gradient.
        dummy = lambda: torch.zeros(1, **f32)
        dh = torch.zeros(n, d, **f32) if need_h else dummy()
        dw = torch.zeros(vocab, d, **f32) if need_w else dummy()
        db = torch.zeros(vocab, **f32) if need_b else dummy()
        grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), triton.cdiv(vocab, meta["BLOCK_V"]))
        _bwd_kernel[grid](hidden, weight, bias if bias is not None else hidden, y, lse,
                          pz if use_gh else lse, g, gh, dh, dw, db, n, vocab, d, ctx.inv_t,
                          HAS_BIAS=bias is not None, USE_GH=use_gh, NEED_DH=need_h, NEED_DW=need_w,
                          NEED_DB=need_b, IEEE=hidden.dtype == torch.float32,
                          UPCAST=INTERPRET and hidden.dtype != torch.float32)
        return (dh.to(hidden.dtype) if need_h else None, dw.to(weight.dtype) if need_w else None,
                db.to(bias.dtype) if need_b else None, None, None, None, None, None)


@implements
def triton_token_logprobs(
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
    """Triton per-token logp (and entropy), a `TokenLogprobsFn`; hidden [N, d], weight [V, d], targets [N] → fp32
    [N] (, [N])."""
    if hidden.device.type != "cuda" and not INTERPRET:
        raise RuntimeError("the Triton path needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tests)")
    if hidden.dtype == torch.float64:
        raise TypeError("the Triton path supports fp32/bf16/fp16 inputs; use impl='chunked' for float64")
    return TritonTokenLogprobs.apply(hidden, weight, bias, targets, float(temperature), ignore_index,
                                     with_entropy, entropy_grad)
