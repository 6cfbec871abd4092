"""Layer 2: every experiment composes and instantiates with debug=smoke; config errors are clear."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from src.runtime.build import build_components
from tests.helpers import EXPERIMENTS, compose_cfg


def test_every_experiment_is_collected_and_listed_in_the_readme() -> None:
    assert "quickstart" in EXPERIMENTS
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert [e for e in EXPERIMENTS if f"`{e}`" not in readme] == []  # the README's `experiment` row names them all


# the SmolLM2 experiment loads the 135M model (~30 s): CI runs it with the heavy tests
@pytest.mark.parametrize("experiment", [pytest.param(e, marks=pytest.mark.heavy) if "smollm2" in e else e
                                        for e in EXPERIMENTS])
def test_experiment_instantiates(experiment: str, run_dir: Path) -> None:
    cfg = compose_cfg([f"experiment={experiment}", "debug=smoke"], run_dir)
    source = cfg.data.get("source")
    if OmegaConf.is_config(source) and OmegaConf.is_missing(source, "path"):  # your-own-data (cdpo/prompts)
        own = run_dir.parent / "own.jsonl"
        own.write_text("".join(f'{{"prompt": "{i}+{i}=", "response": "{2 * i}"}}\n' for i in range(40)))
        cfg = compose_cfg([f"experiment={experiment}", "debug=smoke", f"data.source.path={own}"], run_dir)
    OmegaConf.resolve(cfg)  # every interpolation resolves
    datamodule, module, trainer = build_components(cfg)
    assert trainer.max_steps == cfg.trainer.max_steps
    assert module.backbone.vocab_size >= datamodule.tokenizer.vocab_size
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape


def test_optimizer_and_scheduler_are_partials(run_dir: Path) -> None:
    cfg = compose_cfg([], run_dir)
    assert cfg.method.optimizer._partial_ and cfg.method.scheduler._partial_
    assert cfg.method.scheduler.total_steps == cfg.trainer.max_steps


def test_unknown_loss_impl_is_rejected(run_dir: Path) -> None:
    cfg = compose_cfg(["debug=smoke", "method.loss_impl=naive"], run_dir)
    with pytest.raises(Exception, match="loss_impl"):
        build_components(cfg)


def test_unknown_loss_normalization_is_rejected(run_dir: Path) -> None:
    cfg = compose_cfg(["debug=smoke", "method.loss_normalization=global"], run_dir)
    with pytest.raises(Exception, match=r"loss_normalization='global' is not one of \('step', 'micro_batch'\)"):
        build_components(cfg)


@pytest.mark.parametrize("override", ["trainer.enable_progress_bar=false", "callbacks.progress_bar=null"])
def test_one_override_silences_the_progress_bar(override: str, run_dir: Path) -> None:
    """Either switch alone gives no bar: Lightning would refuse the first (our bar callback is configured) and
    answer the second with its own default bar."""
    _, _, trainer = build_components(compose_cfg(["debug=smoke", override], run_dir))
    assert trainer.progress_bar_callback is None
    _, _, default = build_components(compose_cfg(["debug=smoke"], run_dir))
    assert type(default.progress_bar_callback).__name__ == "StepProgressBar"
