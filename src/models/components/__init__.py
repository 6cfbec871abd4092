"""Backbones (hidden states + output weight, see docs/contracts.md) and generation.

- transformer.CompactTransformer: our own Llama-style model, causal or bidirectional
- hf_adapter.HFBackbone: any Hugging Face AutoModelForCausalLM (pretrained, local, GGUF or from a config dict)
- generation.generate: KV-cached sampling for either backbone
- attention_mask.sdpa_mask / kv_cache.KVCache: the pieces they share

Nothing is imported here so that `import src.models.components.transformer` stays free of transformers/peft.
"""
