"""data.format=preference: pairs become two prompt-masked views; bad records get one error naming the line; and
method=dpo trains on them end to end (the loss starts at ln 2 and the preference is learned)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from src.data.errors import DataError
from src.runtime.build import build_components
from tests.helpers import compose_cfg


def write_pairs(path: Path, n: int = 240, seed: int = 0) -> Path:
    """Prompt "count from k:"; chosen counts on (k+1 ... k+4), rejected repeats k: a preference a tiny model learns."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            k = rng.randrange(0, 90)
            f.write(json.dumps({"prompt": f"count from {k}:", "chosen": " " + " ".join(str(k + i) for i in range(1, 5)),
                                "rejected": " " + " ".join([str(k)] * 4)}) + "\n")
    return path


def cfg_for(path: Path, run_dir: Path, *extra: str):  # noqa: ANN201
    return compose_cfg(["data=preference_jsonl", f"data.source.path={path}", "method=dpo", "debug=smoke",
                        "data.seq_len=32", "data.num_proc=null", "trainer.accelerator=cpu", *extra], run_dir)


def test_pairs_become_two_prompt_masked_views(tmp_path: Path, run_dir: Path) -> None:
    dm, _, _ = build_components(cfg_for(write_pairs(tmp_path / "pairs.jsonl"), run_dir))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    tok = dm.tokenizer
    assert set(batch) == {f"{v}_{k}" for v in ("chosen", "rejected")
                          for k in ("input_ids", "labels", "attention_mask", "position_ids")}
    for v in ("chosen", "rejected"):
        ids, labels = batch[f"{v}_input_ids"][0], batch[f"{v}_labels"][0]
        n = int(batch[f"{v}_attention_mask"][0].sum())
        target = labels[:n][labels[:n] != -100].tolist()
        assert target[-1] == tok.eos_id  # the response and its end token are the labels...
        text = tok.decode(target[:-1])
        assert text.strip() and "count from" not in text  # ...and nothing of the prompt
        full = tok.decode(ids[:n].tolist() + [int(labels[n - 1])])
        assert full.startswith("count from")



def test_chosen_and_rejected_fields_of_other_names(tmp_path: Path, run_dir: Path) -> None:
    """data.format_options.chosen_field / rejected_field read records that name the responses otherwise (e.g. an
    HF dataset's `better` / `worse`): the chosen view holds `better`'s text, the rejected `worse`'s."""
    path = tmp_path / "renamed.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}:", "better": " yes yes", "worse": " no"}) + "\n"
                            for i in range(40)))
    dm, _, _ = build_components(cfg_for(path, run_dir, "data.format_options.chosen_field=better",
                                        "data.format_options.rejected_field=worse", "data.shuffle=false"))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    for view, text in (("chosen", "yes yes"), ("rejected", "no")):
        labels = batch[f"{view}_labels"][0]
        assert dm.tokenizer.decode(labels[labels != -100].tolist()[:-1]).strip() == text

def test_bad_records_name_file_and_line(tmp_path: Path, run_dir: Path) -> None:
    good = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"})
    for bad, message in ((json.dumps({"prompt": "p", "chosen": "a"}), 'no "rejected"'),
                         (json.dumps({"prompt": "p", "chosen": "a", "rejected": "  "}), "response is empty"),
                         (json.dumps({"prompt": 3, "chosen": "a", "rejected": "b"}), "must be a string")):
        path = tmp_path / "bad.jsonl"
        path.write_text("\n".join([good] * 5 + [bad] + [good] * 5) + "\n")
        with pytest.raises(DataError, match=rf"bad.jsonl.*line 6.*{message}"):
            dm, _, _ = build_components(cfg_for(path, run_dir))
            dm.prepare_data()


