"""HFBackbone: any Hugging Face `AutoModelForCausalLM` behind the Backbone contract.

The adapter runs only the decoder (`get_decoder()`) and exposes the LM head's weight instead of calling it:
objectives then compute per-token log-probs with the fused kernels from `hidden` and `output_weight` and never
build the [B, T, V] logits a 49k-vocabulary model would otherwise allocate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from src.assets.pretrained import resolve_pretrained
from src.models.components.attention_mask import sdpa_mask
from src.models.components.compact_lora import plain_container


def _dtype(torch_dtype: str | torch.dtype | None) -> torch.dtype | str | None:
    if isinstance(torch_dtype, str) and torch_dtype != "auto":
        return getattr(torch, torch_dtype)
    return torch_dtype


def truncate_layers(hf: nn.Module, n: int) -> None:
    """Keep the first `n` decoder layers of `hf` in place (config updated so caches and saving agree)."""
    decoder = hf.get_decoder()
    total = len(decoder.layers)
    if not 1 <= n <= total:
        raise ValueError(f"model.keep_layers={n}: this model has {total} decoder layers; use 1..{total} or null")
    decoder.layers = decoder.layers[:n]
    hf.config.num_hidden_layers = n
    if getattr(hf.config, "layer_types", None) is not None:  # per-layer attention kinds (sliding / full)
        hf.config.layer_types = list(hf.config.layer_types)[:n]


class HFBackbone(nn.Module):
    """Wrap a causal LM given as a Hub name / local path / registered short name (`smollm2-135m`) or a config
    dict (`{"model_type": "llama", "hidden_size": 64, ...}`, randomly initialised).

    pretrained=False with a name builds the same architecture with random weights. vocab_size resizes the
    embeddings (pretrained) or sets the config (from a dict) so the model matches our tokenizer. lora is a dict of
    `peft.LoraConfig` kwargs; with it only the LoRA parameters are trainable.

    causal=False makes it bidirectional (masked-diffusion models, `method=mdlm`): every forward hands the decoder a
    4D mask without the causal part (padding and packed documents still masked), which transformers uses as-is
    instead of building its causal one. Works for models that take a 4D mask (Llama family, sdpa or eager).

    keep_layers=N keeps only the first N decoder layers (and the final norm and head): a cheaper model that still
    carries the pretrained embeddings and early attention heads, for pilots on CPU (docs/models.md).
    """

    def __init__(
        self,
        model: str | Mapping[str, Any],
        *,
        pretrained: bool = True,
        gguf_file: str | None = None,
        torch_dtype: str | torch.dtype | None = None,
        vocab_size: int | None = None,
        lora: Mapping[str, Any] | None = None,
        gradient_checkpointing: bool = False,
        attn_implementation: str = "sdpa",
        cache_dir: str | None = None,
        keep_layers: int | None = None,
        causal: bool = True,
    ) -> None:
        super().__init__()
        if not causal and attn_implementation not in ("sdpa", "eager"):
            raise ValueError(f"model.causal=false needs model.attn_implementation=sdpa or eager (a 4D mask the "
                             f"attention uses as-is), got {attn_implementation!r}")
        self._causal = bool(causal)
        from transformers import AutoConfig, AutoModelForCausalLM

        model = plain_container(model)
        dtype = _dtype(torch_dtype)
        if isinstance(model, Mapping):
            cfg = dict(model)
            model_type = cfg.pop("model_type", None)
            if model_type is None:
                raise ValueError("a config dict for HFBackbone needs 'model_type' (e.g. 'llama')")
            if vocab_size is not None:
                cfg["vocab_size"] = vocab_size
            config = AutoConfig.for_model(model_type, **cfg)
            hf = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation, dtype=dtype)
        else:
            path, registered_gguf = resolve_pretrained(model, cache_dir)
            gguf_file = gguf_file or registered_gguf
            if pretrained:
                hf = AutoModelForCausalLM.from_pretrained(
                    path, gguf_file=gguf_file, dtype=dtype, attn_implementation=attn_implementation
                )
            else:
                config = AutoConfig.from_pretrained(path, gguf_file=gguf_file)
                hf = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation, dtype=dtype)
            if vocab_size is not None and vocab_size != hf.get_output_embeddings().weight.shape[0]:
                hf.resize_token_embeddings(vocab_size)
        if keep_layers is not None:
            truncate_layers(hf, int(keep_layers))
        if gradient_checkpointing:  # non-reentrant: works with frozen (LoRA) inputs without extra hooks
            if hasattr(hf, "activation_checkpointing_enable"):  # transformers >= 5 name
                hf.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        hf.config.use_cache = False  # training forwards never want a cache; forward_cached asks explicitly
        # from_pretrained returns the model in eval mode, and Lightning keeps submodules' modes as it finds them:
        # without this, a pretrained model would train with its dropout off and its gradient checkpointing (train
        # mode only in transformers) unused. A new module is in train mode (the nn.Module convention); Lightning
        # switches it for validation and restores it after.
        hf.train()
        if lora:
            from peft import LoraConfig, get_peft_model

            lora = dict(plain_container(lora))
            if "token_init" in lora:
                raise ValueError("model.lora.token_init is the compact transformer's (compact_lora.py); for an HF "
                                 "model use peft's own keys (trainable_token_indices starts from the base rows)")
            hf = get_peft_model(hf, LoraConfig(**lora))
        self.model = hf

    # --- module lookup (works with and without a peft wrapper) --------------------------------------------
    def _base(self) -> nn.Module:
        """The transformers model, even when wrapped by peft (LoRA layers are injected into it in place)."""
        get_base = getattr(self.model, "get_base_model", None)
        return get_base() if get_base is not None else self.model

    @property
    def decoder(self) -> nn.Module:
        return self._base().get_decoder()

    @property
    def config(self) -> Any:
        return self._base().config

    # --- Backbone contract ---------------------------------------------------------------------------------
    @property
    def output_weight(self) -> Tensor:  # [V, d]; the tied embedding when the model ties them
        return self._base().get_output_embeddings().weight

    @property
    def output_bias(self) -> Tensor | None:  # [V] or None
        return getattr(self._base().get_output_embeddings(), "bias", None)

    @property
    def causal(self) -> bool:
        return self._causal

    @property
    def vocab_size(self) -> int:
        return self.output_weight.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def forward(
        self,
        input_ids: Tensor,  # [B, T]
        attention_mask: Tensor | None = None,  # [B, T] 1 = real, 0 = pad
        position_ids: Tensor | None = None,  # [B, T]
        segment_ids: Tensor | None = None,  # [B, T] packed documents, 0 = pad
    ) -> Tensor:  # [B, T, d] after the final norm
        mask: Tensor | None = attention_mask
        if segment_ids is not None or not self._causal:
            mask = self._segment_mask(attention_mask, segment_ids, input_ids)
        try:
            out = self.decoder(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False)
        except Exception as err:  # surface *why* a packed batch failed instead of a deep HF stack trace
            if segment_ids is not None:
                raise RuntimeError(
                    f"{type(self._base()).__name__} rejected the 4D block-diagonal mask built from segment_ids; "
                    "this model cannot train on packed rows. Disable packing in the data config."
                ) from err
            raise
        return out.last_hidden_state

    def _segment_mask(self, attention_mask: Tensor | None, segment_ids: Tensor | None, input_ids: Tensor) -> Tensor:
        """The 4D mask (block-diagonal for packed rows; causal unless the backbone is bidirectional) in the format
        the configured attention implementation reads as-is: transformers skips its own causal mask for a 4D one,
        which is what makes `causal=False` bidirectional."""
        impl = self.config._attn_implementation
        b, t = input_ids.shape
        allowed, _ = sdpa_mask(
            attention_mask, segment_ids, causal=self._causal, q_len=t, kv_len=t, device=input_ids.device
        )  # [B|1, 1, T, T] bool, True = attend
        if allowed is None:  # sdpa_mask's fast path: nothing to mask (no padding, bidirectional)
            allowed = torch.ones(1, 1, t, t, dtype=torch.bool, device=input_ids.device)
        if impl == "sdpa":
            return allowed
        if impl == "eager":  # eager adds the mask to the scores
            dtype = self.output_weight.dtype
            zero = torch.zeros((), dtype=dtype, device=allowed.device)
            return torch.where(allowed, zero, torch.finfo(dtype).min)
        raise ValueError(
            f"segment_ids (packed rows) need attn_implementation 'sdpa' or 'eager' (a 4D mask); this model uses "
            f"'{impl}'. Set model.attn_implementation=sdpa or disable packing."
        )

    @torch.no_grad()
    def forward_cached(
        self,
        input_ids: Tensor,  # [B, T_new]
        attention_mask: Tensor,  # [B, S_past + T_new]
        position_ids: Tensor,  # [B, T_new]
        cache: Any | None,  # transformers Cache (DynamicCache) or None to start
    ) -> tuple[Tensor, Any]:
        if not self._causal:
            raise ValueError("forward_cached needs a causal model; bidirectional models are sampled by diffusion")
        out = self.decoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
        )
        return out.last_hidden_state, out.past_key_values
