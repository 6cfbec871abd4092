"""The prompt-only RL format: records {prompt, answer, skill?} -> right-padded prompt batches with metadata."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.data.errors import DataError
from src.data.lm_datamodule import LMDataModule

RECS = [{"prompt": "1+2=", "answer": 3, "skill": 0}, {"prompt": "10+20+3=", "answer": "33", "skill": 1},
        {"prompt": "4+5=", "answer": 9}, {"prompt": "7+8=", "answer": 15, "skill": 0}]


def module(tmp_path: Path, recs: list[dict], **kw) -> LMDataModule:
    return LMDataModule(source={"kind": "records", "records": recs}, format="prompt", tokenizer={"vocab_size": 270},
                        batch_size=4, val_fraction=0.0, shuffle=False, cache_dir=str(tmp_path), num_workers=0,
                        seq_len=16, **kw)


def test_prompt_batches_carry_prompts_and_answers(tmp_path: Path) -> None:
    dm = module(tmp_path, RECS)
    batch = next(iter(dm.train_dataloader()))
    ids, mask = batch["prompt_input_ids"], batch["prompt_attention_mask"]  # [4, L]
    tok = dm.tokenizer
    for i, rec in enumerate(RECS):
        n = int(mask[i].sum())
        assert tok.decode(ids[i, :n].tolist()) == rec["prompt"]  # right-padded, no end token
        assert (ids[i, n:] == tok.pad_id).all()
    assert batch["prompt"] == [r["prompt"] for r in RECS]
    assert batch["answer"] == ["3", "33", "9", "15"]  # any scalar, as text
    assert batch["skill"].tolist() == [0, 1, -1, 0]  # -1: no skill given


def test_bad_prompt_records_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match='"answer" is missing'):
        module(tmp_path, [{"prompt": "1+2="}]).setup()
    with pytest.raises(DataError, match='"skill" must be an integer'):
        module(tmp_path, [{"prompt": "1+2=", "answer": 3, "skill": "easy"}]).setup()
    with pytest.raises(DataError, match="drop_long_prompts"):
        module(tmp_path, [{"prompt": "1+2+3+4+5+6+7+8+9+10+11+12=", "answer": 78}]).setup()
