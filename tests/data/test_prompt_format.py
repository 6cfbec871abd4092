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


def test_chat_prompts_render_through_the_chat_template_up_to_the_assistant_turn(bpe) -> None:
    """A chat prompt (TRL's conversational form) is what the chat model sees at generation: its template with the
    generation prompt; that rendered text is also the `prompt` the reward reads. Without a template: one error."""
    from src.data.formats.prompt import PromptTokenize
    from src.data.tokenizer import load_pretrained

    chat = [{"role": "user", "content": "12+34+5="}]
    batch = {"prompt": [chat, "7+8="], "answer": ["51", "15"], "skill": [1, 0]}
    tok = load_pretrained("smollm2-135m")
    out = PromptTokenize(tok, "prompt", "answer", "skill", 64, drop_long=False)(batch, [0, 1])
    rendered = tok.hf.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>assistant\n") and "12+34+5=" in rendered
    assert out["prompt"] == [rendered, "7+8="]  # a text prompt stays as it is
    assert out["input_ids"] == [tok.encode(rendered), tok.encode("7+8=")]
    with pytest.raises(DataError, match="chat template"):  # a tokenizer trained on the data has none
        PromptTokenize(bpe, "prompt", "answer", "skill", 64, drop_long=False)(batch, [0, 1])


def test_a_chat_prompt_must_be_role_content_messages(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"prompt\[0\] must be"):
        module(tmp_path, [{"prompt": [{"role": "user"}], "answer": 3}]).setup()
