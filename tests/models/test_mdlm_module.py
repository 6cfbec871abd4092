"""method=mdlm: the loss equals the hand computation from plain logits, the masking RNG resumes exactly, the model
learns a canvas, and it samples through the diffusion sampler."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from src.losses.mdlm import forward_mask
from src.models.mdlm import MaskedDiffusionModule
from tests.models.components.conftest import tiny_compact

PAD, END, MASK = 0, 1, 2
PADS = [3, 4, 5]


def tokenizer() -> SimpleNamespace:
    return SimpleNamespace(pad_id=PAD, eos_id=END, mask_id=MASK, reserved_pad_ids=PADS, special_ids=frozenset(
        [PAD, END, MASK, *PADS]), encode=lambda s: [10 + int(c) for c in s], decode=lambda ids: "".join(
        str(i - 10) for i in ids))


def module(seed: int = 0, **kw) -> MaskedDiffusionModule:  # noqa: ANN003
    return MaskedDiffusionModule(tiny_compact(causal=False).train(), optimizer=torch.optim.AdamW,
                                 tokenizer=tokenizer(), mask_seed=seed, **kw)


def canvas_batch(b: int = 6) -> dict[str, torch.Tensor]:
    """prompt [20 + i] then a canvas of 6: answer (10 + i) repeated i % 3 + 1 times, one end token, rainbow pads."""
    ids, labels = [], []
    for i in range(b):
        ans = [10 + i] * (i % 3 + 1)
        canvas = ans + [END] + [PADS[j % 3] for j in range(6 - len(ans) - 1)]
        ids.append([20 + i] + canvas)
        labels.append([-100] + canvas)
    ids_t = torch.tensor(ids)
    return {"input_ids": ids_t, "labels": torch.tensor(labels), "attention_mask": torch.ones_like(ids_t)}


def test_a_causal_backbone_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="model.causal=false"):
        MaskedDiffusionModule(tiny_compact(), optimizer=torch.optim.AdamW, tokenizer=tokenizer())


def hand_loss(m: MaskedDiffusionModule, batch: dict[str, torch.Tensor], seed: int, **eps: float
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Σ_b Σ_masked CE / (p_mask · L_ans), masked [B, T], p_mask [B]) with the module's masks, re-drawn from its
    generator (rank 0), and CE from full logits."""
    gen = torch.Generator().manual_seed(seed * 1_000_003)  # the training generator of rank 0
    maskable = batch["labels"] != -100
    noisy, masked, p_mask = forward_mask(batch["input_ids"], maskable, MASK, generator=gen, **eps)
    logits = m.backbone(noisy, attention_mask=batch["attention_mask"]) @ m.backbone.output_weight.T  # [B, T, V]
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["input_ids"], reduction="none")
    return ((ce * masked).sum(1) / (p_mask * maskable.sum(1))).sum(), masked, p_mask


def test_loss_equals_the_hand_computation_from_plain_logits() -> None:
    """Same masks (the module's generator, re-created), CE from full logits: Σ_b Σ_masked CE / (p_mask · L_ans)."""
    m, batch = module(seed=3), canvas_batch()
    out = m.compute_loss(batch)
    want, masked, _ = hand_loss(m, batch, 3)
    assert out.numerator.item() == pytest.approx(want.item(), rel=1e-5)
    assert out.denominator.item() == 6  # sequences: the step-exact mean divides by them
    assert not masked[:, 0].any()  # the prompt column never masked


def test_mask_eps_is_the_smallest_masking_probability_and_the_loss_divides_by_it() -> None:
    """method.mask_eps=0.6: p_mask = 0.4·t + 0.6 >= 0.6 for every sequence, and the loss is the hand computation
    with that p_mask (the default eps would draw other masks and divide by other probabilities)."""
    m, batch = module(seed=3, mask_eps=0.6), canvas_batch()
    out = m.compute_loss(batch)
    want, _, p_mask = hand_loss(m, batch, 3, eps=0.6)
    assert bool((p_mask >= 0.6).all())
    assert out.numerator.item() == pytest.approx(want.item(), rel=1e-5)
    assert out.numerator.item() != pytest.approx(hand_loss(m, batch, 3)[0].item(), rel=1e-3)


def test_masking_rng_resumes_exactly_and_validation_masks_repeat() -> None:
    a = module(seed=1)
    batch = canvas_batch()
    a.compute_loss(batch)  # advances the training generator
    ckpt: dict = {}
    a.on_save_checkpoint(ckpt)
    next_a = forward_mask(batch["input_ids"], batch["labels"] != -100, MASK, generator=a.mask_generator())[1]
    b = module(seed=1)
    b.on_load_checkpoint(ckpt)
    next_b = forward_mask(batch["input_ids"], batch["labels"] != -100, MASK, generator=b.mask_generator())[1]
    assert torch.equal(next_a, next_b)
    a.eval()
    losses = []
    for _ in range(2):
        a.on_validation_epoch_start()
        losses.append(a.compute_loss(batch).numerator.item())
    assert losses[0] == losses[1]


def test_learns_the_canvas_and_samples_it_back() -> None:
    torch.manual_seed(0)
    m, batch = module(), canvas_batch()
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = None
    for _ in range(300):
        out = m.compute_loss(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = first if first is not None else out.loss.item()
    m.eval()
    with torch.no_grad():
        final = sum(m.compute_loss(batch).loss.item() for _ in range(4)) / 4
    assert final < 0.2 * first
    rows = m.sample_ids([[20 + i] for i in range(6)], max_new_tokens=6)
    assert rows == [[10 + i] * (i % 3 + 1) + [END] for i in range(6)]  # answer, then the end token; pads dropped
    assert m.sample(["1"], max_new_tokens=6) is not None


def test_each_rank_draws_its_own_training_masks_and_all_ranks_the_same_validation_masks() -> None:
    """DDP: rank r seeds its training masks with the rank (two ranks masking alike would halve the masks a step
    sees); validation re-seeds without it, so a validation is the same whatever the number of ranks."""
    def draws(rank: int, training: bool) -> torch.Tensor:
        m = module(seed=3)
        m._trainer = SimpleNamespace(global_rank=rank)  # what DDP's rank r sees
        m.train(training)
        return torch.rand(8, generator=m.mask_generator())

    assert not torch.equal(draws(0, True), draws(1, True))
    assert torch.equal(draws(1, True), draws(1, True))
    assert torch.equal(draws(0, False), draws(1, False))
