"""The reference-model holder: a frozen copy, the LoRA policy with its adapter off, or precomputed log-probs."""

from __future__ import annotations

import pytest
import torch

from src.models.components.hf_adapter import HFBackbone
from src.models.lm import CausalLMModule
from src.models.logprobs import batch_logprobs
from src.models.reference import ReferenceModel
from tests.models.components.conftest import VOCAB, tiny_compact, tiny_hf, tiny_llama_config


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (2, 7), generator=g)
    labels = ids[:, 1:].clone()
    labels[0, :2] = -100  # a masked prompt
    return {"input_ids": ids[:, :-1], "labels": labels, "attention_mask": torch.ones(2, 6, dtype=torch.long)}


def _perturb(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(0.5 * torch.randn_like(p))


def test_copy_scores_the_starting_policy_frozen_and_in_eval_mode() -> None:
    policy = tiny_compact(dropout=0.5).train()
    batch = _batch()
    ref = ReferenceModel(policy, "copy")
    start = batch_logprobs(policy.eval(), batch).logp
    _perturb(policy)  # training moves the policy...
    assert not torch.allclose(batch_logprobs(policy, batch).logp, start)
    ref.train()  # ...Lightning switches modes; the reference keeps eval (no dropout)
    assert not ref.frozen.training
    torch.testing.assert_close(ref.logprobs(batch), start, rtol=0, atol=0)  # ...the reference does not move
    assert all(not p.requires_grad for p in ref.parameters())
    assert float(ref.logprobs(batch)[0, :2].abs().sum()) == 0.0  # ignored labels score 0


def test_objective_optimises_the_policy_only_and_checkpoints_the_reference() -> None:
    module = CausalLMModule(tiny_compact(), optimizer=torch.optim.AdamW)
    module.reference = ReferenceModel(module.backbone, "copy")
    opt = module.configure_optimizers()["optimizer"]
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    assert trained == {id(p) for p in module.backbone.parameters()}
    keys = module.state_dict().keys()
    assert any(k.startswith("reference.frozen.") for k in keys)  # a resumed run scores against the same reference


def test_adapter_mode_is_the_base_model_without_a_second_copy() -> None:
    pytest.importorskip("peft")
    base = tiny_hf()
    batch = _batch()
    base_logp = batch_logprobs(base, batch).logp
    torch.manual_seed(0)  # the same base weights as tiny_hf(), with LoRA on top (B = 0: the same function)
    policy = HFBackbone(tiny_llama_config(), lora={"r": 4, "target_modules": ["q_proj", "v_proj"]}).eval()
    ref = ReferenceModel(policy, "adapter")
    assert sum(p.numel() for p in ref.parameters()) == 0  # no second copy
    _perturb(policy)  # only the LoRA weights are trainable: the policy moves away from its base
    assert not torch.allclose(batch_logprobs(policy, batch).logp, base_logp)
    torch.testing.assert_close(ref.logprobs(batch), base_logp)
    # scoring the reference leaves the adapter on and the policy's mode as it was
    policy.train()
    ref.logprobs(batch)
    assert policy.training
    assert not torch.allclose(batch_logprobs(policy.eval(), batch).logp, base_logp)


def test_precomputed_reads_the_batch_and_bad_combinations_are_refused() -> None:
    batch = _batch()
    ref = ReferenceModel(tiny_compact(), "precomputed")
    batch["chosen_ref_logp"] = torch.full((2, 6), -1.5)
    assert float(ref.logprobs(batch, prefix="chosen_").sum()) == -18.0
    with pytest.raises(KeyError, match="ref_logp"):
        ref.logprobs(batch)
    with pytest.raises(ValueError, match="needs a LoRA backbone"):
        ReferenceModel(tiny_compact(), "adapter")
    with pytest.raises(ValueError, match="not one of"):
        ReferenceModel(tiny_compact(), "frozen")
