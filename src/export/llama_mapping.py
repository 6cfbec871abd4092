"""The compact transformer (src/models/components/transformer.py) as a Hugging Face `LlamaForCausalLM`.

Both are pre-norm RMSNorm / rotate-half RoPE / SwiGLU / grouped-query decoders without biases; the compact
transformer computes RoPE from `theta ** (arange(0, hd, 2) / hd)` with `cat((freqs, freqs))` and rotates halves,
which is HF Llama's convention exactly, so q/k weights copy without the interleave permutation that Meta's
original checkpoints need. Sizes come from the weights themselves (vocabulary, kv heads, intermediate size);
the rest (heads, RoPE theta, norm epsilon, tied embeddings) from the run's `model` config.

| tokensmith (`backbone.` stripped) | transformers `LlamaForCausalLM` |
|---|---|
| `embed.weight` | `model.embed_tokens.weight` |
| `layers.{i}.attn_norm.weight` | `model.layers.{i}.input_layernorm.weight` |
| `layers.{i}.attn.{q,k,v,o}_proj.weight` | `model.layers.{i}.self_attn.{q,k,v,o}_proj.weight` |
| `layers.{i}.mlp_norm.weight` | `model.layers.{i}.post_attention_layernorm.weight` |
| `layers.{i}.mlp.{gate,up,down}_proj.weight` | `model.layers.{i}.mlp.{gate,up,down}_proj.weight` |
| `norm.weight` | `model.norm.weight` |
| `lm_head` (untied) | `lm_head.weight`; tied: absent, `tie_word_embeddings: true` |
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from src.export.errors import ExportError

TARGET = "src.models.components.transformer.CompactTransformer"

_LAYER_RULES = (  # tokensmith suffix inside layers.{i}. -> HF suffix inside model.layers.{i}.
    ("attn_norm.weight", "input_layernorm.weight"),
    ("attn.q_proj.weight", "self_attn.q_proj.weight"),
    ("attn.k_proj.weight", "self_attn.k_proj.weight"),
    ("attn.v_proj.weight", "self_attn.v_proj.weight"),
    ("attn.o_proj.weight", "self_attn.o_proj.weight"),
    ("mlp_norm.weight", "post_attention_layernorm.weight"),
    ("mlp.gate_proj.weight", "mlp.gate_proj.weight"),
    ("mlp.up_proj.weight", "mlp.up_proj.weight"),
    ("mlp.down_proj.weight", "mlp.down_proj.weight"),
)
_TOP_RULES = {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
              "lm_head": "lm_head.weight"}
_LAYER_KEY = re.compile(r"^layers\.(\d+)\.(.+)$")


def hf_key(key: str) -> str:
    """The transformers name of one compact-transformer weight."""
    if key in _TOP_RULES:
        return _TOP_RULES[key]
    m = _LAYER_KEY.match(key)
    if m:
        for ours, theirs in _LAYER_RULES:
            if m.group(2) == ours:
                return f"model.layers.{m.group(1)}.{theirs}"
    raise ExportError(f"compact transformer weight {key!r} has no Llama counterpart (newer model code than the "
                      "exporter? update src/export/llama_mapping.py)")


def map_state_dict(state: Mapping[str, Any]) -> dict[str, Any]:
    return {hf_key(k): v for k, v in state.items()}


def llama_config_kwargs(model_cfg: Mapping[str, Any], state: Mapping[str, Any]) -> dict[str, Any]:
    """`LlamaConfig` arguments reproducing the compact transformer of `model_cfg` with weights `state`."""
    if not model_cfg.get("causal", True):
        raise ExportError(
            "this run trained a bidirectional model (model.causal=false, a masked-diffusion backbone); Hugging "
            "Face has no causal-LM class that runs it, so it cannot be exported yet (docs/export.md)"
        )
    try:
        vocab, d_model = state["embed.weight"].shape
        n_layers = 1 + max(int(_LAYER_KEY.match(k).group(1)) for k in state if _LAYER_KEY.match(k))
        ffn_hidden = state["layers.0.mlp.gate_proj.weight"].shape[0]
        kv_dim = state["layers.0.attn.k_proj.weight"].shape[0]
    except (KeyError, ValueError) as err:
        raise ExportError(f"the checkpoint's backbone weights are not a compact transformer's (missing {err})") from err
    n_heads = int(model_cfg["n_heads"])
    head_dim = d_model // n_heads
    tied = "lm_head" not in state
    if bool(model_cfg.get("tie_embeddings", False)) != tied:
        raise ExportError(f"model.tie_embeddings={model_cfg.get('tie_embeddings')} in the config, but the checkpoint "
                          f"{'has no' if tied else 'has an'} lm_head: config and checkpoint are from different runs")
    for name, want, got in (("d_model", model_cfg.get("d_model"), d_model),
                            ("n_layers", model_cfg.get("n_layers"), n_layers)):
        if want is not None and int(want) != got:
            raise ExportError(f"model.{name}={want} in the config but {got} in the checkpoint: config and checkpoint "
                              "are from different runs")
    return {
        "vocab_size": int(vocab),
        "hidden_size": int(d_model),
        "intermediate_size": int(ffn_hidden),
        "num_hidden_layers": int(n_layers),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(kv_dim // head_dim),
        "head_dim": int(head_dim),
        "hidden_act": "silu",
        "max_position_embeddings": int(model_cfg.get("max_seq_len") or 2048),
        "rms_norm_eps": float(model_cfg.get("norm_eps", 1e-5)),
        "rope_theta": float(model_cfg.get("rope_theta", 10000.0)),
        "tie_word_embeddings": tied,
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": float(model_cfg.get("init_std", 0.02)),
        "architectures": ["LlamaForCausalLM"],
    }


def build_llama(model_cfg: Mapping[str, Any], state: Mapping[str, Any], special_ids: Mapping[str, int | None]) -> Any:
    """A `LlamaForCausalLM` holding the compact transformer's weights exactly (strict load, same dtype)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    kwargs = llama_config_kwargs(model_cfg, state)
    dtype = next(iter(state.values())).dtype
    model = LlamaForCausalLM(LlamaConfig(**kwargs, **special_ids))  # random init, overwritten below
    mapped = map_state_dict(state)
    result = model.load_state_dict(mapped, strict=False)
    missing = set(result.missing_keys) - ({"lm_head.weight"} if kwargs["tie_word_embeddings"] else set())
    if missing or result.unexpected_keys:
        raise ExportError(f"weight map mismatch: missing {sorted(missing)}, "
                          f"unexpected {sorted(result.unexpected_keys)}")
    if kwargs["tie_word_embeddings"]:
        model.tie_weights()
        if model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
            raise ExportError("tied embeddings did not tie in the exported Llama model")
    model = model.to(dtype)
    model.eval()
    return model
