"""`python -m src.export <run dir | checkpoint> <out dir>` (also installed as `tokensmith-export`).

User errors (no checkpoint, unknown architecture, occupied output, missing shards, ...) print one line naming the
path and the fix and exit with status 2, without a traceback (TOKENSMITH_DEBUG=1 shows it).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from src.export.errors import ExportError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m src.export",
        description="Export a trained tokensmith model to a Hugging Face directory (config.json, "
        "model.safetensors, generation_config.json, tokenizer files) that transformers loads without tokensmith.",
    )
    p.add_argument("source", help="a run directory (uses checkpoints/last.ckpt), a .ckpt file, or a sharded "
                   "(DeepSpeed / FSDP2) checkpoint directory")
    p.add_argument("out", help="output directory (must not exist or be empty, unless --overwrite)")
    p.add_argument("--merge", action="store_true", help="LoRA runs: merge the adapter into the base and write "
                   "full weights (default: the adapter, plus its base in <out>/base/ when needed)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    p.add_argument("--config", help="the run's config_resolved.yaml, when the checkpoint is not inside its run dir")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full unpickling of a checkpoint that a safe (weights-only) load refuses")
    p.add_argument("--wandb-artifact", action="store_true",
                   help="log the exported directory as a W&B model artifact (WANDB_MODE=offline works)")
    p.add_argument("--wandb-project", default=None, help="W&B project (default: the run's logger.wandb.project, "
                   "else 'tokensmith')")
    p.add_argument("--artifact-name", default=None, help="artifact name (default: model-<run dir name>)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        from src.export.export import export_model

        manifest = export_model(args.source, args.out, merge=args.merge, overwrite=args.overwrite,
                                config=args.config, trust_checkpoint=args.trust_checkpoint)
        if args.wandb_artifact:
            from src.export.wandb_artifact import log_model_artifact

            manifest["wandb_artifact"] = log_model_artifact(args.out, manifest, project=args.wandb_project,
                                                            name=args.artifact_name)
    except ExportError as err:
        if os.environ.get("TOKENSMITH_DEBUG") == "1":
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({manifest['kind']})")
    return 0
