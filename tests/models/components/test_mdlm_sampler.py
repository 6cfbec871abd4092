"""The LLaDA sampler: the commit schedule, low-confidence and random remasking, blocks, temperature, committed tokens
never changing, [MASK] never proposed; the decoding rule and the metrics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from src.models.components.mdlm_sampler import (
    DiffusionSample,
    answer_tokens,
    diffusion_sample,
    early_end_fraction,
    exact_match,
    response_lengths,
    transfer_schedule,
)
from tests.models.components.conftest import VOCAB, tiny_compact

MASK, PAD, END = 2, 0, 1
PROMPTS = [[10, 11, 12], [13]]


class TableBackbone(nn.Module):
    """logits at absolute position t = table[t] (hidden = table row, output weight = identity): the test decides
    every proposal and its confidence."""

    causal = False

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table  # [T_max, V]
        self.output_weight = nn.Parameter(torch.eye(table.shape[1]), requires_grad=False)
        self.output_bias = None
        self.calls = 0

    def forward(self, input_ids, attention_mask=None, position_ids=None, segment_ids=None):  # noqa: ANN001
        self.calls += 1
        pos = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        return self.table[pos]  # [B, T, V]


def ramp_table(t_max: int = 32, v: int = 40) -> torch.Tensor:
    """Position t favours token 20 + t % 20 with a margin growing with t (later = more confident)."""
    table = torch.zeros(t_max, v)
    for t in range(t_max):
        table[t, 20 + t % 20] = 0.5 * t
    return table


def test_transfer_schedule_spreads_the_remainder_over_the_first_steps() -> None:
    got = transfer_schedule(torch.tensor([10, 3, 0, 4]), 4)
    assert got.tolist() == [[3, 3, 2, 2], [1, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]]


def test_low_confidence_commits_the_most_confident_position_first() -> None:
    bb = TableBackbone(ramp_table())
    out = diffusion_sample(bb, [[10, 11, 12]], gen_length=8, mask_id=MASK, pad_id=PAD)  # steps = 8, 1 per step
    assert out.canvas.tolist() == [[20 + t for t in range(3, 11)]]  # argmax at T = 0
    assert out.commit_step.tolist() == [list(range(7, -1, -1))]  # the last (most confident) position first
    assert bb.calls == 8


def test_mask_is_never_proposed() -> None:
    table = ramp_table()
    table[:, MASK] = 100.0  # the model "wants" [MASK] everywhere
    out = diffusion_sample(TableBackbone(table), [[10]], gen_length=6, mask_id=MASK, pad_id=PAD, steps=3)
    assert not (out.canvas == MASK).any()


@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
@pytest.mark.parametrize(("gen_length", "steps", "block_length"), [(8, 5, None), (8, 4, 4), (12, 6, 4)])
def test_committed_tokens_never_change_and_each_step_commits_its_schedule(
        remasking: str, gen_length: int, steps: int, block_length: int | None) -> None:
    bb = tiny_compact(causal=False, init_std=0.2)
    trace: list[torch.Tensor] = []
    out = diffusion_sample(bb, PROMPTS, gen_length=gen_length, mask_id=MASK, pad_id=PAD, steps=steps,
                           block_length=block_length, remasking=remasking, temperature=1.0,
                           generator=torch.Generator().manual_seed(0), trace=trace)
    blk = block_length or gen_length
    n_blocks = gen_length // blk
    per_block = transfer_schedule(torch.tensor([blk]), steps // n_blocks)[0].tolist()
    assert len(trace) == steps
    prev = torch.full_like(trace[0], MASK)
    for i, p in enumerate(PROMPTS):
        prev[i, : len(p)] = torch.tensor(p)
        prev[i, len(p) + gen_length :] = PAD
    for s, cur in enumerate(trace):
        changed = cur != prev
        assert (prev[changed] == MASK).all()  # only masked positions change: committed tokens stay
        assert changed.sum(1).tolist() == [per_block[s % len(per_block)]] * len(PROMPTS)  # exactly the schedule
        block = s // (steps // n_blocks)
        for i, p in enumerate(PROMPTS):
            cidx = torch.nonzero(changed[i]).flatten() - len(p)
            assert ((cidx >= block * blk) & (cidx < (block + 1) * blk)).all()  # never past the current block
        prev = cur
    assert not (out.canvas == MASK).any() and (out.commit_step >= 0).all()


def test_positions_past_the_current_block_wait_for_their_block() -> None:
    """Even when the second block is far more confident, nothing there is committed during the first block."""
    table = ramp_table()
    table[5:, :] *= 10
    out = diffusion_sample(TableBackbone(table), [[10]], gen_length=8, mask_id=MASK, pad_id=PAD, steps=8,
                           block_length=4)
    assert (out.commit_step[0, :4] < 4).all() and (out.commit_step[0, 4:] >= 4).all()


def test_temperature_sampling_is_seeded_and_temperature_zero_is_argmax() -> None:
    bb = tiny_compact(causal=False, init_std=0.2)

    def run(seed: int, temperature: float) -> list[list[int]]:
        return diffusion_sample(bb, PROMPTS, gen_length=8, mask_id=MASK, pad_id=PAD, temperature=temperature,
                                generator=torch.Generator().manual_seed(seed)).canvas.tolist()

    assert run(0, 5.0) == run(0, 5.0) and run(0, 5.0) != run(1, 5.0)
    assert run(0, 0.0) == run(1, 0.0)


def test_random_remasking_ignores_confidence() -> None:
    bb = TableBackbone(ramp_table())
    orders = {tuple(diffusion_sample(bb, [[10]], gen_length=8, mask_id=MASK, pad_id=PAD, remasking="random",
                                     generator=torch.Generator().manual_seed(s)).commit_step[0].tolist())
              for s in range(4)}
    assert len(orders) > 1  # low_confidence would always give 7, 6, ..., 0


def test_a_prompt_batch_gives_each_row_what_it_gives_alone() -> None:
    """Right padding and per-row canvases: batching does not change a row's result."""
    bb = tiny_compact(causal=False, init_std=0.2)
    both = diffusion_sample(bb, PROMPTS, gen_length=6, mask_id=MASK, pad_id=PAD).canvas
    alone = diffusion_sample(bb, PROMPTS[1:], gen_length=6, mask_id=MASK, pad_id=PAD).canvas
    assert torch.equal(both[1], alone[0])


