"""An objective on a data format it cannot train is one ConfigError before any data is built, and every shipped
experiment (both stages of a two-stage one) passes the check."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.recipes.finetune import finetune_config
from src.runtime.build import check_data_format
from src.runtime.errors import ConfigError
from tests.helpers import ROOT, compose_cfg

EXPERIMENTS = sorted(str(p.relative_to(ROOT / "conf" / "experiment").with_suffix(""))
                     for p in (ROOT / "conf" / "experiment").rglob("*.yaml"))


@pytest.mark.parametrize(("overrides", "message"), [
    (["method=dpo"], "DPOModule (method._target_=src.models.dpo.DPOModule) trains on preference pairs"),
    (["method=grpo", "reward=arith"], "data.format=prompt, e.g. data=prompts_jsonl"),
    (["data=preference_jsonl", "data.source.path=x.jsonl", "method=grpo", "reward=arith"],
     "gives data.format=preference"),
])
def test_a_wrong_format_is_one_error(overrides: list[str], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        check_data_format(compose_cfg(overrides, tmp_path))


@pytest.mark.parametrize("overrides", [["method=dpo", "data=preference_jsonl", "data.source.path=x.jsonl"],
                                       ["method=grpo", "reward=arith", "data=prompts_jsonl", "data.source.path=x"],
                                       ["method=lm"]])
def test_accepted_formats_and_objectives_without_a_declaration_pass(overrides: list[str], tmp_path: Path) -> None:
    check_data_format(compose_cfg(overrides, tmp_path))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_trains_on_a_format_it_accepts(experiment: str, tmp_path: Path) -> None:
    cfg = compose_cfg([f"experiment={experiment}", "debug=smoke"], tmp_path)
    check_data_format(cfg)
    if cfg.get("finetune"):
        check_data_format(finetune_config(cfg, tmp_path))
