"""The LLaDA sampler for masked-diffusion LMs, the answer decoding rule, and the length-robustness metrics.

Sampling (Nie et al. 2025, as used by Rainbow Padding): each row starts as `prompt + [MASK] * gen_length`. The
canvas is split into `gen_length / block_length` blocks filled left to right (one block, the default, is the
setting where <eos> overflow shows); each block gets `steps / n_blocks` steps. At every step the bidirectional
model reads the whole sequence, and for every still-masked position OF THE CURRENT BLOCK it proposes
x0 = argmax(logits + T·Gumbel) (plain argmax at T = 0) with a confidence: the softmax probability of x0
(`low_confidence` remasking: the least confident stay masked) or a uniform draw (`random`). Positions past the
current block are never candidates (confidence −inf), committed tokens never change, and exactly the scheduled
number of positions is committed per step: n_masked // steps each, the remainder spread one each over the first
steps (LLaDA's `get_num_transfer_tokens`).

Memory: the backbone returns hidden states [B, T, d]; logits are formed only for the masked positions of the
current block ([N, V]), never [B, T, V]. [MASK] itself is never proposed.

The answer of a canvas is the text before the first end token with pad tokens dropped (`answer_tokens`).
`early_end_fraction` is the paper's diagnostic: the share of end tokens among the tokens committed in the first
half of the steps (high = the end signal was placed before the answer, the <eos> overflow).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

REMASKING = ("low_confidence", "random")


def answer_tokens(row: Sequence[int], end_id: int, pad_ids: Sequence[int] = ()) -> list[int]:
    """The decoding rule: the tokens before the first end token, pad tokens dropped (a canvas without an end
    token gives all its non-pad tokens)."""
    row = list(row)
    cut = row.index(end_id) if end_id in row else len(row)
    pads = set(pad_ids)
    return [t for t in row[:cut] if t not in pads]


def transfer_schedule(n_masked: Tensor, steps: int) -> Tensor:  # [B] -> [B, steps] long
    """Positions to commit at each step: n // steps each, plus one on each of the first n % steps steps."""
    base = (n_masked // steps)[:, None]  # [B, 1]
    rem = (n_masked % steps)[:, None]  # [B, 1]
    return base + (torch.arange(steps, device=n_masked.device)[None, :] < rem).long()


@dataclass
class DiffusionSample:
    """canvas: [B, G] the generated tokens; commit_step: [B, G] the step (0-based, over all blocks) at which each
    canvas position was committed; steps: total steps run."""

    canvas: Tensor
    commit_step: Tensor
    steps: int


def _gumbel(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> Tensor:
    u = torch.rand(shape, device=device, generator=generator, dtype=torch.float64)
    return -torch.log(-torch.log(u.clamp(min=1e-20, max=1 - 1e-16)))


def _layout(prompt_ids: Sequence[Sequence[int]], gen_length: int, mask_id: int, pad_id: int, device: torch.device
            ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`prompt + [MASK]·gen_length` rows right-padded as the training collator lays them out: ids [B, T], canvas
    index [B, T] (< 0 on the prompt), attention mask [B, T] and position ids [B, T]."""
    b = len(prompt_ids)
    plen = torch.tensor([len(p) for p in prompt_ids], device=device)  # [B]
    width = int(plen.max()) + gen_length
    x = torch.full((b, width), pad_id, dtype=torch.long, device=device)  # [B, T]
    for i, p in enumerate(prompt_ids):
        x[i, : len(p)] = torch.tensor(list(p), dtype=torch.long, device=device)
        x[i, len(p) : len(p) + gen_length] = mask_id
    cidx = torch.arange(width, device=device)[None, :] - plen[:, None]  # [B, T] canvas index (<0: prompt)
    attention_mask = (cidx < gen_length).long()  # [B, T]
    position_ids = torch.arange(width, device=device)[None, :] * attention_mask  # [B, T], as the collator
    return x, cidx, attention_mask, position_ids


@torch.no_grad()
def canvas_token_probs(backbone: nn.Module, prompt_ids: Sequence[Sequence[int]], canvases: Tensor, token_id: int,
                       *, mask_id: int, pad_id: int) -> Tensor:  # canvases [B, G] -> [B, G]
    """p(x_i = token_id | prompt, canvas) at every canvas position i, in one forward of the denoiser: `canvases`
    holds committed tokens and `mask_id` where masked. Used for the end token's spread: fix x_j = <eos>, everything
    else masked, and read p(x_{j-k} = <eos>)."""
    device = backbone.output_weight.device
    b, g = canvases.shape
    x, cidx, attention_mask, position_ids = _layout(prompt_ids, g, mask_id, pad_id, device)
    take = (cidx >= 0) & (cidx < g)  # [B, T]
    x[take] = canvases.to(device).reshape(-1)
    was_training = backbone.training
    backbone.eval()
    try:
        hidden = backbone(x, attention_mask=attention_mask, position_ids=position_ids)  # [B, T, d]
    finally:
        backbone.train(was_training)
    logits = hidden[take].float() @ backbone.output_weight.float().T  # [B·G, V]
    if backbone.output_bias is not None:
        logits = logits + backbone.output_bias.float()
    logits[:, mask_id] = float("-inf")
    return logits.softmax(-1)[:, token_id].view(b, g)


@torch.no_grad()
def diffusion_sample(
    backbone: nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    *,
    gen_length: int,
    mask_id: int,
    pad_id: int,
    steps: int | None = None,
    block_length: int | None = None,
    remasking: str = "low_confidence",
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    trace: list[Tensor] | None = None,
) -> DiffusionSample:
    """Fill `gen_length` masked positions after each prompt (module docstring). `steps` defaults to gen_length,
    `block_length` to gen_length (one block). `trace`, if given, receives the [B, T] sequence after every step.

    Rows are `prompt + canvas`, right-padded like training batches (src/data/rainbow.py), so positions and masks
    match what the model was trained on. The backbone runs in eval mode; its mode is restored afterwards.
    """
    steps = gen_length if steps is None else int(steps)
    block_length = gen_length if block_length is None else int(block_length)
    if remasking not in REMASKING:
        raise ValueError(f"remasking={remasking!r} is not one of {REMASKING}")
    if gen_length < 1 or block_length < 1 or gen_length % block_length:
        raise ValueError(f"gen_length={gen_length} must be a positive multiple of block_length={block_length}")
    n_blocks = gen_length // block_length
    if steps < n_blocks or steps % n_blocks:
        raise ValueError(f"steps={steps} must be a positive multiple of the number of blocks ({n_blocks})")
    steps_per_block = steps // n_blocks
    device = backbone.output_weight.device
    b = len(prompt_ids)
    x, cidx, attention_mask, position_ids = _layout(prompt_ids, gen_length, mask_id, pad_id, device)
    width = x.shape[1]
    commit_step = torch.full((b, width), -1, dtype=torch.long, device=device)  # [B, T]
    weight, bias = backbone.output_weight, backbone.output_bias
    ranks_base = torch.arange(width, device=device).expand(b, width)

    was_training = backbone.training
    backbone.eval()
    try:
        step = 0
        for k in range(n_blocks):
            in_block = (cidx >= k * block_length) & (cidx < (k + 1) * block_length)  # [B, T]
            schedule = transfer_schedule(((x == mask_id) & in_block).sum(1), steps_per_block)  # [B, spb]
            for s in range(steps_per_block):
                cand = (x == mask_id) & in_block  # [B, T] the current block's masked positions only
                if not bool(cand.any()):
                    step += 1
                    continue
                hidden = backbone(x, attention_mask=attention_mask, position_ids=position_ids)  # [B, T, d]
                logits = hidden[cand].float() @ weight.float().T  # [N, V]: masked positions of this block only
                if bias is not None:
                    logits = logits + bias.float()
                logits[:, mask_id] = float("-inf")
                if temperature > 0:
                    noisy = logits.double() + temperature * _gumbel(tuple(logits.shape), device, generator)
                    x0 = noisy.argmax(-1)  # [N]
                else:
                    x0 = logits.argmax(-1)  # [N]
                if remasking == "low_confidence":
                    conf = logits.softmax(-1).gather(-1, x0[:, None]).squeeze(-1)  # [N] p(x0)
                else:
                    conf = torch.rand(x0.shape, device=device, generator=generator)  # [N]
                conf_full = torch.full((b, width), float("-inf"), device=device)  # [B, T]; -inf: not a candidate
                conf_full[cand] = conf.float()
                x0_full = torch.zeros_like(x)
                x0_full[cand] = x0
                order = conf_full.argsort(dim=1, descending=True, stable=True)  # [B, T]
                rank = torch.empty_like(order).scatter_(1, order, ranks_base)  # [B, T] 0 = most confident
                commit = (rank < schedule[:, s : s + 1]) & cand  # [B, T] exactly schedule[b, s] per row
                x = torch.where(commit, x0_full, x)
                commit_step[commit] = step
                if trace is not None:
                    trace.append(x.clone())
                step += 1
    finally:
        backbone.train(was_training)
    take = (cidx >= 0) & (cidx < gen_length)  # [B, T]
    return DiffusionSample(x[take].view(b, gen_length), commit_step[take].view(b, gen_length), steps)


# --- metrics -------------------------------------------------------------------------------------------------------
def early_end_fraction(sample: DiffusionSample, end_id: int) -> float:
    """Share of end tokens among all tokens committed in the first half of the steps (over the whole batch)."""
    first = (sample.commit_step >= 0) & (sample.commit_step < sample.steps / 2)  # [B, G]
    n = int(first.sum())
    return float(((sample.canvas == end_id) & first).sum()) / n if n else 0.0


def response_lengths(canvases: Sequence[Sequence[int]], end_id: int, pad_ids: Sequence[int] = ()) -> list[int]:
    """Answer length in tokens of each canvas (the decoding rule)."""
    return [len(answer_tokens(c, end_id, pad_ids)) for c in canvases]


def exact_match(got: Sequence[object], want: Sequence[object]) -> float:
    """Fraction of answers equal to their target (token lists or strings)."""
    if len(got) != len(want):
        raise ValueError(f"{len(got)} answers for {len(want)} targets")
    return sum(g == w for g, w in zip(got, want)) / max(len(want), 1)
