"""Export a trained tokensmith model to a Hugging Face model directory (docs/export.md).

    python -m src.export <run dir | checkpoint> <out dir> [--merge] [--overwrite] [--wandb-artifact]

The output loads with plain `transformers` (`AutoModelForCausalLM` / `AutoTokenizer.from_pretrained(out)`), or
with `peft` for a LoRA adapter, without importing tokensmith. Modules:

- `source.py`: run dir / checkpoint / config lookup, sharded-checkpoint consolidation, backbone weights.
- `llama_mapping.py`: the compact transformer's config and weight names as a `LlamaForCausalLM`.
- `hf_backbone.py`: HF backbones (`save_pretrained`), LoRA adapters (plus their base) and merged LoRA weights.
- `tokenizer_files.py`: the run's tokenizer, rebuilt from the saved data config, with its special tokens.
- `writer.py`: a staging directory next to the target, renamed into place only when complete.
- `wandb_artifact.py`: log the exported directory as a W&B model artifact.
- `export.py`: `export_model`, which ties them together; `cli.py`: the command line.
"""

from typing import Any

from src.export.errors import ExportError

__all__ = ["ExportError", "export_model"]


def export_model(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """`src.export.export.export_model`, imported on first use (the CLI's error paths stay light)."""
    from src.export.export import export_model as _export_model

    return _export_model(*args, **kwargs)
