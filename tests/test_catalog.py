"""`python train.py --list`: every experiment and group option with its description, the defaults marked."""

from __future__ import annotations

import subprocess
import sys

from src.runtime.catalog import GROUPS, catalog
from tests.helpers import CONF_DIR, EXPERIMENTS, ROOT


def test_list_prints_every_option_with_a_description() -> None:
    proc = subprocess.run([sys.executable, "train.py", "--list"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for name in EXPERIMENTS:
        assert f" {name} " in out
    for group, options in catalog(CONF_DIR).items():
        assert f"\n{group}:\n" in f"\n{out}"
        for option, text in options:
            assert text != "(no description)", f"conf/{group}/{option}.yaml needs a first-line comment"
            assert f" {option} " in out
    assert "* stories" in out and "* tiny" in out and "* lm" in out  # train.yaml's defaults are marked
    assert set(catalog(CONF_DIR)) == {g for g in GROUPS if (CONF_DIR / g).is_dir()}


def test_an_unknown_group_option_names_every_valid_one() -> None:
    from src.runtime.catalog import unknown_choice

    message = unknown_choice(["experiment=skillit/legoo", "seed=1"], CONF_DIR)
    assert message is not None and "experiment=skillit/legoo" in message
    assert all(name in message for name in EXPERIMENTS)  # nested ones too (Hydra's own message omits them)
    assert "'model'" in unknown_choice(["model=tiny,gpt5"], CONF_DIR)  # a sweep's bad value
    assert unknown_choice(["experiment=skillit/lego", "model=tiny", "trainer.max_steps=3", "+x=1"], CONF_DIR) is None
