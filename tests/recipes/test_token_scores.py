"""Critical-token scoring in the cDPO recipe: scores belong to exactly the ids the preference format trains on,
equal the materialised-logits definition, and turn into 1 − s weights with the end token at 1; the lowest-score
analysis locates the first wrong step; sampling resumes from whole chunks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from src.data.tasks.arith import Problem, grade
from src.data.tokenizer import build_tokenizer
from src.models.components.transformer import CompactTransformer
from src.recipes.sampling import sample_graded
from src.recipes.token_scores import first_wrong_step_analysis, score_pairs, token_spans

PAIRS = [{"prompt": "12+34+5=", "chosen": "12+34=46 46+5=51 #51", "rejected": "12+34=46 46+5=52 #52"},
         {"prompt": "7+86=", "chosen": "7+86=93 #93", "rejected": "7+86=83 #83"}]


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    texts = [p["prompt"] + p[v] for p in PAIRS for v in ("chosen", "rejected")] * 20
    return build_tokenizer({"vocab_size": 280, "mask": False}, texts, tmp_path_factory.mktemp("tok"))


def tiny(tok, seed: int) -> CompactTransformer:  # noqa: ANN001
    torch.manual_seed(seed)
    return CompactTransformer(vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=2, max_seq_len=64).eval()


def test_scores_match_the_definition_on_the_trained_ids(tok) -> None:  # noqa: ANN001
    pos, neg = tiny(tok, 0), tiny(tok, 1)
    scored = score_pairs(pos, neg, tok, PAIRS, seq_len=48, b=1.0, progress=False)
    for rec in scored:
        p_ids = tok.encode(rec["prompt"])
        r_ids = tok.encode(rec["rejected"]) + [tok.eos_id]  # what the preference format trains on
        ids = torch.tensor([p_ids + r_ids])
        with torch.no_grad():  # the definition, with [T, V] logits materialised
            z = 2 * (pos(ids) @ pos.output_weight.T) - neg(ids) @ neg.output_weight.T  # [1, T, V]
        want = z[0, len(p_ids) - 1:-1].softmax(-1).gather(-1, torch.tensor(r_ids)[:, None])[:, 0]
        assert rec["rejected_scores"] == pytest.approx(want.tolist(), abs=1e-5)
        assert rec["rejected_weights"][:-1] == pytest.approx([1 - s for s in want[:-1].tolist()], abs=1e-5)
        assert rec["rejected_weights"][-1] == 1.0  # the end token keeps weight 1
        assert "chosen_weights" not in rec and len(rec["chosen_scores"]) == len(tok.encode(rec["chosen"])) + 1
        w, n = rec["rejected_weights"], len(r_ids) - 1  # cDPO's controls: the same weights moved or flattened
        assert sorted(rec["rejected_weights_shuffled"][:n]) == pytest.approx(sorted(w[:n]))
        assert rec["rejected_weights_constant"][:n] == pytest.approx([sum(w[:n]) / n] * n)
        assert rec["rejected_weights_shuffled"][n] == rec["rejected_weights_constant"][n] == 1.0


def test_lowest_score_analysis_finds_the_first_wrong_step(tok) -> None:  # noqa: ANN001
    rec = dict(PAIRS[0])
    spans = token_spans(tok, rec["rejected"])
    assert "".join(rec["rejected"][a:b] for a, b in spans) == rec["rejected"]
    wrong_lo, wrong_hi = grade(rec["prompt"], rec["rejected"]).step_spans[1]  # "46+5=52" is wrong
    inside = next(i for i, (a, b) in enumerate(spans) if a >= wrong_lo and b <= wrong_hi)
    rec["rejected_scores"] = [0.9] * len(spans) + [1.0]
    rec["rejected_scores"][inside] = 0.01
    hit = first_wrong_step_analysis(tok, [rec], grade)
    assert hit["n"] == 1 and hit["hit_rate"] == 1.0 and hit["offsets"] == [0]
    assert 0 < hit["random_rate"] < 1
    rec["rejected_scores"] = [0.9] * len(spans) + [1.0]
    rec["rejected_scores"][0] = 0.01  # in step 0, before the mistake
    miss = first_wrong_step_analysis(tok, [rec], grade)
    assert miss["hit_rate"] == 0.0 and miss["before_rate"] == 1.0 and miss["offsets"] == [-1]


def test_sampling_resumes_from_whole_chunks(tok, tmp_path: Path) -> None:  # noqa: ANN001
    model = tiny(tok, 0)
    qs = [{"prompt": Problem((a, b)).question, "answer": a + b} for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (9, 1)]]
    kw = {"k": 3, "temperature": 1.0, "top_p": 0.95, "max_new_tokens": 6, "chunk_questions": 2, "seed": 5,
          "progress": False}
    whole = sample_graded(model, tok, qs, grade, tmp_path / "a" / "s.jsonl", **kw)
    assert len(whole) == 5 and all(len(r["completions"]) == 3 for r in whole)
    # an earlier attempt died inside chunk 1: one finished chunk, then a torn line
    lines = (tmp_path / "a" / "s.jsonl").read_text().splitlines()
    partial = tmp_path / "b" / "s.jsonl.partial"
    partial.parent.mkdir()
    partial.write_text("\n".join(lines[:3]) + "\n" + lines[3][:10])
    resumed = sample_graded(model, tok, qs, grade, tmp_path / "b" / "s.jsonl", **kw)
    assert resumed == whole and not partial.exists()
    assert json.loads((tmp_path / "b" / "s.jsonl").read_text().splitlines()[0]) == whole[0]


def test_sampling_asks_the_rendered_prompt_and_keeps_the_question(tok, tmp_path: Path,  # noqa: ANN001
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """recipe.task.chat: the model is asked `prompt_text(q)` (a chat template's rendering), while the rows and the
    grader keep the question itself: the completions equal sampling the rendered prompts directly."""
    model = tiny(tok, 0)
    qs = [{"prompt": Problem((a, b)).question, "answer": a + b} for a, b in [(1, 2), (3, 4), (5, 6)]]
    kw = {"k": 2, "temperature": 1.0, "top_p": None, "max_new_tokens": 5, "chunk_questions": 2, "seed": 1,
          "progress": False}
    graded: list[str] = []
    encoded: list[str] = []
    encode = tok.encode
    monkeypatch.setattr(tok, "encode", lambda s, *a, **k: (encoded.append(s), encode(s, *a, **k))[1])

    def grade_spy(prompt: str, text: str):  # noqa: ANN202
        graded.append(prompt)
        return grade(prompt, text)

    asked = sample_graded(model, tok, qs, grade_spy, tmp_path / "a.jsonl", prompt_text=lambda q: "12+" + q, **kw)
    assert [r["prompt"] for r in asked] == [q["prompt"] for q in qs] and set(graded) == {q["prompt"] for q in qs}
    assert set(encoded) == {"12+" + q["prompt"] for q in qs}  # the model saw only the rendered prompts
    direct = sample_graded(model, tok, [{**q, "prompt": "12+" + q["prompt"]} for q in qs], grade,
                           tmp_path / "b.jsonl", **kw)
    assert [[c["text"] for c in r["completions"]] for r in asked] == \
        [[c["text"] for c in r["completions"]] for r in direct]
