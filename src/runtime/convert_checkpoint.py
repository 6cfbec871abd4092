"""Turn a sharded checkpoint (a directory of per-rank shards) into one plain checkpoint file.

    python -m src.runtime.convert_checkpoint <run dir | checkpoints/<name>.ckpt dir> [output file]

DeepSpeed ZeRO-1/2/3 runs and FSDP2 runs (`strategy=fsdp`, `save_distributed_checkpoint: true`) save `last.ckpt`
as a *directory* (DeepSpeed: a `latest` file and per-rank shards that only DeepSpeed with the same world size reads;
FSDP2: a torch.distributed.checkpoint directory with a `.metadata` file, plus Lightning's `meta.pt`). The output
is a single file, like a DDP checkpoint: `torch.load(out)["state_dict"]` is the full state dict of the
LightningModule (keys `backbone.…`), and the Lightning metadata (step, callbacks' state, hyper-parameters) rides
along, so `LightningModule.load_from_checkpoint` reads it too. It holds no optimizer state: to *resume* training,
resume the directory itself with the same strategy (`ckpt_path=<run dir>`); the converted file is for evaluation,
export and fine-tuning from the weights.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch


class NotAShardedCheckpointError(ValueError):
    pass


NotAZeroCheckpointError = NotAShardedCheckpointError  # the name before FSDP2 checkpoints were accepted

DCP_METADATA = ".metadata"  # torch.distributed.checkpoint's index file
LIGHTNING_META = "meta.pt"  # Lightning's ModelParallelStrategy: everything but the model and optimizer states


def find_sharded_checkpoint(path: str | Path) -> tuple[Path, str]:
    """A run dir, a `checkpoints/` dir or a `<name>.ckpt/` dir -> (checkpoint directory, "zero" | "fsdp")."""
    p = Path(path)
    for candidate in (p, p / "last.ckpt", p / "checkpoints" / "last.ckpt"):
        if candidate.is_dir() and (candidate / "latest").is_file():
            return candidate, "zero"
        if candidate.is_dir() and (candidate / DCP_METADATA).is_file():
            return candidate, "fsdp"
    if p.is_file():
        raise NotAShardedCheckpointError(
            f"{p} is already a single-file checkpoint (DDP / single device / FSDP full state): "
            "torch.load(path)['state_dict'] gives the weights; there is nothing to convert."
        )
    raise NotAShardedCheckpointError(
        f"{p}: no DeepSpeed ZeRO checkpoint here and no FSDP2 one (expected a directory holding a 'latest' file or "
        "a '.metadata' file, such as <run dir>/checkpoints/last.ckpt/ written by strategy=deepspeed_zero* or "
        "strategy=fsdp). Pass that directory or its run dir."
    )


def find_zero_checkpoint(path: str | Path) -> Path:
    """`find_sharded_checkpoint` for callers that only handle DeepSpeed directories."""
    ckpt_dir, kind = find_sharded_checkpoint(path)
    if kind != "zero":
        raise NotAShardedCheckpointError(f"{ckpt_dir} is an FSDP2 checkpoint, not a DeepSpeed ZeRO one")
    return ckpt_dir


def _convert_fsdp(ckpt_dir: Path, out: Path) -> None:
    """DCP directory -> Lightning-style single file: meta.pt's content plus the full `state_dict`."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    tmp = out.with_name(f".{out.name}.dcp.tmp")
    dcp_to_torch_save(ckpt_dir, tmp)  # every tensor whole, on CPU, in one process
    try:
        full = torch.load(tmp, map_location="cpu", weights_only=False)
    finally:
        tmp.unlink(missing_ok=True)
    meta = ckpt_dir / LIGHTNING_META
    ckpt = torch.load(meta, map_location="cpu", weights_only=False) if meta.is_file() else {}
    ckpt["state_dict"] = full["state_dict"]
    torch.save(ckpt, out)


def convert(checkpoint: str | Path, output: str | Path | None = None) -> Path:
    """Consolidate the sharded checkpoint at `checkpoint` into `output` (default: `<ckpt dir>.consolidated.ckpt`)."""
    ckpt_dir, kind = find_sharded_checkpoint(checkpoint)
    out = Path(output) if output else ckpt_dir.with_name(ckpt_dir.name.removesuffix(".ckpt") + ".consolidated.ckpt")
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fsdp":
        _convert_fsdp(ckpt_dir, out)
        return out
    os.environ.setdefault("DS_ACCELERATOR", "cpu" if not torch.cuda.is_available() else "cuda")
    from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

    convert_zero_checkpoint_to_fp32_state_dict(str(ckpt_dir), str(out))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.runtime.convert_checkpoint",
        description="Consolidate a sharded checkpoint directory (DeepSpeed ZeRO or FSDP2) into one plain file.",
    )
    parser.add_argument("checkpoint", help="run dir, or the <name>.ckpt/ directory DeepSpeed or FSDP2 wrote")
    parser.add_argument("output", nargs="?", help="output file (default: <name>.consolidated.ckpt next to it)")
    args = parser.parse_args(argv)
    try:
        out = convert(args.checkpoint, args.output)
    except NotAShardedCheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
