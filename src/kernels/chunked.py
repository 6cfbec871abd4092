"""Chunked linear → log-prob / entropy in plain PyTorch: O(chunk·V + N) extra memory on any device.

Why: materialising logits [N, V] (and autograd's copies of them) dominates training memory for large vocabularies.
The forward walks over row-chunks, computes each chunk's logits z, and keeps only per-row scalars (lse, and
Σ_v p_v z_v when the entropy needs a gradient). The backward recomputes each chunk's z (one extra matmul, the price
of not storing [N, V]) and applies the per-token upstream gradients g, g_H before reducing over tokens:

    dz = g · (onehot(y) − p) + g_H · p ⊙ (Σ_v p_v z_v − z),   dh = dz·W,   dW = dzᵀ·h (fp32),   db = Σ_n dz.

Temporaries live in preallocated chunk buffers and are updated in place, so on CPU the path does not page-fault
fresh [chunk, V] blocks every chunk (that is where a naive "loop over chunks" loses its time).

Gradient hint (``grad_hint`` [N]): when the caller knows at forward time that the upstream gradient will be
c · grad_hint for some scalar c (cross-entropy: −mask / n_tokens, any fixed per-token weights), the forward also
builds dh, dW, db for g = grad_hint while each chunk's z is at hand, and the backward only rescales them by c —
3 matmuls per step instead of 4, i.e. the matmul count of materialised logits (what Liger's fused linear CE does).
The backward checks that the upstream gradient really is a multiple of the hint; when it is not (DPO, GRPO, any
loss that is not linear in logp), it falls back to the recompute path above, so results are always correct.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from src.kernels.signature import implements

# Default extra memory the chunk temporaries may use. Each chunk adds a rank-C update dzᵀ·h_c to the whole
# [V, d] dW, which is memory-bound when C is small: on a 2-core CPU at V=128k, d=1024, 64 MiB (43 rows) took
# 21.4 s for N=2048 and 256 MiB (170 rows) 13.9 s (14.6 → 9.9 s with grad_hint); 512 MiB gained nothing more
# (in-process fwd+bwd loop; the same comparison: TOKENSMITH_KERNEL_CHUNK_BYTES=<bytes> python bench/kernels.py
# --n 2048 --v 128000 --d 1024 --impls chunked,chunked_hint).
# CUDA: large enough that each matmul fills the GPU. Both stay far below any realistic [N, V].
DEFAULT_BUDGET_BYTES = {"cpu": 256 * 2**20, "cuda": 512 * 2**20}
BUDGET_ENV_VAR = "TOKENSMITH_KERNEL_CHUNK_BYTES"
# Live fp32 [chunk, V] buffers at the same time (backward: z/dz and p, plus one in the input dtype for the
# matmul output when inputs are not fp32), used to turn a byte budget into rows.
LIVE_CHUNK_BUFFERS = 3


def default_budget_bytes(device: torch.device) -> int:
    """Byte budget for chunk temporaries: env TOKENSMITH_KERNEL_CHUNK_BYTES, else a per-device default."""
    env = os.environ.get(BUDGET_ENV_VAR)
    if env:
        return int(float(env))
    return DEFAULT_BUDGET_BYTES.get(device.type, DEFAULT_BUDGET_BYTES["cuda"])


def chunk_rows_for_budget(n_rows: int, vocab: int, budget_bytes: int) -> int:
    """Rows per chunk so that LIVE_CHUNK_BUFFERS fp32 [rows, V] temporaries fit in ``budget_bytes`` (≥ 1 row)."""
    per_row = LIVE_CHUNK_BUFFERS * vocab * 4
    return max(1, min(n_rows, budget_bytes // per_row))


def _chunk_logits(h_c: Tensor, weight: Tensor, bias: Tensor | None, inv_t: float, out: Tensor) -> Tensor:
    """out[:C] ← (h_c·Wᵀ + b) / T in fp32. h_c [C, d], weight [V, d] → [C, V] view of ``out``."""
    z = out[: h_c.shape[0]]  # [C, V]
    if h_c.dtype == z.dtype:
        torch.mm(h_c, weight.t(), out=z)
    else:
        z.copy_(h_c @ weight.t())  # low-precision matmul (fp32 accumulate inside BLAS), upcast once
    if bias is not None:
        z.add_(bias)
    if inv_t != 1.0:
        z.mul_(inv_t)
    return z


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp64 stays fp64 (gradcheck); everything else accumulates in fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _mm_fp32(a: Tensor, b: Tensor) -> Tensor:
    """a @ b (a fp32, b low precision) with an fp32 result; keeps the fast low-precision matmul where offered."""
    if a.is_cuda:
        try:
            return torch.mm(a.to(b.dtype), b, out_dtype=torch.float32)
        except (TypeError, RuntimeError):
            pass
    return a.float() @ b.float()


def _apply_chunk_grad(dz: Tensor, h_c: Tensor, weight: Tensor, dh_c: Tensor | None, dw: Tensor | None,
                      db: Tensor | None) -> None:
    """From a chunk's dL/dz [C, V]: dh_c ← dz·W, dW += dzᵀ·h_c (fp32), db += Σ_rows dz (all in place)."""
    if dh_c is not None:
        if h_c.dtype == dz.dtype:
            torch.mm(dz, weight, out=dh_c)
        else:
            dh_c.copy_(dz.to(weight.dtype) @ weight)
    if dw is not None:
        if h_c.dtype == dz.dtype:
            dw.addmm_(dz.t(), h_c)
        else:
            dw.add_(_mm_fp32(dz.t(), h_c))
    if db is not None:
        db.add_(dz.sum(0))


