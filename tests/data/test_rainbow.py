"""Rainbow / EOS canvases by property (hypothesis): one end token, pads in cycle order, answers recovered exactly;
the canvas collator and format; a canvas too small is one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from src.data.errors import DataError
from src.data.formats.canvas import canvas_options
from src.data.rainbow import CanvasCollator, fill_canvas
from src.data.tasks.digit_copy import CopyTaskDataModule, eval_problems, problem
from src.models.components.mdlm_sampler import answer_tokens

END, MASK, BATCH_PAD = 1, 2, 0
PADS = [3, 4, 5, 6, 7, 8, 9]
answers = st.lists(st.integers(10, 99), min_size=0, max_size=24)


@settings(max_examples=200, deadline=None)
@given(answer=answers, slack=st.integers(0, 40), k=st.integers(1, 7))
def test_rainbow_canvas_is_answer_one_end_then_pads_in_cycle_order(answer: list[int], slack: int, k: int) -> None:
    canvas = len(answer) + 1 + slack
    row = fill_canvas(answer, canvas, END, PADS[:k], "rainbow")
    assert len(row) == canvas
    assert row.count(END) == 1 and row[len(answer)] == END  # exactly one end token, right after the answer
    assert row[: len(answer)] == answer
    assert row[len(answer) + 1 :] == [PADS[i % k] for i in range(slack)]  # pad_0, pad_1, ..., pad_{k-1}, pad_0, ...
    assert answer_tokens(row, END, PADS[:k]) == answer


@settings(max_examples=100, deadline=None)
@given(answer=answers, slack=st.integers(0, 40))
def test_eos_canvas_fills_with_the_end_token(answer: list[int], slack: int) -> None:
    row = fill_canvas(answer, len(answer) + 1 + slack, END, PADS, "eos")
    assert row == answer + [END] * (slack + 1)
    assert answer_tokens(row, END, PADS) == answer


@settings(max_examples=100, deadline=None)
@given(prefix=answers, tail=st.lists(st.sampled_from([END, *PADS, 42]), max_size=10))
def test_decoding_rule_is_text_before_the_first_end_with_pads_dropped(prefix: list[int], tail: list[int]) -> None:
    noisy = [t for x in prefix for t in (x, PADS[x % 7])]  # pads sprinkled inside the answer are dropped
    assert answer_tokens(noisy + [END] + tail, END, PADS) == prefix


def test_worked_example_of_the_docstring() -> None:
    assert fill_canvas([5, 6, 7], 8, 1, [20, 21], "eos") == [5, 6, 7, 1, 1, 1, 1, 1]
    assert fill_canvas([5, 6, 7], 8, 1, [20, 21], "rainbow") == [5, 6, 7, 1, 20, 21, 20, 21]


@pytest.mark.parametrize("padding", ["eos", "rainbow"])
def test_a_canvas_too_small_is_one_error_naming_its_size_and_the_fix(padding: str) -> None:
    with pytest.raises(DataError, match=r"needs a canvas of 5, but data.canvas=4; raise data.canvas to at least 5"):
        fill_canvas([10, 11, 12, 13], 4, END, PADS, padding)
    assert fill_canvas([10, 11, 12], 4, END, PADS, padding)[-1] == END  # exactly fits: answer + end token


def test_bad_padding_settings_are_one_error_each() -> None:
    with pytest.raises(DataError, match=r"data.padding='zeros' is not one of \('eos', 'rainbow'\)"):
        CanvasCollator(8, END, PADS, "zeros", BATCH_PAD)
    with pytest.raises(DataError, match="differ from the end token"):
        CanvasCollator(8, END, [3, END], "rainbow", BATCH_PAD, MASK)
    with pytest.raises(DataError, match="data.format_options.canvas"):
        canvas_options({"padding": "eos"})
    with pytest.raises(DataError, match="n_pads=0"):
        canvas_options({"canvas": 8, "n_pads": 0})


def test_collator_keeps_one_end_token_for_the_longest_answer_and_labels_the_canvas_only() -> None:
    """The reference code's collate drops the end token of a batch's longest answer; here every row keeps it."""
    items = [{"prompt_ids": torch.tensor([40, 41, 42]), "answer_ids": torch.tensor([50, 51, 52, 53, 54])},
             {"prompt_ids": torch.tensor([40]), "answer_ids": torch.tensor([50])}]
    batch = CanvasCollator(6, END, PADS, "rainbow", BATCH_PAD, MASK)(items)
    assert batch["input_ids"].tolist() == [[40, 41, 42, 50, 51, 52, 53, 54, END],
                                           [40, 50, END, 3, 4, 5, 6, BATCH_PAD, BATCH_PAD]]
    assert batch["labels"].tolist()[0] == [-100] * 3 + [50, 51, 52, 53, 54, END]
    assert batch["labels"].tolist()[1] == [-100, 50, END, 3, 4, 5, 6, -100, -100]
    assert batch["attention_mask"].sum(1).tolist() == [9, 7]
    canvas = batch["labels"] != -100
    assert torch.equal(batch["input_ids"][canvas], batch["labels"][canvas])  # labels are NOT shifted


def test_copy_task_problems() -> None:
    assert problem("c", "123") == ("c:123=", "123") and problem("r", "123") == ("r:123=", "321")
    assert problem("f", "4821") == ("f:4821=", "8") and problem("f", "123") == ("f:123=", "")
    probs = eval_problems(50, 8, seed=0)
    assert probs == eval_problems(50, 8, seed=0) and {len(a) for _, a in probs} <= set(range(1, 9))


def test_copy_task_datamodule_batches(tmp_path: Path) -> None:
    """End to end: generated records, a byte-level tokenizer with [MASK] and 7 pads, rainbow canvases."""
    dm = CopyTaskDataModule(task={"n_train": 200, "n_eval": 20}, canvas=12, padding="rainbow", batch_size=8,
                            cache_dir=str(tmp_path), val_fraction=0.1)
    tok = dm.tokenizer
    assert tok.mask_id is not None and len(tok.reserved_pad_ids) == 7
    assert len(tok.encode("31415")) == 5  # one token per digit
    batch = next(iter(dm.train_dataloader()))
    held = {p for p, a in dm.eval_problems() if len(a) >= 3}
    for row, lab in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        canvas = [t for t, y in zip(row, lab) if y != -100]
        assert len(canvas) == 12 and canvas.count(tok.eos_id) == 1
        prompt = tok.decode([t for t, y in zip(row, lab) if y == -100 and t != tok.pad_id])
        assert prompt not in held
        want = problem(*prompt[:-1].split(":"))[1]
        assert tok.decode(answer_tokens(canvas, tok.eos_id, tok.reserved_pad_ids)) == want


def test_copy_task_canvas_too_small_for_its_answers(tmp_path: Path) -> None:
    dm = CopyTaskDataModule(task={"n_train": 50, "max_len": 8}, canvas=6, cache_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"data.canvas=6; raise data.canvas to at least"):
        dm.prepare_data()


def test_train_canvases_pick_one_canvas_per_batch_deterministically() -> None:
    coll = CanvasCollator(4, END, PADS, "rainbow", BATCH_PAD, MASK, canvases=[4, 8, 16])
    g = torch.Generator().manual_seed(0)
    sizes = []
    for _ in range(30):
        items = [{"prompt_ids": torch.randint(10, 99, (3,), generator=g),
                  "answer_ids": torch.randint(10, 99, (int(torch.randint(1, 4, (1,), generator=g)),), generator=g)}
                 for _ in range(4)]
        batch = coll(items)
        canvas = (batch["labels"] != -100).sum(1)
        assert (canvas == canvas[0]).all() and (batch["input_ids"] == END).sum(1).eq(1).all()
        assert torch.equal(coll(items)["input_ids"], batch["input_ids"])  # the same batch, the same canvas
        sizes.append(int(canvas[0]))
    assert set(sizes) == {4, 8, 16}
    with pytest.raises(DataError, match="smaller than data.canvas=8"):
        CanvasCollator(8, END, PADS, "rainbow", BATCH_PAD, canvases=[4, 8])


def test_a_response_ending_with_the_end_token_keeps_one_end_token_on_the_canvas(tmp_path: Path) -> None:
    """As for SFT and preference data (TRL's rule): `"42<|endoftext|>"` is the answer `42`, laid out with exactly
    one end token, not an answer that ends in an end token followed by the canvas's own."""
    from src.data.formats.canvas import CanvasTokenize

    tok = CopyTaskDataModule(task={"n_train": 50, "n_eval": 5}, canvas=12, cache_dir=str(tmp_path)).tokenizer
    assert tok.encode("<|endoftext|>") == [tok.eos_id]
    out = CanvasTokenize(tok, "prompt", "response", 12)(
        {"prompt": ["c:42=", "c:42="], "response": ["42", "42<|endoftext|>"]}, [0, 1])
    assert out["answer_ids"][0] == out["answer_ids"][1] == tok.encode("42")
