"""Tiny GRPO set-ups shared by the GRPO tests: a character tokenizer, rewards, and a fixed-rollout module."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from src.models.components.transformer import CompactTransformer
from src.models.grpo import GRPOModule
from src.models.rollouts import completion_mask, left_pad, rollout_batch


class CharTokenizer:
    """pad 0, eos 1, then one id per character of `chars`."""

    pad_id, eos_id = 0, 1
    special_ids = (0, 1)

    def __init__(self, chars: str = "abcdefghijklmn") -> None:
        self.chars = chars

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 2

    def encode(self, text: str) -> list[int]:
        return [self.chars.index(c) + 2 for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i - 2] for i in ids if i >= 2)


def share_of_a(prompts: list[str], completions: list[str], **metadata: Any) -> list[float]:
    """Trivially learnable: the share of 'a' in the completion (0 for an empty one)."""
    return [c.count("a") / len(c) if c else 0.0 for c in completions]


def tiny_module(tok: CharTokenizer | None = None, seed: int = 0, **kwargs: Any) -> GRPOModule:
    tok = tok or CharTokenizer()
    torch.manual_seed(seed)
    backbone = CompactTransformer(vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=2, max_seq_len=64)
    kwargs.setdefault("reward", share_of_a)
    kwargs.setdefault("optimizer", functools.partial(torch.optim.AdamW, lr=3e-3))
    return GRPOModule(backbone, tokenizer=tok, **kwargs)


def prompt_batch(tok: CharTokenizer, prompts: list[str]) -> dict[str, Any]:
    """A prompt batch as data.format=prompt collates it (right-padded)."""
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, :len(p)] = torch.tensor(tok.encode(p))
        mask[i, :len(p)] = 1
    return {"prompt_input_ids": ids, "prompt_attention_mask": mask, "skill": torch.zeros(len(prompts)).long(),
            "prompt": prompts, "answer": ["0"] * len(prompts)}


class FixedRolloutGRPO(GRPOModule):
    """GRPO whose training rollouts are a fixed function of the prompt (no sampling): rollout g of a prompt is
    `(prompt[0] + 3g + j) mod V` for j < 1 + (g + len(prompt)) mod 5 tokens, then the end token. Rewards then
    differ within groups, and a 1-process and a 2-process run see the very same rollouts."""

    def _generate(self, batch: dict[str, Any], repeat: int, greedy: bool,
                  max_new_tokens: int) -> tuple[dict[str, Tensor], list[str], dict[str, list[Any]]]:
        if greedy:
            return super()._generate(batch, repeat, greedy, max_new_tokens)
        tok = self.tokenizer
        ids, mask = left_pad(batch["prompt_input_ids"], batch["prompt_attention_mask"], tok.pad_id)
        ids, mask = ids.repeat_interleave(repeat, 0), mask.repeat_interleave(repeat, 0)  # [N, L]
        lengths = batch["prompt_attention_mask"].sum(-1).repeat_interleave(repeat).tolist()
        first = batch["prompt_input_ids"][:, 0].repeat_interleave(repeat).tolist()
        v, specials = self.backbone.vocab_size, len(tok.special_ids)
        new = torch.full((ids.shape[0], max_new_tokens), tok.pad_id, dtype=torch.long, device=ids.device)
        for r in range(ids.shape[0]):
            g = r % repeat
            n = min(1 + (g + int(lengths[r])) % 5, max_new_tokens - 1)
            toks = [specials + (int(first[r]) + 3 * g + j) % (v - specials) for j in range(n)] + [tok.eos_id]
            new[r, :len(toks)] = torch.tensor(toks)
        new_mask = completion_mask(new, (tok.eos_id,))
        special = set(tok.special_ids)
        texts = [tok.decode([t for t, m in zip(row, keep) if m and t not in special])
                 for row, keep in zip(new.tolist(), new_mask.tolist())]
        meta = {k: [x for x in val for _ in range(repeat)] for k, val in batch.items() if isinstance(val, list)}
        return rollout_batch(ids, mask, new, new_mask, tok.pad_id), texts, meta


class LengthReward:
    """Characters in the completion / 10: differs within groups of fixed rollouts (tests only)."""

    def __call__(self, prompts: list[str], completions: list[str], **metadata: Any) -> list[float]:
        return [len(c) / 10 for c in completions]
