"""method=dpo on tiny models: starts at ln 2, learns the preference, keeps its reference, weights are honoured."""

from __future__ import annotations

import math

import pytest
import torch

from src.models.components.hf_adapter import HFBackbone
from src.models.dpo import DPOModule, stack_views
from src.models.logprobs import batch_logprobs
from tests.models.components.conftest import VOCAB, tiny_compact, tiny_llama_config


def pairs(b: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Prompt of 3 tokens; chosen response counts up (x, x+1, ...), rejected repeats one token; different lengths."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for prefix, length in (("chosen_", 5), ("rejected_", 4)):
        prompt = torch.randint(2, VOCAB, (b, 3), generator=g)
        start = torch.randint(2, VOCAB - 8, (b, 1), generator=g)
        resp = start + torch.arange(length) if prefix == "chosen_" else start.expand(b, length)
        ids = torch.cat([prompt, resp], 1)  # [B, 3 + L]
        labels = ids[:, 1:].clone()
        labels[:, :2] = -100  # the prompt's next tokens are not trained
        out[f"{prefix}input_ids"], out[f"{prefix}labels"] = ids[:, :-1], labels
        out[f"{prefix}attention_mask"] = torch.ones_like(labels)
    return out


def _step(module: DPOModule, batch: dict[str, torch.Tensor], opt: torch.optim.Optimizer) -> dict[str, float]:
    out = module.compute_loss(batch)
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    return {"loss": float(out.loss), **{k: float(v) for k, v in out.metrics.items()}}


def test_stack_views_pads_to_one_length() -> None:
    both = stack_views(pairs(2))
    assert both["input_ids"].shape == (4, 7) and both["labels"].shape == (4, 7)
    assert (both["labels"][2:, -1] == -100).all() and (both["attention_mask"][2:, -1] == 0).all()


@pytest.mark.parametrize("lora", [False, True], ids=["compact-copy", "hf-lora-adapter"])
def test_dpo_starts_at_ln2_and_learns_the_preference(lora: bool) -> None:
    torch.manual_seed(0)
    backbone = (HFBackbone(tiny_llama_config(), lora={"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]})
                if lora else tiny_compact())
    module = DPOModule(backbone.train(), optimizer=torch.optim.AdamW, beta=0.5)
    assert module.reference.mode == ("adapter" if lora else "copy")
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-2)
    batch = pairs()
    first = _step(module, batch, opt)
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference: h = 0
    assert first["rewards/margin"] == pytest.approx(0.0, abs=1e-5)
    for _ in range(15):
        last = _step(module, batch, opt)
    assert last["loss"] < 0.5 * math.log(2)
    assert last["rewards/accuracy"] == 1.0 and last["rewards/margin"] > 0.5
    with torch.no_grad():  # the reference did not move: its log-probs are the starting policy's
        ref = module.reference.logprobs(stack_views(batch))
    module2 = DPOModule(backbone, optimizer=torch.optim.AdamW, beta=0.5, reference="precomputed")
    batch_ref = {**batch, "chosen_ref_logp": ref[:4], "rejected_ref_logp": ref[4:]}
    torch.testing.assert_close(module2.compute_loss(batch_ref).loss, module.compute_loss(batch).loss)


def test_token_weights_all_one_equal_plain_dpo_and_zero_weights_silence_tokens() -> None:
    module = DPOModule(tiny_compact(), optimizer=torch.optim.AdamW, beta=0.1)
    torch.nn.init.normal_(module.backbone.embed.weight)  # policy != reference: a non-zero margin
    batch = pairs()
    plain = module.compute_loss(batch)
    ones = {**batch, "rejected_weights": torch.ones(4, 6)}  # chosen weights default to 1
    assert torch.equal(module.compute_loss(ones).numerator, plain.numerator)
    zero = {**batch, "rejected_weights": torch.zeros(4, 6)}  # rejected side ignored: only chosen log-ratios count
    out = module.compute_loss(zero)
    assert float(out.metrics["rewards/rejected"]) == 0.0  # rewards are the weighted log-ratios the loss sees
    assert float(out.metrics["rewards/chosen"]) == float(plain.metrics["rewards/chosen"])
    assert float(plain.metrics["rewards/rejected"]) != 0.0 and not torch.equal(out.numerator, plain.numerator)
    ignored = DPOModule(module.backbone, optimizer=torch.optim.AdamW, beta=0.1, token_weights=False)
    ignored.reference = module.reference  # the same (unperturbed) reference
    assert torch.equal(ignored.compute_loss(zero).numerator, plain.numerator)


def test_bad_settings_are_one_clear_error() -> None:
    with pytest.raises(ValueError, match="beta must be > 0"):
        DPOModule(tiny_compact(), optimizer=torch.optim.AdamW, beta=0)
    with pytest.raises(ValueError, match="critical-token DPO"):
        DPOModule(tiny_compact(), optimizer=torch.optim.AdamW, loss_type="cdpo")
    with pytest.raises(ValueError, match="needs a LoRA backbone"):
        DPOModule(tiny_compact(), optimizer=torch.optim.AdamW, reference="adapter")


def test_simpo_builds_no_reference_and_learns_the_preference_on_length_averages() -> None:
    """method=simpo: no reference model (one copy of the weights); the loss is SimPO's on the policy's average
    log-prob per response (the end token included), and training raises the chosen average above the rejected."""
    from src.losses.simpo import simpo_pair_losses
    from src.models.preference_losses import SimPOLoss

    torch.manual_seed(0)
    module = DPOModule(tiny_compact().train(), optimizer=torch.optim.AdamW,
                       loss=SimPOLoss(beta=2.0, gamma=1.0))
    assert module.reference is None and module.reference_models() == []
    assert module.hparams["loss"] == {"name": "simpo", "beta": 2.0, "gamma": 1.0, "label_smoothing": 0.0}
    batch = pairs()
    with torch.no_grad():
        out = module.compute_loss(batch)
        lp = batch_logprobs(module.backbone, stack_views(batch))
        avg = (lp.logp * lp.mask).sum(-1) / lp.mask.sum(-1)  # [2B]
    torch.testing.assert_close(out.numerator, simpo_pair_losses(avg[:4], avg[4:], 2.0, 1.0).sum())
    opt = torch.optim.AdamW(module.parameters(), lr=1e-2)
    for _ in range(15):
        last = _step(module, batch, opt)
    assert last["rewards/accuracy"] == 1.0 and last["rewards/margin"] > 1.0  # β·Δ beyond the margin γ = 1
    with pytest.raises(ValueError, match="set them under method.loss"):
        DPOModule(tiny_compact(), optimizer=torch.optim.AdamW, beta=0.5, loss=SimPOLoss())