# Relative tolerance for "the upstream gradient is a multiple of the hint", by the dtype the check runs in
# (fp32 rounding of c·hint is ~1e-7, fp64's ~1e-16): a real extra term in the loss is never mistaken for rounding.
HINT_RTOL = {torch.float64: 1e-12}
HINT_RTOL_DEFAULT = 1e-5


def _scale_(t: Tensor, c: Tensor, block_elems: int = 1 << 20) -> Tensor:
    """t *= c in place, with c kept in fp32. Rounding c to t's dtype first (what `t.mul_(c.to(t.dtype))` did, and
    what a low-precision GPU op with a 0-dim device tensor may do) scales every gradient by the same wrong factor
    (c = -1/255 in bf16: 0.39 % off). A whole fp32 copy of a [V, d] gradient would cost 2x its memory, so
    low-precision tensors are rescaled in row blocks of ~1M elements."""
    if t.dtype in (torch.float32, torch.float64) or t.numel() == 0:
        return t.mul_(c)
    flat = t.view(t.shape[0], -1) if t.dim() > 1 else t.view(-1, 1)  # [R, C]
    rows = max(1, block_elems // max(1, flat.shape[1]))
    for s in range(0, flat.shape[0], rows):
        block = flat[s : s + rows]
        block.copy_(block.float().mul_(c))
    return t


def hint_scale(g: Tensor, g_hint: Tensor) -> Tensor | None:
    """The scalar c with g == c·g_hint (both [N], already masked and 1/T-scaled), or None when there is none.

    c is the least-squares fit (g·h)/(h·h); the check is max|g − c·h| ≤ rtol·max|g| (rtol by dtype: HINT_RTOL).
    A zero hint only explains a zero g. The comparison is one pass over [N] scalars: no cost next to a [N, V]
    matmul, and the three scalars it decides on cross to the host together (one device sync per backward).
    """
    hh = torch.dot(g_hint, g_hint)
    c = torch.dot(g, g_hint) / torch.where(hh == 0, torch.ones_like(hh), hh)  # 0 when the hint is zero
    if g.numel():
        g_max, resid = g.abs().max(), (g - c * g_hint).abs().max()
    else:
        g_max = resid = g.new_zeros(())
    hh_v, g_max_v, resid_v = torch.stack([hh.float(), g_max.float(), resid.float()]).tolist()  # the one sync
    if hh_v == 0.0:
        return g.new_zeros(()) if g_max_v == 0.0 else None
    return None if resid_v > HINT_RTOL.get(g.dtype, HINT_RTOL_DEFAULT) * g_max_v else c


class ChunkedTokenLogprobs(torch.autograd.Function):
    """autograd.Function over (hidden, weight, bias); see the module docstring for the math."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, ignore_index, with_entropy, entropy_grad, rows,
                grad_hint):
        n, _ = hidden.shape
        vocab = weight.shape[0]
        inv_t = 1.0 / temperature
        valid = targets != ignore_index  # [N]
        safe_y = torch.where(valid, targets, torch.zeros_like(targets))  # [N]
        f32 = dict(dtype=accumulate_dtype(hidden.dtype), device=hidden.device)
        lse = torch.empty(n, **f32)  # [N]
        logp = torch.empty(n, **f32)  # [N]
        entropy = torch.empty(n, **f32) if with_entropy else None  # [N]
        pz = torch.empty(n, **f32) if with_entropy else None  # [N]  Σ_v p_v z_v
        zbuf = torch.empty(rows, vocab, **f32)  # [C, V]
        ebuf = torch.empty(rows, vocab, **f32) if with_entropy else None  # [C, V]
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        # Eager gradients for the hinted upstream gradient (module docstring); not with the entropy (its upstream
        # gradient is a second unknown) nor when nothing needs a gradient (evaluation).
        eager = grad_hint is not None and not with_entropy and (need_h or need_w or need_b)
        if eager:
            g_hint = grad_hint.reshape(-1).to(f32["dtype"]) * valid * inv_t  # [N]
            dh_e = torch.empty_like(hidden) if need_h else None  # [N, d]
            dw_e = torch.zeros(weight.shape, **f32) if need_w else None  # [V, d]
            db_e = torch.zeros(vocab, **f32) if (need_b and bias is not None) else None  # [V]
        for s in range(0, n, rows):
            e = min(s + rows, n)
            z = _chunk_logits(hidden[s:e], weight, bias, inv_t, zbuf)  # [C, V]
            if eager:
                m = z.amax(dim=-1, keepdim=True)  # [C, 1]
                z.sub_(m)
                tz = z.gather(1, safe_y[s:e, None]).squeeze(1)  # [C]  z_y − max
                sum_e = z.exp_().sum(-1)  # [C]; z now holds e = exp(z − max)
                log_s = sum_e.log()
                lse[s:e] = log_s + m.squeeze(1)
                logp[s:e] = tz - log_s
                dz = z.mul_((-g_hint[s:e] / sum_e)[:, None])  # [C, V]  −g·p  (p = e / Σe)
                dz.scatter_add_(1, safe_y[s:e, None], g_hint[s:e, None])  # + g·onehot(y)
                _apply_chunk_grad(dz, hidden[s:e], weight, dh_e[s:e] if dh_e is not None else None, dw_e, db_e)
                continue
            m = z.amax(dim=-1, keepdim=True)  # [C, 1]
            z.sub_(m)  # z − max: exp can no longer overflow
            tz = z.gather(1, safe_y[s:e, None]).squeeze(1)  # [C]  z_y − max
            if with_entropy:
                ex = torch.exp(z, out=ebuf[: e - s])  # [C, V]
                sum_e = ex.sum(-1)  # [C]
                sum_ez = z.mul_(ex).sum(-1)  # [C]  Σ e·(z − max)
                log_s = sum_e.log()
                entropy[s:e] = log_s - sum_ez / sum_e
                pz[s:e] = sum_ez / sum_e + m.squeeze(1)
            else:
                log_s = z.exp_().sum(-1).log()  # [C]
            lse[s:e] = log_s + m.squeeze(1)
            logp[s:e] = tz - log_s
        logp.masked_fill_(~valid, 0.0)
        if with_entropy:
            entropy.masked_fill_(~valid, 0.0)
        ctx.save_for_backward(hidden, weight, bias, safe_y, valid, lse, pz if entropy_grad else None)
        ctx.inv_t, ctx.rows, ctx.entropy_grad = inv_t, rows, entropy_grad
        ctx.eager = None
        if eager:
            ctx.eager = (g_hint, dh_e, dw_e.to(weight.dtype) if dw_e is not None else None,
                         db_e.to(bias.dtype) if db_e is not None else None)
        if with_entropy:
            if not entropy_grad:
                ctx.mark_non_differentiable(entropy)
            return logp, entropy
        return logp

    @staticmethod
    def backward(ctx, g_logp, g_entropy=None):
        hidden, weight, bias, safe_y, valid, lse, pz = ctx.saved_tensors
        inv_t, rows = ctx.inv_t, ctx.rows
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        n, _ = hidden.shape
        vocab = weight.shape[0]
        f32 = dict(dtype=accumulate_dtype(hidden.dtype), device=hidden.device)
        vmask = valid.to(f32["dtype"])  # [N]
        # Per-token upstream gradients, zero on ignored rows; scaled by 1/T once (dz/d(raw logits) = dz/dz · 1/T).
        g = (g_logp.to(vmask.dtype) if g_logp is not None else torch.zeros(n, **f32)) * vmask * inv_t  # [N]
        if ctx.eager is not None:
            g_hint, dh_e, dw_e, db_e = ctx.eager
            ctx.eager = None  # free the buffers with this backward (retain_graph reruns take the recompute path)
            c = hint_scale(g, g_hint)
            if c is not None:
                scale = lambda t: None if t is None else _scale_(t, c)
                return scale(dh_e), scale(dw_e), scale(db_e), None, None, None, None, None, None, None
        use_h = ctx.entropy_grad and g_entropy is not None
        g_h = g_entropy.to(vmask.dtype) * vmask * inv_t if use_h else None  # [N]
        dh = torch.empty_like(hidden) if need_h else None  # [N, d]
        dw = torch.zeros(weight.shape, **f32) if need_w else None  # [V, d]  fp32 accumulator
        db = torch.zeros(vocab, **f32) if (need_b and bias is not None) else None  # [V]
        zbuf = torch.empty(rows, vocab, **f32)  # [C, V]
        pbuf = torch.empty(rows, vocab, **f32) if use_h else None  # [C, V]
        for s in range(0, n, rows):
            e = min(s + rows, n)
            h_c = hidden[s:e]  # [C, d]
            z = _chunk_logits(h_c, weight, bias, inv_t, zbuf)  # [C, V]
            if use_h:
                p = torch.sub(z, lse[s:e, None], out=pbuf[: e - s]).exp_()  # [C, V]
                # dz = p ⊙ (g_H·(pz − z) − g) + g·onehot, built in z's buffer
                dz = z.neg_().add_(pz[s:e, None]).mul_(g_h[s:e, None]).sub_(g[s:e, None]).mul_(p)
            else:
                dz = z.sub_(lse[s:e, None]).exp_().mul_(-g[s:e, None])  # [C, V]  −g·p
            dz.scatter_add_(1, safe_y[s:e, None], g[s:e, None])  # + g·onehot(y)
            _apply_chunk_grad(dz, h_c, weight, dh[s:e] if dh is not None else None, dw, db)
        dw = dw.to(weight.dtype) if dw is not None else None
        db = db.to(bias.dtype) if db is not None else None
        return dh, dw, db, None, None, None, None, None, None, None


@implements
def chunked_token_logprobs(
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
    budget_bytes: int | None = None,
    grad_hint: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Chunked per-token logp (and entropy), a `TokenLogprobsFn`; hidden [N, d], weight [V, d], targets [N] → fp32
    [N] (, [N]).

    (fp64 inputs give fp64 outputs, so the path can be gradchecked.)

    ``chunk_size`` (rows) wins; else rows come from ``budget_bytes`` (default: ``default_budget_bytes``).
    Outputs are fp32 whatever the input dtype: log-probs feed differences and ratios (DPO, GRPO) where bf16's
    8 mantissa bits would swamp the signal. ``grad_hint`` [N]: see the module docstring (a speed hint only).
    """
    if grad_hint is not None and grad_hint.shape != targets.shape:
        raise ValueError(f"grad_hint {tuple(grad_hint.shape)} must have the shape of targets {tuple(targets.shape)}")
    if not torch.is_grad_enabled():
        grad_hint = None  # evaluation: no backward will come, so no gradients to build (inside forward, ctx still
        # reports needs_input_grad from requires_grad, whatever the grad mode)
    n = hidden.shape[0]
    if chunk_size is None:
        budget = default_budget_bytes(hidden.device) if budget_bytes is None else budget_bytes
        chunk_size = chunk_rows_for_budget(n, weight.shape[0], budget)
    rows = max(1, min(int(chunk_size), max(n, 1)))
    return ChunkedTokenLogprobs.apply(
        hidden, weight, bias, targets, float(temperature), ignore_index, with_entropy, entropy_grad, rows,
        grad_hint.detach() if grad_hint is not None else None,
    )
