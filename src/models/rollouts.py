"""Rollout batches for RL objectives: prompts -> G sampled completions each -> one scorable batch.

A prompt batch (src/data/formats/prompt.py) holds right-padded `prompt_input_ids` [B, L]. Generation needs them
left-padded (the next token of every row sits in the last column, src/models/components/generation.py), so they
are moved to the right here, repeated G times (rollouts of one prompt are contiguous: rows g·G .. g·G+G−1), and
sampled. The completion of a row is every new token up to and including its first end token (all of them when it
has none: a truncated rollout).

The scorable batch keeps that left-padded layout, `[prompt (left-padded) | completion (right-padded)]`:
    input_ids = full[:, :-1], labels = full[:, 1:] on completion tokens (else -100),
    attention_mask 1 on real tokens, position_ids counted over real tokens (0 on padding),
so a row's log-probs equal those of the row alone (docs/contracts.md, "rollout batches").
"""

from __future__ import annotations

import torch
from torch import Tensor

from src.models.components.generation import positions_from_mask
from src.models.logprobs import IGNORE_INDEX


def left_pad(ids: Tensor, mask: Tensor, pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-padded ids/mask [B, L] -> left-padded [B, L] (each row's real tokens moved to the end)."""
    b, width = ids.shape
    lengths = mask.long().sum(-1)  # [B]
    shift = (width - lengths)[:, None]  # [B, 1]
    col = torch.arange(width, device=ids.device)[None, :]  # [1, L]
    src = (col - shift).clamp(min=0)  # [B, L]: where each output column reads from
    real = col >= shift  # [B, L]
    out = torch.where(real, ids.gather(1, src), torch.full_like(ids, pad_id))
    return out, real.long()


def completion_mask(new_tokens: Tensor, stop_ids: tuple[int, ...]) -> Tensor:
    """[N, M] bool: the completion's tokens, i.e. every token up to and including the first stop token."""
    if not stop_ids:
        return torch.ones_like(new_tokens, dtype=torch.bool)
    is_stop = torch.isin(new_tokens, torch.tensor(stop_ids, device=new_tokens.device)).long()  # [N, M]
    stopped_before = is_stop.cumsum(-1) - is_stop  # stop tokens strictly before each column
    return stopped_before == 0


def rollout_batch(prompt_ids: Tensor, prompt_mask: Tensor, new_tokens: Tensor, new_mask: Tensor,
                  pad_id: int) -> dict[str, Tensor]:
    """The scorable batch of left-padded prompts [N, L] and their completions [N, M] (module docstring):
    input_ids, labels, attention_mask, position_ids, all [N, L + M − 1]."""
    full = torch.cat([prompt_ids, torch.where(new_mask, new_tokens, torch.full_like(new_tokens, pad_id))], 1)
    full_mask = torch.cat([prompt_mask.long(), new_mask.long()], 1)  # [N, L+M]
    labels = full[:, 1:].clone()  # [N, L+M-1]
    is_completion = torch.cat([torch.zeros_like(prompt_mask, dtype=torch.bool), new_mask.bool()], 1)[:, 1:]
    labels[~is_completion] = IGNORE_INDEX
    attention_mask = full_mask[:, :-1]
    return {"input_ids": full[:, :-1], "labels": labels, "attention_mask": attention_mask,
            "position_ids": positions_from_mask(attention_mask)}