def test_bad_settings_are_refused() -> None:
    bb = TableBackbone(ramp_table())
    with pytest.raises(ValueError, match="remasking"):
        diffusion_sample(bb, [[10]], gen_length=4, mask_id=MASK, pad_id=PAD, remasking="topk")
    with pytest.raises(ValueError, match="multiple of block_length"):
        diffusion_sample(bb, [[10]], gen_length=6, mask_id=MASK, pad_id=PAD, block_length=4)
    with pytest.raises(ValueError, match="multiple of the number of blocks"):
        diffusion_sample(bb, [[10]], gen_length=8, mask_id=MASK, pad_id=PAD, block_length=4, steps=3)


def test_decoding_rule_and_metrics() -> None:
    pads = [30, 31]
    rows = [[5, 6, END, 30, 31], [5, 30, 7, 8, 9], [END, END, END, END, END]]
    assert [answer_tokens(r, END, pads) for r in rows] == [[5, 6], [5, 7, 8, 9], []]
    assert response_lengths(rows, END, pads) == [2, 4, 0]
    assert exact_match([[5, 6], [5, 7]], [[5, 6], [5, 8]]) == 0.5
    sample = DiffusionSample(torch.tensor([[5, END, END, 30]]), torch.tensor([[3, 0, 1, 2]]), steps=4)
    assert early_end_fraction(sample, END) == 1.0  # steps 0 and 1 committed only end tokens
    sample = DiffusionSample(torch.tensor([[5, END, 7, 30]]), torch.tensor([[0, 3, 1, 2]]), steps=4)
    assert early_end_fraction(sample, END) == 0.0
    assert VOCAB > 40  # the tiny backbone's vocabulary covers the ids used above
