"""Bad input to `python -m src.export`: one clear line naming the path and the fix, exit status 2, no traceback,
and nothing written (no output directory, no staging leftovers). None of these needs a trained model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.export.roundtrip import export_cli

COMPACT = {"_target_": "src.models.components.transformer.CompactTransformer", "vocab_size": "???", "d_model": 8,
           "n_layers": 1, "n_heads": 2, "causal": True}


def _run_dir(root: Path, model: dict | None = None, checkpoint: bool = True) -> Path:
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"model": model or COMPACT, "data": {"_target_": "nowhere.DataModule"}}),
                   run / "config_resolved.yaml")
    if checkpoint:
        torch.save({"state_dict": {"backbone.embed.weight": torch.zeros(4, 8)}}, run / "checkpoints" / "last.ckpt")
    return run


def _fails(proc, *needles: str) -> str:  # noqa: ANN001
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("error: ")
    for needle in needles:
        assert needle in err, err
    return err


def _nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_run_dir_without_checkpoint(tmp_path: Path) -> None:
    run, out = _run_dir(tmp_path, checkpoint=False), tmp_path / "out"
    _fails(export_cli(run, out), str(run / "checkpoints" / "last.ckpt"), ".ckpt")
    _nothing_written(out)


def test_missing_source(tmp_path: Path) -> None:
    _fails(export_cli(tmp_path / "nope", tmp_path / "out"), str(tmp_path / "nope"), "run directory")
    _nothing_written(tmp_path / "out")


def test_unknown_architecture(tmp_path: Path) -> None:
    run, out = _run_dir(tmp_path, model={"_target_": "my_lab.models.Mamba", "d_model": 8}), tmp_path / "out"
    _fails(export_cli(run, out), "my_lab.models.Mamba", "src/export/")
    _nothing_written(out)


def test_non_empty_output_is_refused_without_overwrite(tmp_path: Path) -> None:
    run, out = _run_dir(tmp_path), tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _fails(export_cli(run, out), str(out), "--overwrite")
    assert (out / "keep.txt").read_text() == "mine" and len(list(out.iterdir())) == 1


@pytest.mark.parametrize("kind", ["zero", "fsdp"])
def test_sharded_checkpoint_with_missing_shards(tmp_path: Path, kind: str) -> None:
    run, out = _run_dir(tmp_path, checkpoint=False), tmp_path / "out"
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.mkdir()
    if kind == "zero":
        (ckpt / "latest").write_text("checkpoint")
        (ckpt / "checkpoint").mkdir()
        torch.save({}, ckpt / "checkpoint" / "mp_rank_00_model_states.pt")  # the optimizer shards are gone
    else:
        (ckpt / ".metadata").write_bytes(b"")
    _fails(export_cli(run, out), str(ckpt), "missing shards", "Copy the whole checkpoint directory")
    _nothing_written(out)
