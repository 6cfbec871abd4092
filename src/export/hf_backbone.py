"""Hugging Face backbones (src/models/components/hf_adapter.py `HFBackbone`): the inner model saves itself.

The backbone is rebuilt from the run's `model` config *without* fetching pretrained weights (`pretrained=False`:
the same architecture, LoRA wrapping, vocabulary resize and layer truncation as in training), then the
checkpoint's weights are loaded into it strictly: every weight, frozen base weights included, comes from the
checkpoint. Three outputs:

- a full model (no LoRA): `save_pretrained` of the transformers model;
- a LoRA run, default: the peft adapter (`adapter_config.json`, `adapter_model.safetensors`) and, unless the
  base is a Hub model or local directory used unchanged, the base model in `<out>/base/` (a from-config base
  exists nowhere else; a GGUF base is dequantised; a resized or truncated base differs from its origin);
- a LoRA run with `merge=True`: `merge_and_unload()`, then `save_pretrained` of the merged model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from src.export.errors import ExportError

TARGET = "src.models.components.hf_adapter.HFBackbone"
BASE_DIR = "base"
REGISTERED_NAMES = ("smollm2-135m",)  # short names resolved to GGUF files by tokensmith (not Hub names)


def build_backbone(model_cfg: Any, state: Mapping[str, Any], vocab_size: int | None) -> Any:
    """The HFBackbone of `model_cfg`, random init, then the checkpoint's weights (strict)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    extra: dict[str, Any] = {"pretrained": False, "gradient_checkpointing": False}
    if OmegaConf.is_missing(model_cfg, "vocab_size"):
        extra["vocab_size"] = vocab_size
    try:
        backbone = instantiate(model_cfg, **extra)
    except Exception as err:
        raise ExportError(f"could not rebuild the run's HF model from its `model` config ({err})") from err
    result = backbone.load_state_dict(dict(state), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ExportError(
            f"the checkpoint's backbone weights do not fit the model of the run's config (missing "
            f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}): config and checkpoint are from "
            "different runs?"
        )
    backbone.eval()
    return backbone


def _set_special_ids(model: Any, special_ids: Mapping[str, int | None]) -> None:
    """The tokenizer's ids in config and generation config (a from-config Llama carries Llama's 1/2 defaults)."""
    for key, value in special_ids.items():
        setattr(model.config, key, value)
        if getattr(model, "generation_config", None) is not None:
            setattr(model.generation_config, key, value)
    model.config.use_cache = True  # training turned the cache off; generation wants it


def base_origin(model_cfg: Any) -> str | None:
    """The Hub name / local path that `from_pretrained` reproduces this run's base from, or None."""
    name = model_cfg.get("model")
    if not isinstance(name, str) or name in REGISTERED_NAMES or model_cfg.get("gguf_file"):
        return None
    if not model_cfg.get("pretrained", True) or model_cfg.get("keep_layers") is not None:
        return None
    return name


def save_full(backbone: Any, out: Path, special_ids: Mapping[str, int | None]) -> None:
    model = backbone.model
    _set_special_ids(model, special_ids)
    model.save_pretrained(str(out))


def save_lora(backbone: Any, model_cfg: Any, out: Path, special_ids: Mapping[str, int | None], merge: bool,
              final_out: Path) -> dict[str, Any]:
    """Adapter (+ base) or merged weights of a peft-wrapped backbone; returns what was written, for the manifest."""
    peft_model = backbone.model
    base_model = peft_model.get_base_model()
    _set_special_ids(base_model, special_ids)
    if merge:
        merged = peft_model.merge_and_unload()
        merged.save_pretrained(str(out))
        return {"kind": "merged_lora"}
    peft_model.save_pretrained(str(out))
    origin = base_origin(model_cfg)
    vocab_changed = origin is not None and _vocab_changed(model_cfg, base_model)
    if origin is not None and not vocab_changed:
        base_ref = origin
        written_base = False
    else:
        base = peft_model.unload()  # LoRA layers removed, base weights untouched
        base.save_pretrained(str(out / BASE_DIR))
        base_ref = str((final_out / BASE_DIR).resolve())
        written_base = True
    _patch_adapter_config(out, base_ref)
    return {"kind": "lora_adapter", "base_model": base_ref, "base_written": written_base,
            "base_origin": model_cfg.get("model") if isinstance(model_cfg.get("model"), str) else "config"}


def _vocab_changed(model_cfg: Any, base_model: Any) -> bool:
    from transformers import AutoConfig

    try:
        original = AutoConfig.from_pretrained(model_cfg["model"]).vocab_size
    except Exception:  # cannot tell offline: write the base to be safe
        return True
    return original != base_model.config.vocab_size


def _patch_adapter_config(out: Path, base_ref: str) -> None:
    path = out / "adapter_config.json"
    cfg = json.loads(path.read_text())
    cfg["base_model_name_or_path"] = base_ref
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def is_lora(backbone: Any) -> bool:
    return hasattr(backbone.model, "peft_config")