def test_dpo_learns_the_preference_end_to_end(tmp_path: Path, run_dir: Path) -> None:
    cfg = cfg_for(write_pairs(tmp_path / "pairs.jsonl"), run_dir, "trainer.max_steps=40", "method.beta=0.5",
                  "method.optimizer.lr=3e-3", "callbacks.run_artifacts.sample_max_new_tokens=0",
                  "callbacks.progress_bar=null", "trainer.val_check_interval=40")
    pl.seed_everything(cfg.seed)  # as train.py does (measured over seeds 1, 2, 3, 1234: loss 0.04-0.08, acc >= 0.92)
    dm, module, trainer = build_components(cfg)
    trainer.fit(module, datamodule=dm)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train/loss_first"] == pytest.approx(math.log(2), abs=1e-4)  # policy == its reference
    assert metrics["train/loss_last10"] < 0.3 * math.log(2)  # the last 10 steps' pair loss
    assert float(trainer.callback_metrics["val/rewards/accuracy"]) > 0.8  # held-out pairs ranked right
    assert torch.isfinite(torch.tensor(metrics["val/loss"]))
    # metrics.json keeps the held-out pair metrics of the last validation, and no "perplexity" of a pair loss
    assert metrics["val/rewards/accuracy"] == pytest.approx(float(trainer.callback_metrics["val/rewards/accuracy"]))
    assert {"val/rewards/margin", "val/logps/chosen"} <= set(metrics) and metrics["val/ppl"] is None



def test_simpo_learns_the_preference_end_to_end_without_a_reference(tmp_path: Path, run_dir: Path) -> None:
    """`method=simpo` from the config group: no reference model is built, and held-out pairs are ranked right."""
    cfg = cfg_for(write_pairs(tmp_path / "pairs.jsonl"), run_dir, "method=simpo", "trainer.max_steps=40",
                  "method.optimizer.lr=3e-3", "callbacks.run_artifacts.sample_max_new_tokens=0",
                  "callbacks.progress_bar=null", "trainer.val_check_interval=40")
    pl.seed_everything(cfg.seed)
    dm, module, trainer = build_components(cfg)
    assert module.reference is None and module.reference_models() == []
    trainer.fit(module, datamodule=dm)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train/loss_last10"] < 0.5 * metrics["train/loss_first"]
    assert float(trainer.callback_metrics["val/rewards/accuracy"]) > 0.8

@pytest.mark.slow
def test_dpo_trains_smollm2_with_lora_against_its_adapter_free_self(tmp_path: Path, run_dir: Path) -> None:
    """The real pretrained model (first 2 of its 30 layers, to stay cheap) with LoRA: the reference is the same
    model with the adapter off, no second copy; ~40 s on 2 cores (the GGUF is dequantised once)."""
    cfg = cfg_for(write_pairs(tmp_path / "pairs.jsonl", n=40), run_dir, "model=smollm2_135m", "model.keep_layers=2",
                  "+model.lora={r: 8, lora_alpha: 16, target_modules: [q_proj, v_proj]}", "trainer.max_steps=3",
                  "data.batch_size=2", "callbacks.run_artifacts.sample_max_new_tokens=4", "callbacks.progress_bar=null")
    pl.seed_everything(cfg.seed)
    dm, module, trainer = build_components(cfg)
    assert module.reference.mode == "adapter" and sum(p.numel() for p in module.reference.parameters()) == 0
    trainer.fit(module, datamodule=dm)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["train/loss_first"] == pytest.approx(math.log(2), abs=1e-4)
    assert math.isfinite(metrics["train/loss_last"]) and math.isfinite(metrics["val/loss"])
    assert "###" in (run_dir / "samples.txt").read_text()  # the DPO policy samples like any causal LM


