"""`export_model`: a tokensmith run (or one of its checkpoints) -> a Hugging Face model directory.

Order matters for failing early and cheaply: the output path is checked first, then the run's config (the model's
architecture must be one we can map) and only then is the checkpoint read and the model rebuilt.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from src.export import hf_backbone, llama_mapping
from src.export.errors import ExportError
from src.export.source import consolidated, load_backbone_state, load_config, locate
from src.export.writer import check_target, staged, write_manifest
from src.models.components.compact_lora import merge_lora_state

log = logging.getLogger(__name__)

ARCHITECTURES = {llama_mapping.TARGET: "compact", hf_backbone.TARGET: "hf"}


def architecture(target: str) -> str:
    """'compact' or 'hf' for a `model._target_`; matched by class name too, so a moved module still maps."""
    if target in ARCHITECTURES:
        return ARCHITECTURES[target]
    by_class = {t.rsplit(".", 1)[-1]: kind for t, kind in ARCHITECTURES.items()}
    kind = by_class.get(str(target).rsplit(".", 1)[-1])
    if kind is None:
        raise ExportError(
            f"model._target_={target} has no export mapping; exportable backbones are "
            f"{sorted(ARCHITECTURES)} (add a mapping to src/export/ for a new architecture, docs/export.md)"
        )
    return kind


def export_model(
    source: str | Path,
    out: str | Path,
    *,
    merge: bool = False,
    overwrite: bool = False,
    config: str | Path | None = None,
    trust_checkpoint: bool = False,
) -> dict[str, Any]:
    """Write the Hugging Face directory `out`; returns the manifest (also saved as `tokensmith_export.json`)."""
    out = Path(out).absolute()
    check_target(out, overwrite)
    src = locate(source, config)
    cfg = load_config(src.config_path)
    kind = architecture(str(cfg.model._target_))
    if not cfg.model.get("causal", True):  # compact or HF (model.causal=false): no HF class runs it
        llama_mapping.llama_config_kwargs(cfg.model, {})  # raises the bidirectional message
    if merge and not cfg.model.get("lora"):
        raise ExportError("--merge applies to LoRA runs (model.lora set); this run trained all weights, so its "
                          "export is already the full model: drop --merge")

    with consolidated(src, out.parent) as ckpt_file:
        state, meta = load_backbone_state(ckpt_file, trusted=trust_checkpoint or src.sharded is not None)
    tokenizer = _tokenizer(cfg)
    from src.export.tokenizer_files import save_tokenizer, special_token_ids

    ids = special_token_ids(tokenizer)
    manifest: dict[str, Any] = {
        "run_dir": str(src.run_dir.absolute()), "checkpoint": str(src.checkpoint.absolute()),
        "sharded": src.sharded, "model_target": str(cfg.model._target_), **meta,
    }
    with staged(out, overwrite) as stage:
        if kind == "compact":
            lora = cfg.model.get("lora")
            if lora:  # always merged: a Llama adapter cannot reproduce the compact model's token-row swap
                state = merge_lora_state(state, lora)
            model = llama_mapping.build_llama(cfg.model, state, ids)
            _check_vocab(tokenizer, model.config.vocab_size)
            model.save_pretrained(str(stage))
            manifest["kind"] = "merged_lora" if lora else "full"
        else:
            backbone = hf_backbone.build_backbone(cfg.model, state, tokenizer.vocab_size)
            _check_vocab(tokenizer, backbone.vocab_size)
            if hf_backbone.is_lora(backbone):
                manifest.update(hf_backbone.save_lora(backbone, cfg.model, stage, ids, merge, final_out=out))
            else:
                hf_backbone.save_full(backbone, stage, ids)
                manifest["kind"] = "full"
        save_tokenizer(tokenizer, stage)
        write_manifest(stage, manifest)
    log.info("exported %s (%s) to %s", src.checkpoint, manifest["kind"], out)
    return manifest


def _tokenizer(cfg: Any) -> Any:
    from src.export.tokenizer_files import rebuild_tokenizer

    return rebuild_tokenizer(cfg)


def _check_vocab(tokenizer: Any, model_vocab: int) -> None:
    try:
        tokenizer.check_vocab(model_vocab)
    except Exception as err:
        raise ExportError(f"the rebuilt tokenizer does not fit the checkpoint's model: {err}") from err
