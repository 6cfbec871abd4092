"""Autoregressive generation with a KV cache for any Backbone that implements `forward_cached`.

Used for GRPO rollouts and evaluation. Prompts are left-padded so every row's next token sits in the last
column; positions are counted over real tokens only, so a padded row generates exactly what it would alone.
Only the last position's logits are ever formed ([B, V], never [B, T, V]).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from src.models.fsdp import gathered


def next_token_logits(backbone: nn.Module, hidden_last: Tensor) -> Tensor:  # [B, d] -> [B, V] float32
    logits = hidden_last.float() @ backbone.output_weight.float().T
    bias = backbone.output_bias
    return logits if bias is None else logits + bias.float()


def sample_token(
    logits: Tensor,  # [B, V]
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:  # [B] long
    """Greedy when temperature == 0; otherwise sample from softmax(logits / T) after top-k / top-p filtering."""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens ranked above it already hold top_p of the mass (the top one always stays)
        drop_sorted = probs.cumsum(dim=-1) - probs > top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def positions_from_mask(attention_mask: Tensor) -> Tensor:  # [B, T] -> [B, T]
    """0, 1, 2, ... over real tokens; left pads get 0 (they are masked out anyway)."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


@torch.no_grad()
def generate(
    backbone: nn.Module,
    input_ids: Tensor,  # [B, T] left-padded prompts
    attention_mask: Tensor,  # [B, T] 1 = real, 0 = pad
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_token_ids: Sequence[int] = (),
    pad_token_id: int,
    generator: torch.Generator | None = None,
) -> Tensor:  # [B, max_new_tokens] long
    """Generate up to max_new_tokens per row. A row's stop token is kept; every position after it is
    pad_token_id. Returns early (still padded to max_new_tokens) once every row has stopped.

    Runs in eval mode (no dropout) and restores the module's previous mode afterwards.
    """
    if attention_mask.shape[1] and not bool(attention_mask[:, -1].all()):
        raise ValueError("generate() needs left-padded prompts: the last column must be real tokens")
    b = input_ids.shape[0]
    device = input_ids.device
    out = torch.full((b, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    stop = torch.tensor(list(stop_token_ids), dtype=torch.long, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)

    was_training = backbone.training
    backbone.eval()
    try:
        with gathered(backbone):  # FSDP2: forward_cached bypasses forward's gather hooks (src/models/fsdp.py)
            mask = attention_mask.long()
            positions = positions_from_mask(mask)
            hidden, cache = backbone.forward_cached(input_ids, mask, positions, None)  # prefill
            next_pos = positions[:, -1:] + 1  # [B, 1]
            for step in range(max_new_tokens):
                logits = next_token_logits(backbone, hidden[:, -1])  # [B, V]
                token = sample_token(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
                token = token.masked_fill(done, pad_token_id)
                out[:, step] = token
                if stop.numel():
                    done = done | torch.isin(token, stop)
                if step == max_new_tokens - 1 or bool(done.all()):
                    break
                mask = torch.cat((mask, torch.ones_like(mask[:, :1])), dim=1)
                hidden, cache = backbone.forward_cached(token[:, None], mask, next_pos, cache)
                next_pos = next_pos + 1
    finally:
        backbone.train(was_training)
    return out
