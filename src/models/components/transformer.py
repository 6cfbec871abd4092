"""CompactTransformer: a small Llama-style backbone (RoPE, RMSNorm, SwiGLU, optional GQA) for CPU-sized research.

It satisfies the Backbone contract (docs/contracts.md): `forward` returns the final-normed hidden states
[B, T, d] and never the logits, so objectives can hand `hidden` and `output_weight` to the fused kernels without
materialising [B, T, V]. `causal=False` makes it bidirectional for masked-diffusion models. `lora={...}` wraps its
projections in peft LoRA adapters and can train chosen token rows (src/models/components/compact_lora.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from src.models.components.attention_mask import sdpa_mask
from src.models.components.kv_cache import KVCache


def rope_cos_sin(position_ids: Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos/sin tables for the given positions, [B, 1, T, head_dim] each (computed per call: positions restart
    per document in packed rows and run past any precomputed length during generation)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=position_ids.device).float() / head_dim))
    freqs = position_ids.float()[..., None] * inv_freq  # [B, T, hd/2]
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # [B, 1, T, hd]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate-half RoPE (the Llama/HF convention, so weights could be ported). x: [B, H, T, hd]."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads or n_heads % n_kv_heads:
            raise ValueError(
                f"need d_model % n_heads == 0 and n_heads % n_kv_heads == 0, got "
                f"d_model={d_model}, n_heads={n_heads}, n_kv_heads={n_kv_heads}"
            )
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=False)
        self.dropout = dropout

    def forward(
        self,
        x: Tensor,  # [B, T, d]
        cos: Tensor,
        sin: Tensor,
        mask: Tensor | None,  # [B|1, 1, T, S] bool, True = attend
        is_causal: bool,
        past_kv: tuple[Tensor, Tensor] | None = None,  # ([B, Hkv, S_past, hd], same)
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, T, hd]
        k = self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, T, hd]
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if past_kv is not None:
            k = torch.cat((past_kv[0], k), dim=2)  # [B, Hkv, S, hd]
            v = torch.cat((past_kv[1], v), dim=2)
        new_kv = (k, v)
        if self.n_kv_heads != self.n_heads:  # GQA: each kv head serves n_heads / n_kv_heads query heads
            rep = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # [B, H, S, hd]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=self.dropout if self.training else 0.0
        )  # [B, H, T, hd]
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1)), new_kv


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_model, hidden, bias=False)
        self.up_proj = nn.Linear(d_model, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(
        self, d_model: int, n_heads: int, n_kv_heads: int, ffn_hidden: int, norm_eps: float, dropout: float
    ) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(d_model, eps=norm_eps)
        self.attn = Attention(d_model, n_heads, n_kv_heads, dropout)
        self.mlp_norm = nn.RMSNorm(d_model, eps=norm_eps)
        self.mlp = SwiGLU(d_model, ffn_hidden)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor | None,
        is_causal: bool,
        past_kv: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        a, new_kv = self.attn(self.attn_norm(x), cos, sin, mask, is_causal, past_kv)
        x = x + self.resid_dropout(a)
        x = x + self.resid_dropout(self.mlp(self.mlp_norm(x)))
        return x, new_kv


class CompactTransformer(nn.Module):
    """Decoder (or, with causal=False, bidirectional encoder) backbone returning final-normed hidden states.

    max_seq_len is only a guard against silently training past the context the config promised; RoPE tables
    are computed from the given positions, so generation may run past it.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        n_layers: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        ffn_hidden: int | None = None,
        max_seq_len: int = 2048,
        rope_theta: float = 10000.0,
        norm_eps: float = 1e-5,
        tie_embeddings: bool = False,
        causal: bool = True,
        dropout: float = 0.0,
        init_std: float = 0.02,
        gradient_checkpointing: bool = False,
        lora: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        n_kv_heads = n_kv_heads or n_heads
        if ffn_hidden is None:  # Llama's rule: 2/3 of 4d (same params as a 4d GELU MLP), rounded up to 64
            ffn_hidden = 64 * math.ceil(int(8 * d_model / 3) / 64)
        self._vocab_size, self.d_model, self.n_layers = vocab_size, d_model, n_layers
        self.n_heads, self.n_kv_heads, self.ffn_hidden = n_heads, n_kv_heads, ffn_hidden
        self.max_seq_len, self.rope_theta = max_seq_len, rope_theta
        self._causal, self.tie_embeddings = causal, tie_embeddings
        self.gradient_checkpointing = gradient_checkpointing

        self.embed = nn.Embedding(vocab_size, d_model)
        self.layers = nn.ModuleList(
            Block(d_model, n_heads, n_kv_heads, ffn_hidden, norm_eps, dropout) for _ in range(n_layers)
        )
        self.norm = nn.RMSNorm(d_model, eps=norm_eps)
        self.embed_dropout = nn.Dropout(dropout)
        # Never called in forward: the objective multiplies hidden by output_weight (fused kernels).
        self.lm_head = None if tie_embeddings else nn.Parameter(torch.empty(vocab_size, d_model))
        self._init_weights(init_std)
        self.token_rows = None  # compact_lora.TokenRows when LoRA trains token rows
        self.lora_token_init = None
        if lora:  # after the init: LoRA B starts at 0, so the wrapped model computes the base's function
            from src.models.components.compact_lora import apply_lora

            apply_lora(self, lora)
            self.lora_token_init = dict(lora).get("token_init")

    @property
    def is_lora(self) -> bool:
        return any(".lora_" in n for n, _ in self.named_parameters())

    def load_base_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Start from a model's weights: as they are, or, for a LoRA model, a plain compact state dict loaded
        under the adapters (their token rows re-initialised by `lora.token_init`; compact_lora.py)."""
        if not self.is_lora or set(state) == set(self.state_dict()):
            self.load_state_dict(state)
            return
        from src.models.components.compact_lora import load_base_state_dict

        load_base_state_dict(self, state, self.lora_token_init)

    def _init_weights(self, std: float) -> None:
        """N(0, std) everywhere; residual output projections scaled by 1/sqrt(2·n_layers) (GPT-2) so the
        residual stream's variance does not grow with depth."""
        for name, p in self.named_parameters():
            if p.dim() < 2:  # norm weights stay at 1
                continue
            scale = 1.0 / math.sqrt(2 * self.n_layers) if name.endswith(("o_proj.weight", "down_proj.weight")) else 1.0
            nn.init.normal_(p, mean=0.0, std=std * scale)

    # --- Backbone contract ---------------------------------------------------------------------------------
    @property
    def output_weight(self) -> Tensor:  # [V, d]; LoRA token rows swapped in (compact_lora.py)
        if self.token_rows is None:
            return self.embed.weight if self.lm_head is None else self.lm_head
        if self.lm_head is not None:
            return self.token_rows.swap_head(self.lm_head)
        emb = self.embed.token_adapter  # tied: the embedding's rows, delta included
        return emb.base_layer.weight.index_copy(0, self.token_rows.ids, emb.trainable_tokens_delta["default"])

    @property
    def output_bias(self) -> Tensor | None:
        return None

    @property
    def causal(self) -> bool:
        return self._causal

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def hidden_size(self) -> int:
        return self.d_model

    def forward(
        self,
        input_ids: Tensor,  # [B, T]
        attention_mask: Tensor | None = None,  # [B, T] 1 = real, 0 = pad
        position_ids: Tensor | None = None,  # [B, T]; restart per document in packed rows
        segment_ids: Tensor | None = None,  # [B, T] document index, 0 = pad; no attention across documents
    ) -> Tensor:  # [B, T, d]
        b, t = input_ids.shape
        if t > self.max_seq_len:
            raise ValueError(f"sequence length {t} > max_seq_len {self.max_seq_len}")
        if position_ids is None:
            position_ids = torch.arange(t, device=input_ids.device).expand(b, t)
        mask, is_causal = sdpa_mask(
            attention_mask, segment_ids, causal=self._causal, q_len=t, kv_len=t, device=input_ids.device
        )
        x = self.embed_dropout(self.embed(input_ids))  # [B, T, d]
        cos, sin = rope_cos_sin(position_ids, self.d_model // self.n_heads, self.rope_theta, x.dtype)
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x, _ = checkpoint(layer, x, cos, sin, mask, is_causal, use_reentrant=False)
            else:
                x, _ = layer(x, cos, sin, mask, is_causal)
        return self.norm(x)

    @torch.no_grad()
    def forward_cached(
        self,
        input_ids: Tensor,  # [B, T_new]
        attention_mask: Tensor,  # [B, S_past + T_new] over every token so far (HF convention)
        position_ids: Tensor,  # [B, T_new]
        cache: KVCache | None,
    ) -> tuple[Tensor, KVCache]:  # hidden [B, T_new, d]
        """Incremental decoding: run only the new tokens, attending to cached keys/values."""
        if not self._causal:
            raise ValueError("forward_cached needs a causal model; bidirectional models are sampled by diffusion")
        cache = cache if cache is not None else KVCache()
        t_new = input_ids.shape[1]
        kv_len = cache.seq_len + t_new
        if attention_mask.shape[1] != kv_len:
            raise ValueError(
                f"attention_mask covers {attention_mask.shape[1]} tokens, expected {kv_len} (cached + new)"
            )
        mask, is_causal = sdpa_mask(
            attention_mask, None, causal=True, q_len=t_new, kv_len=kv_len, device=input_ids.device
        )
        x = self.embed(input_ids)
        cos, sin = rope_cos_sin(position_ids, self.d_model // self.n_heads, self.rope_theta, x.dtype)
        new_layers = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, cos, sin, mask, is_causal, cache.layers[i] if cache.layers else None)
            new_layers.append(kv)
        return self.norm(x), KVCache(new_layers)

    # --- accounting for benchmarks ---------------------------------------------------------------------------
    def num_params(self, non_embedding: bool = False) -> int:
        """Unique parameters (a tied embedding counts once); non_embedding drops the input embedding table
        (a lookup, not a matmul) but keeps an untied output head."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token, the PaLM/nanoGPT MFU formula: 6·N + 12·L·d·T.

        N counts every weight used in a matmul per token: all layer weights plus the output projection [V, d]
        (whether or not tied), not the embedding lookup. 12·L·d·T is QKᵀ and attention·V (2 matmuls × 2 FLOPs
        × 3 for forward+backward) over the full T×T score matrix, as in the standard formula (no causal halving).
        """
        n_matmul = self.num_params(non_embedding=True) + (self.embed.weight.numel() if self.lm_head is None else 0)
        return 6 * n_matmul + 12 * self.n_layers * self.d_model * seq_len
