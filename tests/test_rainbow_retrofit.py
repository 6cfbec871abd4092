"""experiment=rainbow/retrofit end to end (docs/mdlm.md, "LoRA retrofit"): stage 1 trains the <eos>-padded model,
stage 2 switches to Rainbow padding and trains only LoRA adapters and the pad tokens' rows: every base weight of
the stage-2 checkpoint is stage 1's final weight, bit for bit. A LoRA compact run resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.runtime.build import build_components, lora_token_ids
from src.runtime.checkpoints import resolve_ckpt_path
from src.runtime.errors import ConfigError
from src.runtime.run import run_training
from tests.helpers import compose_cfg
from tests.test_rainbow_experiment import _fit, _StopAt

SMALL = ["model.d_model=32", "model.n_layers=1", "data.task.n_train=2000", "trainer.accelerator=cpu",
         "callbacks.progress_bar=null"]
RETROFIT = ["experiment=rainbow/retrofit", "debug=smoke", *SMALL, "callbacks.length_eval.multipliers=[1,2]"]


def _backbone_state(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}


def test_retrofit_trains_only_adapters_and_pad_rows_on_the_eos_model(run_dir: Path) -> None:
    cfg = compose_cfg(RETROFIT, run_dir)
    metrics = run_training(cfg)
    saved = json.loads((run_dir / "metrics.json").read_text())
    for m in (1, 2):  # stage 1 = the EOS row, stage 2 = the retrofit row, one metrics.json
        assert f"eval/len@{m}x" in saved and 0.0 <= saved[f"finetune/eval/exact@{m}x"] <= 1.0
    assert metrics["finetune/steps"] == 4
    ft = OmegaConf.load(run_dir / "finetune" / "config_resolved.yaml")
    assert ft.data.padding == "rainbow" and ft.model.lora.r == 8 and ft.trainer.max_steps == 4

    eos = _backbone_state(run_dir / "checkpoints" / "last.ckpt")
    lora = _backbone_state(run_dir / "finetune" / "checkpoints" / "last.ckpt")
    pads = lora["token_rows.ids"]
    assert len(pads) == 7
    for key, value in lora.items():
        if ".lora_" in key or "delta" in key or key.startswith("token_rows."):
            continue
        assert torch.equal(value, eos[key.replace(".base_layer", "").replace(".token_adapter", "")]), key
    # the pad rows started at their own base rows + the end token's (token_init: eos) and then trained; so did the
    # adapters (lora_B starts at 0)
    eos_id = instantiate(cfg.data, _convert_="all").tokenizer.eos_id
    start_head = eos["lm_head"][pads] + eos["lm_head"][eos_id]  # [K, d]
    start_embed = eos["embed.weight"][pads] + eos["embed.weight"][eos_id]  # [K, d]
    assert (lora["token_rows.head_delta"] - start_head).abs().amax(dim=1).min() > 0  # every pad's head row moved
    assert (lora["embed.token_adapter.trainable_tokens_delta.default"] - start_embed).abs().max() > 0
    assert any(v.abs().max() > 0 for k, v in lora.items() if "lora_B" in k)


def test_lora_compact_mdlm_resumes_exactly(tmp_path: Path) -> None:
    """2N steps straight == N, stop, resume from the LoRA checkpoint, N more: the same loss at every step."""
    torch.set_num_threads(1)
    n = 2
    common = ["experiment=rainbow/copy", "debug=smoke", *SMALL, f"trainer.max_steps={2 * n}",
              f"trainer.val_check_interval={n}", "callbacks.length_eval=null",
              "callbacks.run_artifacts.sample_max_new_tokens=0",
              "+model.lora={r:4,lora_alpha:8,trainable_token_indices:pads}"]
    straight = _fit(compose_cfg(common, tmp_path / "a"))
    _fit(compose_cfg(common, tmp_path / "b"), extra=[_StopAt(n)])
    resumed = _fit(compose_cfg(common, tmp_path / "b"),
                   ckpt_path=resolve_ckpt_path("last", tmp_path / "b", tmp_path / "logs"))
    assert [s for s, _ in straight] == [s for s, _ in resumed] and len(straight) == 2 * n
    torch.testing.assert_close(torch.tensor([x for _, x in resumed]), torch.tensor([x for _, x in straight]),
                               rtol=0, atol=1e-5)


def test_an_unknown_token_name_is_one_config_error(run_dir: Path) -> None:
    cfg = compose_cfg(["experiment=rainbow/copy", "debug=smoke", *SMALL,
                       "+model.lora={r:4,trainable_token_indices:sep}"], run_dir)
    with pytest.raises(ConfigError, match=r"model.lora.trainable_token_indices='sep'.*\['eos', 'mask', 'pads'\]"):
        build_components(cfg)



def test_pads_names_only_the_pads_the_data_lays_out() -> None:
    """A reserve larger than data.n_pads (one tokenizer for several K): `pads` is the K rows the canvas format
    uses (the reserve's first K), not rows that no batch ever holds; build_components passes the data's n_pads."""
    tok = SimpleNamespace(reserved_pad_ids=[10, 11, 12, 13], eos_id=2, mask_id=3)
    model = OmegaConf.create({"lora": {"r": 4, "trainable_token_indices": "pads", "token_init": "eos"}})
    assert lora_token_ids(model, tok, n_pads=2)["lora"]["trainable_token_indices"] == [10, 11]
    assert lora_token_ids(model, tok)["lora"] == {"r": 4, "trainable_token_indices": [10, 11, 12, 13], "token_init": 2}