def test_token_weights_follow_the_response_tokens_and_mismatches_name_the_record(tmp_path: Path,
                                                                                  run_dir: Path) -> None:
    """Critical-token DPO data: one weight per response token and the end token, under this tokenizer. They land
    on exactly the label positions of their view; a count that disagrees names the record."""
    pairs = tmp_path / "pairs.jsonl"
    write_pairs(pairs, n=40)
    dm0, _, _ = build_components(cfg_for(pairs, run_dir))
    tok = dm0.tokenizer
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    for r in rows:  # weight i+1 on the i-th target token of the rejected response
        r["rejected_weights"] = [float(i + 1) for i in range(len(tok.encode(r["rejected"])) + 1)]
    weighted = tmp_path / "weighted.jsonl"
    weighted.write_text("".join(json.dumps(r) + "\n" for r in rows))
    weights_on = ["+data.format_options.token_weights=true", "data.tokenizer.vocab_size=null",
                  f"+data.tokenizer.pretrained={_save(tok, tmp_path)}"]  # the same tokenizer, loaded
    dm, _, _ = build_components(cfg_for(weighted, run_dir, *weights_on))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    for b in range(batch["rejected_labels"].shape[0]):
        on = batch["rejected_labels"][b] != -100
        n = int(on.sum())
        assert batch["rejected_weights"][b][on].tolist() == [float(i + 1) for i in range(n)]
        assert batch["rejected_weights"][b][~on].abs().sum() == 0
        assert batch["chosen_weights"][b][batch["chosen_labels"][b] != -100].eq(1).all()  # no chosen weights: 1
    rows[3]["rejected_weights"] = rows[3]["rejected_weights"][:-1]
    weighted.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"weighted.jsonl.*line 4.*\"rejected_weights\" has \d+ values but the rej"):
        dm, _, _ = build_components(cfg_for(weighted, run_dir, *weights_on))
        dm.prepare_data()


def _save(tok, tmp_path: Path) -> Path:  # noqa: ANN001
    out = tmp_path / "tokenizer"
    tok.hf.save_pretrained(str(out))
    return out


def test_hf_dataset_pairs_train_and_a_bad_row_is_named(tmp_path: Path) -> None:
    """`data.source.kind=hf` (here `datasets`' parquet builder on a local file, offline) gives the same pair
    batches as a jsonl file; a row with an empty response is named by its index."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from src.data.lm_datamodule import LMDataModule

    rows = [json.loads(line) for line in write_pairs(tmp_path / "p.jsonl", n=30).read_text().splitlines()]
    cols = {k: [r[k] for r in rows] for k in ("prompt", "chosen", "rejected")}
    pq.write_table(pa.table(cols), tmp_path / "p.parquet")
    kw = dict(format="preference", tokenizer={"vocab_size": 300}, seq_len=32, batch_size=4, seed=1,
              val_fraction=0.2, cache_dir=str(tmp_path / "c"))
    dm = LMDataModule({"kind": "hf", "name": "parquet", "data_files": str(tmp_path / "p.parquet")}, **kw)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["chosen_input_ids"].shape[0] == 4 and (batch["rejected_labels"] != -100).any()
    cols["chosen"][7] = "  "
    pq.write_table(pa.table(cols), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"HF dataset parquet row 7: the \"chosen\" response is empty"):
        LMDataModule({"kind": "hf", "name": "parquet", "data_files": str(tmp_path / "bad.parquet")}, **kw).setup("fit")


def test_a_response_ending_with_the_end_token_gets_no_second_one(tmp_path: Path, run_dir: Path) -> None:
    """As TRL: `chosen = " 5 6 7 8<|endoftext|>"` is labelled `5 6 7 8 <eos>`, not `... <eos> <eos>`."""
    path = write_pairs(tmp_path / "pairs.jsonl", n=40)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**r, "chosen": r["chosen"] + "<|endoftext|>"}) + "\n" for r in lines))
    dm, _, _ = build_components(cfg_for(path, run_dir))
    dm.setup("fit")
    assert dm.tokenizer.encode("<|endoftext|>") == [dm.tokenizer.eos_id]  # the text is the end token itself
    batch = next(iter(dm.train_dataloader()))
    for v in ("chosen", "rejected"):
        labels = batch[f"{v}_labels"][0]
        target = labels[labels != -100].tolist()
        assert target[-1] == dm.tokenizer.eos_id and target[-2] != dm.tokenizer.eos_id
