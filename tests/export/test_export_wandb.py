"""`--wandb-artifact`: the exported directory is logged as a W&B model artifact (offline: inside the run dir)."""

from __future__ import annotations

from pathlib import Path

from src.export.wandb_artifact import log_model_artifact


def test_offline_run_holds_the_model_artifact(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.delenv("WANDB_SERVICE", raising=False)  # W&B sets it in-process; restored (unset) after the test
    run_dir, out = tmp_path / "runs" / "2026-01-01_00-00-00-abc", tmp_path / "hf"
    run_dir.mkdir(parents=True)
    out.mkdir()
    (out / "config.json").write_text('{"model_type": "llama"}')
    (out / "model.safetensors").write_bytes(b"\0" * 64)
    name = log_model_artifact(out, {"run_dir": str(run_dir), "kind": "full"})
    assert name == "model-2026-01-01_00-00-00-abc"
    (records,) = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    blob = records.read_bytes()
    assert name.encode() in blob and b"model.safetensors" in blob
