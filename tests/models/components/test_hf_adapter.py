"""HFBackbone: hidden states + output weight reproduce the HF model's own logits, for every way of building it.

The Backbone contract it shares with the compact transformer is in test_backbone_contract.py."""

from __future__ import annotations

import pytest
import torch

from src.models.components.hf_adapter import HFBackbone
from tests.models.components.conftest import VOCAB, ids, tiny_hf, tiny_llama_config

ATOL = 1e-5


def logits_from(backbone: HFBackbone, *args, **kwargs) -> torch.Tensor:
    h = backbone(*args, **kwargs)  # [B, T, d]
    out = h @ backbone.output_weight.T
    return out if backbone.output_bias is None else out + backbone.output_bias


def test_hidden_times_output_weight_equals_hf_logits(hf):
    x = ids(2, 7)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    ref = hf.model(input_ids=x, attention_mask=mask).logits
    torch.testing.assert_close(logits_from(hf, x, mask), ref, atol=ATOL, rtol=0)


def test_lm_head_bias_is_exposed():
    torch.manual_seed(0)
    phi = HFBackbone(
        dict(
            model_type="phi",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            vocab_size=VOCAB,
            max_position_embeddings=64,
        )
    ).eval()
    assert phi.output_bias is not None and phi.output_bias.shape == (VOCAB,)
    x = ids(1, 5)
    torch.testing.assert_close(logits_from(phi, x), phi.model(input_ids=x).logits, atol=ATOL, rtol=0)


def test_tied_embeddings_are_the_output_weight():
    m = tiny_hf(tie_word_embeddings=True)
    assert m.output_weight.data_ptr() == m.model.get_input_embeddings().weight.data_ptr()


def test_local_path_and_pretrained_false(tmp_path, hf):
    hf.model.save_pretrained(tmp_path)
    loaded = HFBackbone(str(tmp_path)).eval()
    x = ids(2, 6)
    torch.testing.assert_close(loaded(x), hf(x))
    fresh = HFBackbone(str(tmp_path), pretrained=False, vocab_size=VOCAB + 14)  # same architecture, new weights
    assert fresh.vocab_size == VOCAB + 14
    assert not torch.allclose(fresh.model.get_input_embeddings().weight[:VOCAB], hf.output_weight)


def test_vocab_size_resizes_to_the_tokenizer(tmp_path, hf):
    assert HFBackbone(tiny_llama_config(), vocab_size=70).vocab_size == 70
    hf.model.save_pretrained(tmp_path)
    resized = HFBackbone(str(tmp_path), vocab_size=64)
    assert resized.vocab_size == 64 and resized.model.get_input_embeddings().weight.shape[0] == 64


def test_segment_ids_with_unsupported_attention_raise_a_clear_error(hf):
    hf.config._attn_implementation = "flash_attention_2"  # pretend; the check happens before any kernel runs
    with pytest.raises(ValueError, match="segment_ids"):
        hf(ids(1, 4), segment_ids=torch.ones(1, 4, dtype=torch.long))


def test_lora_wraps_and_only_lora_params_train():
    m = HFBackbone(tiny_llama_config(), lora=dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert not m.output_weight.requires_grad
    x = ids(2, 5)
    m(x).pow(2).sum().backward()
    assert all(p.grad is not None for n, p in m.named_parameters() if "lora_B" in n)
    assert m.vocab_size == VOCAB  # contract still reachable through the peft wrapper


def test_gradient_checkpointing_gives_identical_gradients():
    grads = []
    x = ids(2, 6)
    for ckpt in (False, True):
        torch.manual_seed(0)
        m = HFBackbone(tiny_llama_config(), gradient_checkpointing=ckpt).train()
        m(x).pow(2).sum().backward()
        grads.append(m.model.model.layers[0].self_attn.q_proj.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_config_dict_needs_model_type():
    with pytest.raises(ValueError, match="model_type"):
        HFBackbone({"hidden_size": 32})


def test_keep_layers_is_the_full_models_first_layers(tmp_path):
    """keep_layers=N must compute exactly what the first N layers of the saved model compute (then the final
    norm), also through the KV-cache path generation uses, and it must refuse an N the model does not have."""
    full = tiny_hf(num_hidden_layers=3)
    full.model.save_pretrained(tmp_path)
    cut = HFBackbone(str(tmp_path), keep_layers=2).eval()
    assert cut.config.num_hidden_layers == 2 and len(cut.decoder.layers) == 2
    assert sum(p.numel() for p in cut.parameters()) < sum(p.numel() for p in full.parameters())
    x = ids(2, 6)
    with torch.no_grad():
        after_two = full.decoder(input_ids=x, output_hidden_states=True).hidden_states[2]  # [B, T, d], pre-norm
        want = full.decoder.norm(after_two)
        torch.testing.assert_close(cut(x), want, atol=ATOL, rtol=0)
        mask = torch.ones(2, 6, dtype=torch.long)
        cached, _ = cut.forward_cached(x, mask, torch.arange(6).expand(2, 6), None)
    torch.testing.assert_close(cached, want, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match=r"keep_layers=4: this model has 3 decoder layers"):
        HFBackbone(str(tmp_path), keep_layers=4)


def test_a_loaded_pretrained_model_trains_with_its_dropout(tmp_path):
    """from_pretrained hands back an eval-mode model; the backbone must start in train mode like any new module,
    so a checkpoint's dropout is active in training (Lightning keeps the modes it finds) and off under eval()."""
    tiny_hf(attention_dropout=0.5).model.save_pretrained(tmp_path)
    loaded = HFBackbone(str(tmp_path))
    assert all(m.training for m in loaded.modules())
    x = ids(2, 6)
    torch.manual_seed(1)
    first = loaded(x)
    assert not torch.allclose(first, loaded(x))  # a fresh dropout mask per forward
    loaded.eval()
    torch.testing.assert_close(loaded(x), loaded(x), atol=0, rtol=0)


def test_gradient_checkpointing_applies_to_a_loaded_pretrained_model(tmp_path):
    """transformers recomputes checkpointed layers only in train mode: a loaded model must start in it, else
    `gradient_checkpointing=true` saves no memory. A checkpointed MLP runs twice: forward, and recompute in backward."""
    tiny_hf().model.save_pretrained(tmp_path)
    calls = []
    loaded = HFBackbone(str(tmp_path), gradient_checkpointing=True)
    loaded.decoder.layers[0].mlp.register_forward_pre_hook(lambda *_: calls.append(1))  # inside the checkpoint
    loaded(ids(2, 6)).sum().backward()
    assert len(calls) == 2
