"""Chunked linear → log-prob / entropy in plain PyTorch: O(chunk·V + N) extra memory on any device.

Why: materialising logits [N, V] (and autograd's copies of them) dominates training memory for large vocabularies.
The forward walks over row-chunks, computes each chunk's logits z, and keeps only per-row scalars (lse, and
Σ_v p_v z_v when the entropy needs a gradient). The backward recomputes each chunk's z (one extra matmul, the price
of not storing [N, V]) and applies the per-token upstream gradients g, g_H before reducing over tokens:

    dz = g · (onehot(y) − p) + g_H · p ⊙ (Σ_v p_v z_v − z),   dh = dz·W,   dW = dzᵀ·h (fp32),   db = Σ_n dz.

Temporaries live in preallocated chunk buffers and are updated in place, so on CPU the path does not page-fault
fresh [chunk, V] blocks every chunk (that is where a naive "loop over chunks" loses its time).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

# Default extra memory the chunk temporaries may use. CPU: small enough that a chunk's logits stay near the
# caches and far below any realistic [N, V]; CUDA: large enough that each matmul fills the GPU.
DEFAULT_BUDGET_BYTES = {"cpu": 64 * 2**20, "cuda": 512 * 2**20}
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


class ChunkedTokenLogprobs(torch.autograd.Function):
    """autograd.Function over (hidden, weight, bias); see the module docstring for the math."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, ignore_index, with_entropy, entropy_grad, rows):
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
        for s in range(0, n, rows):
            e = min(s + rows, n)
            z = _chunk_logits(hidden[s:e], weight, bias, inv_t, zbuf)  # [C, V]
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
            if dh is not None:
                if hidden.dtype == dz.dtype:
                    torch.mm(dz, weight, out=dh[s:e])
                else:
                    dh[s:e] = dz.to(weight.dtype) @ weight
            if dw is not None:
                if h_c.dtype == dz.dtype:
                    dw.addmm_(dz.t(), h_c)
                else:
                    dw.add_(_mm_fp32(dz.t(), h_c))
            if db is not None:
                db.add_(dz.sum(0))
        dw = dw.to(weight.dtype) if dw is not None else None
        db = db.to(bias.dtype) if db is not None else None
        return dh, dw, db, None, None, None, None, None, None


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
) -> Tensor | tuple[Tensor, Tensor]:
    """Chunked per-token logp (and entropy); hidden [N, d], weight [V, d], targets [N] → fp32 [N] (, [N]).

    (fp64 inputs give fp64 outputs, so the path can be gradchecked.)

    ``chunk_size`` (rows) wins; else rows come from ``budget_bytes`` (default: ``default_budget_bytes``).
    Outputs are fp32 whatever the input dtype: log-probs feed differences and ratios (DPO, GRPO) where bf16's
    8 mantissa bits would swamp the signal.
    """
    n = hidden.shape[0]
    if chunk_size is None:
        budget = default_budget_bytes(hidden.device) if budget_bytes is None else budget_bytes
        chunk_size = chunk_rows_for_budget(n, weight.shape[0], budget)
    rows = max(1, min(int(chunk_size), max(n, 1)))
    return ChunkedTokenLogprobs.apply(
        hidden, weight, bias, targets, float(temperature), ignore_index, with_entropy, entropy_grad, rows
    )
