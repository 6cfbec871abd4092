from __future__ import annotations

import pytest

from src.data.collate import PadCollator as SFTCollator
from src.data.errors import DataError
from src.data.formats.sft import SFTDataset, encode_sft
from src.data.packing import IGNORE_INDEX
from src.data.sources import Fields
from src.data.tokenizer import SpecialTokens, train_bpe

SFT = Fields("sft")
CHAT = (
    "{% for m in messages %}<|sep|>{{ m.role }}: {{ m.content }}<|endoftext|>{% endfor %}"
    "{% if add_generation_prompt %}<|sep|>assistant: {% endif %}"
)


def _item(ids, target) -> dict:
    """The item the real dataset makes of one encoded record (pre-shifted labels, -100 off-target)."""
    import datasets

    return SFTDataset(datasets.Dataset.from_dict({"input_ids": [ids], "target_mask": [target]}))[0]


def test_prompt_response_labels_are_masked_exactly_on_the_prompt(bpe):
    rec = {"prompt": "Tom went to the park.", "response": " He found a ball."}
    ids, target = encode_sft(bpe, rec, SFT, 64, "r0")
    p, r = bpe.encode(rec["prompt"]), bpe.encode(rec["response"])
    assert ids == p + r + [bpe.eos_id]
    item = _item(ids, target)
    assert item["input_ids"].tolist() == ids[:-1]
    labels = item["labels"].tolist()
    # positions 0..len(p)-2 predict prompt tokens -> masked; from len(p)-1 on, the response and the eos
    assert labels[: len(p) - 1] == [IGNORE_INDEX] * (len(p) - 1)
    assert labels[len(p) - 1 :] == r + [bpe.eos_id]


def test_collator_right_pads_with_masked_labels(bpe):
    items = []
    for rec in [{"prompt": "Mia", "response": " ran."}, {"prompt": "A long prompt here", "response": " ok"}]:
        ids, target = encode_sft(bpe, rec, SFT, 64, "r")
        items.append(_item(ids, target))
    batch = SFTCollator(bpe.pad_id)(items)
    lens = [len(it["input_ids"]) for it in items]
    t = max(lens)
    for k in ("input_ids", "labels", "attention_mask", "position_ids"):
        assert batch[k].shape == (2, t)
    for i, n in enumerate(lens):
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (t - n)
        assert batch["labels"][i, n:].tolist() == [IGNORE_INDEX] * (t - n)
        assert batch["input_ids"][i, n:].tolist() == [bpe.pad_id] * (t - n)
        assert batch["labels"][i, :n].tolist() == items[i]["labels"].tolist()


def test_truncation_keeps_prompt_and_cuts_response_tail(bpe):
    rec = {"prompt": "Tom went to the park.", "response": " He found a ball and a kite and a hat."}
    p = bpe.encode(rec["prompt"])
    ids, target = encode_sft(bpe, rec, SFT, len(p) + 2, "r")
    assert len(ids) == len(p) + 3 and ids[: len(p)] == p and sum(target) == 3


def test_prompt_too_long_is_an_error_or_dropped(bpe, tmp_path):
    from src.data.formats.sft import SFTTokenize

    rec = {"prompt": "Tom went to the park and the beach.", "response": " Yes."}
    seq_len = len(bpe.encode(rec["prompt"])) - 1
    batch = {k: [v] for k, v in rec.items()} | {"messages": [None]}
    with pytest.raises(DataError, match=r"record 7: the prompt alone fills data.seq_len.*drop_long_prompts"):
        SFTTokenize(bpe, SFT, seq_len, drop_long_prompts=False)(batch, [7])
    assert SFTTokenize(bpe, SFT, seq_len, drop_long_prompts=True)(batch, [7]) == {"input_ids": [], "target_mask": []}


def test_messages_train_only_on_assistant_turns(corpus, tmp_path):
    tok = train_bpe(corpus, 320, SpecialTokens(n_reserved_pads=2, extras=("<|sep|>",)), tmp_path)
    msgs = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Tom ran."},
        {"role": "user", "content": "More"},
        {"role": "assistant", "content": "Mia sat."},
    ]
    with pytest.raises(DataError, match="chat template"):
        encode_sft(tok, {"messages": msgs}, SFT, 128, "r")
    tok.hf.chat_template = CHAT
    ids, target = encode_sft(tok, {"messages": msgs}, SFT, 128, "r")
    assert tok.decode(ids) == tok.hf.apply_chat_template(msgs, tokenize=False)
    trained = [i for i, m in zip(ids, target) if m]
    assert tok.decode(trained) == "Tom ran.<|endoftext|>Mia sat.<|endoftext|>"


def test_a_conversation_opening_with_the_assistant_trains_only_its_turns() -> None:
    """SmolLM2's template injects a default system prompt and the assistant header before a first assistant turn:
    context, not targets (they used to be trained on when the assistant spoke first)."""
    from src.data.tokenizer import load_pretrained

    tok = load_pretrained("smollm2-135m")
    msgs = [{"role": "assistant", "content": "Welcome!"}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Yo."}]
    ids, target = encode_sft(tok, {"messages": msgs}, SFT, 256, "r")
    trained = tok.decode([i for i, m in zip(ids, target) if m])
    assert "system" not in trained and "assistant" not in trained and "Hi" not in trained
    assert trained.startswith("Welcome!") and "Yo." in trained


def test_a_response_that_already_ends_with_the_end_token_gets_no_second_one(bpe):
    """TRL's rule: `"He ran.<|endoftext|>"` is trained as `... ran . <eos>`, not `... <eos> <eos>` (which taught the
    model to emit two end tokens); every other response gets exactly one."""
    plain = {"prompt": "Mia", "response": " ran."}
    ended = {"prompt": "Mia", "response": " ran.<|endoftext|>"}
    ids_plain, target_plain = encode_sft(bpe, plain, SFT, 64, "r0")
    ids_ended, target_ended = encode_sft(bpe, ended, SFT, 64, "r1")
    assert ids_ended == ids_plain and target_ended == target_plain
    assert ids_plain[-1] == bpe.eos_id and ids_plain[-2] != bpe.eos_id


def test_prompts_ending_in_a_space_get_one_warning_with_their_count(tmp_path, caplog):
    """`"The capital of France is " + "Paris."` puts the space in a token of its own and scores the response as a
    rare word-initial piece (TRL warns too): one warning for the dataset, naming how many prompts and the fix. A
    final newline (a chat template's "assistant\n") is split from the next word anyway: not counted."""
    import logging

    from src.data.lm_datamodule import LMDataModule
    from tests.data.conftest import write_jsonl

    recs = [{"prompt": f"Tom went to the park {i} ", "response": "and ran."} for i in range(3)]
    recs += [{"prompt": f"Mia saw a dog {i}", "response": " It barked."} for i in range(4)]
    recs += [{"prompt": "Q: 2+2?\n", "response": "4"}]
    path = write_jsonl(tmp_path / "chats.jsonl", recs)
    dm = LMDataModule(source={"kind": "file", "path": str(path)}, format="sft", tokenizer={"vocab_size": 300},
                      seq_len=32, batch_size=2, val_fraction=0.25, cache_dir=str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    warnings = [r.getMessage() for r in caplog.records if "end in a space" in r.getMessage()]
    assert len(warnings) == 1 and "3 of 8 prompts end in a space or tab" in warnings[0]
    assert "Move the space to the start of the response" in warnings[0]
