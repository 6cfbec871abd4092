"""LoRA on the compact transformer (compact_lora.py): only adapters and the chosen token rows train, the base
weights stay bit-identical, a plain state dict loads under the adapters, and merging reproduces the wrapped model."""

from __future__ import annotations

import pytest
import torch

from src.models.components.compact_lora import merge_lora_state, resolve_token_names
from src.models.components.transformer import CompactTransformer
from src.models.logprobs import batch_logprobs

V, PADS, EOS = 24, [20, 21, 22], 2
SIZE = dict(vocab_size=V, d_model=32, n_layers=1, n_heads=4, causal=False)
LORA = dict(r=4, lora_alpha=8, trainable_token_indices=PADS, token_init=EOS)


def _base(tie: bool = False) -> CompactTransformer:
    torch.manual_seed(0)
    return CompactTransformer(**SIZE, tie_embeddings=tie)


def _lora(base: CompactTransformer, tie: bool = False) -> CompactTransformer:
    torch.manual_seed(1)
    model = CompactTransformer(**SIZE, tie_embeddings=tie, lora=LORA)
    model.load_base_state_dict(base.state_dict())
    return model


def _frozen(model: CompactTransformer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()
            if ".lora_" not in k and "delta" not in k and not k.startswith("token_rows.")}


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_a_step_trains_only_adapters_and_pad_rows(tie: bool) -> None:
    base = _base(tie)
    model = _lora(base, tie)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(".lora_" in n or "trainable_tokens_delta" in n or n == "token_rows.head_delta" for n in trainable)
    assert any("trainable_tokens_delta" in n for n in trainable) and (tie or "token_rows.head_delta" in trainable)
    before, out_before = _frozen(model), model.output_weight.detach().clone()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    ids = torch.tensor([[5, 6, 7, EOS, 20, 21, 22, 20]])  # pads as inputs and as targets
    logp = batch_logprobs(model, {"input_ids": ids, "labels": ids}, kernel="reference").logp
    (-logp.sum()).backward()
    opt.step()
    after = _frozen(model)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)  # bit-identical
    moved = (model.output_weight.detach() - out_before).abs().amax(1)  # [V]
    assert moved[PADS].min() > 0 and moved[[i for i in range(V) if i not in PADS]].max() == 0
    assert any(p.abs().max() > 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_base_weights_load_under_the_adapters_and_pads_start_from_eos() -> None:
    base = _base()
    model = _lora(base)
    ids = torch.tensor([[5, 6, 7, EOS, 9]])  # no pad token: LoRA B = 0, so exactly the base's function
    torch.testing.assert_close(model(ids), base(ids), rtol=0, atol=0)
    w, bw = model.output_weight.detach(), base.output_weight.detach()
    torch.testing.assert_close(w[PADS], bw[PADS] + bw[EOS])  # token_init=eos: eos row + the pad's own row
    torch.testing.assert_close(model.embed(torch.tensor(PADS)), base.embed.weight[PADS] + base.embed.weight[EOS])
    with pytest.raises(ValueError, match="do not fit this LoRA compact model"):
        model.load_base_state_dict({k: v for k, v in base.state_dict().items() if k != "norm.weight"})


def test_merged_state_is_the_same_model() -> None:
    model = _lora(_base())
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))  # trained-looking adapters and rows
    plain = CompactTransformer(**SIZE)
    plain.load_state_dict(merge_lora_state(model.state_dict(), LORA))  # strict: the plain layout exactly
    ids = torch.tensor([[5, 20, 21, EOS, 22, 9]])
    torch.testing.assert_close(plain(ids), model(ids), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain.output_weight, model.output_weight.detach())


def test_token_names_resolve_to_the_tokenizers_ids() -> None:
    names = {"pads": PADS, "eos": EOS, "mask": None}
    lora = resolve_token_names({"r": 4, "trainable_token_indices": "pads", "token_init": "eos"}, names)
    assert lora == {"r": 4, "trainable_token_indices": PADS, "token_init": EOS}
    with pytest.raises(ValueError, match=r"'mask': this tokenizer has no such tokens.*\['eos', 'pads'\]"):
        resolve_token_names({"trainable_token_indices": "mask"}, names)
    with pytest.raises(ValueError, match="model.lora.trainable_token_indices=\\[99\\]"):
        CompactTransformer(**SIZE, lora={"trainable_token_indices": [99]})


@pytest.mark.parametrize("option", [{"use_dora": True}, {"bias": "lora_only"}, {"rank_pattern": {"q_proj": 2}}])
def test_options_the_exact_merge_cannot_express_are_refused(option: dict) -> None:
    """Export folds in W + (α/r)·B·A: DoRA, trained biases or per-module ranks would export a different model."""
    key = next(iter(option))
    with pytest.raises(ValueError, match=f"model.lora.{key}=.*use an HF model"):
        CompactTransformer(**SIZE, lora={"r": 4, **option})
    CompactTransformer(**SIZE, lora={"r": 4, "use_rslora": True, "bias": "none"})  # plain options still build
