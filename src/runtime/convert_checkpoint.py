"""Turn a DeepSpeed ZeRO checkpoint (a directory of per-rank shards) into one plain checkpoint file.

    python -m src.runtime.convert_checkpoint <run dir | checkpoints/<name>.ckpt dir> [output file]

ZeRO-1/2/3 runs save `last.ckpt` as a *directory* (one shard of parameters/optimizer state per rank); nothing but
DeepSpeed with the same world size can read it. The output is a single file, like a DDP checkpoint:
`torch.load(out)["state_dict"]` is the full fp32 state dict of the LightningModule (keys `backbone.…`), and the
Lightning metadata (step, callbacks' state, hyper-parameters) rides along, so `LightningModule.load_from_checkpoint`
reads it too. It holds no optimizer state: to *resume* training, resume the ZeRO directory itself with the same
strategy (`ckpt_path=<run dir>`); the converted file is for evaluation, export and fine-tuning from the weights.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch


class NotAZeroCheckpointError(ValueError):
    pass


def find_zero_checkpoint(path: str | Path) -> Path:
    """A run dir, a `checkpoints/` dir or a `<name>.ckpt/` dir -> the ZeRO checkpoint directory (holds `latest`)."""
    p = Path(path)
    for candidate in (p, p / "last.ckpt", p / "checkpoints" / "last.ckpt"):
        if candidate.is_dir() and (candidate / "latest").is_file():
            return candidate
    if p.is_file():
        raise NotAZeroCheckpointError(
            f"{p} is already a single-file checkpoint (DDP / single device / FSDP full state): "
            "torch.load(path)['state_dict'] gives the weights; there is nothing to convert."
        )
    raise NotAZeroCheckpointError(
        f"{p}: no DeepSpeed ZeRO checkpoint here (expected a directory holding a 'latest' file, such as "
        "<run dir>/checkpoints/last.ckpt/ written by strategy=deepspeed_zero*). Pass that directory or its run dir."
    )


def convert(checkpoint: str | Path, output: str | Path | None = None) -> Path:
    """Consolidate the ZeRO checkpoint at `checkpoint` into `output` (default: `<ckpt dir>.consolidated.ckpt`)."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu" if not torch.cuda.is_available() else "cuda")
    from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

    ckpt_dir = find_zero_checkpoint(checkpoint)
    out = Path(output) if output else ckpt_dir.with_name(ckpt_dir.name.removesuffix(".ckpt") + ".consolidated.ckpt")
    out.parent.mkdir(parents=True, exist_ok=True)
    convert_zero_checkpoint_to_fp32_state_dict(str(ckpt_dir), str(out))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.runtime.convert_checkpoint",
        description="Consolidate a DeepSpeed ZeRO checkpoint directory into one plain checkpoint file.",
    )
    parser.add_argument("checkpoint", help="run dir, or the <name>.ckpt/ directory DeepSpeed wrote")
    parser.add_argument("output", nargs="?", help="output file (default: <name>.consolidated.ckpt next to it)")
    args = parser.parse_args(argv)
    try:
        out = convert(args.checkpoint, args.output)
    except NotAZeroCheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
