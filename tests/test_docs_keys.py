"""Every key a docs configuration table names is settable without `+`: it exists in the config it documents.

A key the docs name but the config lacks fails for the user with Hydra's "not in struct" (`data.shuffle=false` on
`data=preference_jsonl` did). The tables are read from the docs themselves, so a new row is checked the day it is
written.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers import ROOT, compose_cfg

KEY_TABLE = re.compile(r"^\| key \| default \| (meaning|what) \|$")


def table_keys(doc: str) -> list[str]:
    """The backticked names of the first column of the doc's `| key | default | ... |` tables; `a` / `b` and
    `method.x`, `y` (a shorthand for `method.y`) give one name each; `group=option` rows are skipped."""
    keys: list[str] = []
    rows = iter((ROOT / "docs" / doc).read_text().splitlines())
    for line in rows:
        if not KEY_TABLE.match(line):
            continue
        next(rows)  # |---|
        for row in rows:
            if not row.startswith("|"):
                break
            prefix = ""
            for name in re.findall(r"`([^`]+)`", row.split("|")[1]):
                if "=" in name:
                    continue
                if "." in name:
                    prefix = name.rsplit(".", 1)[0] + "."
                elif prefix:
                    name = prefix + name
                keys.append(name)
    return keys


def _lm_data_configs() -> list[str]:
    """The data configs built by LMDataModule: the ones docs/data.md's table documents."""
    return sorted(p.stem for p in (ROOT / "conf" / "data").glob("*.yaml")
                  if "_target_: src.data.lm_datamodule.LMDataModule" in p.read_text())


@pytest.mark.parametrize("data", _lm_data_configs())
def test_every_data_key_of_docs_data_md_is_in_each_lm_data_config(data: str, tmp_path: Path) -> None:
    cfg = compose_cfg([f"data={data}"], tmp_path)
    missing = [k for k in table_keys("data.md") if k not in cfg.data]
    assert not missing, f"data={data} lacks {missing}: `data.<key>=...` would fail with 'not in struct'"


@pytest.mark.parametrize(("doc", "overrides"), [
    ("grpo.md", ["data=prompts_jsonl", "method=grpo", "reward=arith", "downsample=d3s"]),
    ("mdlm.md", ["experiment=rainbow/copy"]),
])
def test_every_key_of_a_method_table_composes(doc: str, overrides: list[str], tmp_path: Path) -> None:
    cfg = compose_cfg(overrides, tmp_path)
    keys = table_keys(doc)
    assert len(keys) >= 8, keys  # the table was found and read
    missing = [k for k in keys if OmegaConf.select(cfg, k, default="<missing>") == "<missing>"]
    assert not missing, f"{doc} names {missing}, which `{' '.join(overrides)}` does not have"


def test_the_table_reader_expands_shorthands() -> None:
    keys = table_keys("grpo.md")
    assert {"method.temperature", "method.top_p", "method.top_k", "data.batch_size"} <= set(keys)


@pytest.mark.parametrize("method", ["lm", "dpo", "simpo", "grpo", "rloo", "mdlm"])
def test_the_optimizer_keys_users_reach_for_are_there(method: str, tmp_path: Path) -> None:
    pairs = ["data=preference_jsonl"] if method in ("dpo", "simpo") else []
    cfg = compose_cfg([f"method={method}", *pairs], tmp_path)
    assert {"lr", "betas", "eps", "weight_decay"} <= set(cfg.method.optimizer)
