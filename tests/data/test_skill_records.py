"""`data=skills_jsonl` (task kind `records`): your own skill-labelled records as a Skill-It pool."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from src.callbacks.skills.evaluation import answer_stats
from src.callbacks.skills.skillit import SkillItCallback
from src.data.errors import DataError
from src.data.skill_datamodule import SkillDataModule
from src.data.skills_graph import target_mask
from src.runtime.build import build_components
from tests.helpers import compose_cfg

WORDS = ["red", "green", "blue", "gold", "pink", "gray", "teal", "navy"]


def _records(n: int, seed: int = 0) -> list[dict]:
    """Three skills that a tiny model learns in ~100 steps: answer a constant, copy the last word, name its length."""
    rng, out = random.Random(seed), []
    for i in range(n):
        words = rng.sample(WORDS, 3)
        skill = ["const", "copy", "length"][i % 3]
        response = {"const": "yes", "copy": words[-1], "length": str(len(words[-1]))}[skill]
        out.append({"prompt": f"{' '.join(words)} {skill}:", "response": response, "skill": skill})
    return out


def _write(path: Path, recs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def _dm(tmp_path: Path, path: Path, **kw) -> SkillDataModule:  # noqa: ANN003
    task = {"kind": "records", "path": str(path), **kw.pop("task", {})}
    args = dict(task=task, pool=None, n_val_per_skill=4, tokenizer={"vocab_size": 300}, batch_size=6, seed=0,
                cache_dir=str(tmp_path / "cache"))
    return SkillDataModule(**{**args, **kw})


def test_records_become_a_skill_pool_grouped_by_skill_with_response_labels(tmp_path: Path) -> None:
    recs = _records(60)
    random.Random(1).shuffle(recs)  # file order mixes the skills
    dm = _dm(tmp_path, _write(tmp_path / "skills.jsonl", recs))
    assert dm.skill_names == ["const", "copy", "length"] and dm.k == 3  # sorted names
    assert dm.pool_sizes == [16, 16, 16]  # 20 each, 4 held out for validation
    dm.setup("fit")
    skills = dm.train_dataset.skills
    assert (np.diff(skills) >= 0).all()  # contiguous blocks per skill, as the sampler indexes them
    assert np.bincount(dm.val_dataset.skills).tolist() == [4, 4, 4]
    held = {r["prompt"] for r in dm.records()[1]}
    assert not held & {r["prompt"] + r["response"] for r in dm.records()[0]}  # no record in both
    tok = dm.tokenizer
    for i in range(len(dm.train_dataset)):
        rec, item = dm.records()[0][i], dm.train_dataset[i]
        target = item["labels"][item["labels"] != -100].tolist()
        assert target == tok.encode(rec["response"]) + [tok.eos_id]  # the response and eos, nothing else
        assert item["skill"] == dm.skill_names.index(rec["skill_name"])

    empty = _dm(tmp_path, _write(tmp_path / "e.jsonl", [{**r, "prompt": ""} for r in _records(30)]))
    empty.setup("fit")
    item = empty.train_dataset[0]  # response "yes" + eos, no prompt: its first token cannot be a target
    assert item["input_ids"].shape == item["labels"].shape
    assert item["labels"][item["labels"] != -100].tolist() == empty.tokenizer.encode("yes")[1:] + [
        empty.tokenizer.eos_id]

    ordered = _dm(tmp_path, tmp_path / "skills.jsonl", task={"skills": ["length", "const", "copy"]})
    assert ordered.skill_names == ["length", "const", "copy"]
    assert [r["skill_name"] for r in ordered.records()[0][:1]] == ["length"]  # index order follows the list


def test_a_separate_validation_file_and_field_names(tmp_path: Path) -> None:
    train = [{"q": r["prompt"], "a": r["response"], "kind": r["skill"]} for r in _records(30)]
    val = [{"q": r["prompt"], "a": r["response"], "kind": r["skill"]} for r in _records(9, seed=5)]
    dm = _dm(tmp_path, _write(tmp_path / "t.jsonl", train), n_val_per_skill=50,
             task={"val_path": str(_write(tmp_path / "v.jsonl", val)), "prompt_field": "q", "response_field": "a",
                   "skill_field": "kind"})
    assert dm.pool_sizes == [10, 10, 10]  # nothing held out: n_val_per_skill does not apply
    assert [r["skill"] for r in dm.records()[1]] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert dm.sample_prompts() == [dm.records()[1][i]["prompt"] for i in (0, 3, 6)]  # one per skill


@pytest.mark.parametrize(("change", "message"), [
    (lambda recs, path: _write(path, [*recs, {"prompt": "p", "response": "r"}]),
     r'skills.jsonl line 31: field "skill" must be a skill name .* set data.task.skill_field'),
    (lambda recs, path: _write(path, [*recs, {"prompt": "p", "response": 3, "skill": "copy"}]),
     r'skills.jsonl line 31: field "response" must be a string'),
    (lambda recs, path: _write(path, recs[:3] + recs[3:6]),
     r"skill 'const' has 2 records, and data.n_val_per_skill=4 .* lower data.n_val_per_skill"),
    (lambda recs, path: _write(path, [r for r in recs if r["skill"] == "copy"]),
     r"one skill \(\['copy'\]\); mixing over skills needs at least two"),
])
def test_bad_records_get_one_message_naming_the_record_and_the_fix(tmp_path: Path, change, message: str) -> None:  # noqa: ANN001
    path = tmp_path / "skills.jsonl"
    change(_records(30), path)
    with pytest.raises(DataError, match=message):
        _dm(tmp_path, path)


def test_bad_records_config_gets_one_message(tmp_path: Path) -> None:
    path = _write(tmp_path / "skills.jsonl", _records(30))
    with pytest.raises(DataError, match=r"line 1: skill 'const' is not in data.task.skills=\['copy', 'length'\]"):
        _dm(tmp_path, path, task={"skills": ["copy", "length"]})
    with pytest.raises(DataError, match="no records for skill.*'other'"):
        _dm(tmp_path, path, task={"skills": ["const", "copy", "length", "other"]})
    with pytest.raises(DataError, match="set data.pool=null"):
        _dm(tmp_path, path, pool=[1, 1, 1])
    with pytest.raises(DataError, match="data.task.path is not set"):
        _dm(tmp_path, path, task={"path": None})
    long = _dm(tmp_path, path, task={"max_tokens": 4})
    with pytest.raises(DataError, match=r"skills.jsonl line \d+: \d+ tokens, above data.task.max_tokens=4"):
        long.setup("fit")
    empty = _write(tmp_path / "empty.jsonl", [*_records(30), {"prompt": "", "response": "", "skill": "copy"}])
    with pytest.raises(DataError, match="empty.jsonl line 31: the prompt and the response are both empty"):
        _dm(tmp_path, empty, n_val_per_skill=1).setup("fit")


class _NextToken(torch.nn.Module):
    """A backbone whose greedy prediction at every position is (token + 1) mod V: logits = one-hot hidden."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.output_weight = torch.eye(vocab)  # [V, d=V]
        self.output_bias = None

    def forward(self, input_ids: torch.Tensor, **_: object) -> torch.Tensor:
        return torch.nn.functional.one_hot((input_ids + 1) % self.vocab, self.vocab).float() * 20  # [B, T, V]


def test_answer_accuracy_is_greedy_exact_match_over_all_answer_tokens() -> None:
    ids = torch.tensor([[1, 2, 3, 4], [1, 5, 6, 0]])  # [B, T]
    labels = torch.tensor([[-100, -100, 4, 5], [-100, 6, 8, -100]])  # item 0: both right; item 1: 6 right, 8 wrong
    stats = answer_stats(_NextToken(10), {"input_ids": ids, "labels": labels})
    tokens, right, answers = stats[1:].tolist()
    assert (tokens, right, answers) == (4, 1, 2)  # one of two answers fully right, although 3 of 4 tokens are
    assert stats[0] > 0


def test_skillit_learns_from_a_records_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "skills.jsonl", _records(600))
    cfg = compose_cfg([
        "data=skills_jsonl", f"data.task.path={path}", "curriculum=skillit",
        "data.skills_graph=[[1,0,0],[0,1,0],[0,0,1]]",
        "trainer.accelerator=cpu", "callbacks.progress_bar=null", "callbacks.run_artifacts.sample_max_new_tokens=0",
        "model.d_model=64", "model.n_layers=2", "data.tokenizer.vocab_size=300", "data.batch_size=16",
        "trainer.max_steps=150", "trainer.val_check_interval=50", "method.optimizer.lr=3e-3",
        "method.scheduler.warmup_steps=10", "curriculum.callback.rounds=3", "trainer.enable_model_summary=false",
    ], tmp_path / "run")
    pl.seed_everything(0, workers=True)
    dm, module, trainer = build_components(cfg)
    trainer.fit(module, datamodule=dm)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    skills_json = json.loads((tmp_path / "run" / "skills.json").read_text())
    assert skills_json["skills"] == ["const", "copy", "length"]
    first, last = skills_json["evals"][0], skills_json["evals"][-1]
    for j, name in enumerate(skills_json["skills"]):  # every skill learned: loss down, answers right
        assert last["loss"][j] < 0.5 * first["loss"][j], (name, first["loss"][j], last["loss"][j])
        assert metrics[f"skill/acc_{name}"] >= 0.9, (name, metrics[f"skill/acc_{name}"])
    assert len(skills_json["mixtures"]) >= 3  # Skill-It moved the mixture during the run


def test_resume_refuses_a_pool_that_changed_since_the_checkpoint(tmp_path: Path) -> None:
    path = _write(tmp_path / "skills.jsonl", _records(60))
    state = _dm(tmp_path, path).state_dict()
    _dm(tmp_path, path).load_state_dict(state)  # the same file: resumes
    _write(path, _records(60, seed=9))  # same sizes, other records
    with pytest.raises(DataError, match=r"trained on another skills pool .* Resume with the data settings"):
        _dm(tmp_path, path).load_state_dict(state)
    lego = SkillDataModule(task={"kind": "lego", "k": 5}, n_train=550, pool=[1, 1, 1, 3, 5], n_val_per_skill=4,
                           tokenizer={"vocab_size": 280}, seed=0, cache_dir=str(tmp_path / "cache"))
    bigger = SkillDataModule(task={"kind": "lego", "k": 5}, n_train=1100, pool=[1, 1, 1, 3, 5], n_val_per_skill=4,
                             tokenizer={"vocab_size": 280}, seed=0, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"sizes \[50, 50, 50, 150, 250\]"):
        bigger.load_state_dict(lego.state_dict())


def test_integer_skill_names_sort_numerically_and_targets_take_names(tmp_path: Path) -> None:
    recs = [{**r, "skill": {"const": 10, "copy": 2, "length": 1}[r["skill"]]} for r in _records(30)]
    dm = _dm(tmp_path, _write(tmp_path / "skills.jsonl", recs))
    assert dm.skill_names == ["1", "2", "10"]  # not "1", "10", "2"
    names = ["const", "copy", "length"]
    assert target_mask(3, ["length", 0], names).tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(DataError, match=r"'size' is not a skill name; the skills are \['const', 'copy', 'length'\]"):
        target_mask(3, ["size"], names)


def test_a_learned_graph_file_is_put_in_the_data_skill_order(tmp_path: Path) -> None:
    graph = tmp_path / "skills_graph.yaml"  # learned with skills ordered [copy, const]: copy helps const
    graph.write_text("skills: [copy, const]\ngraph:\n- [1.0, 0.5]\n- [0.0, 1.0]\n")
    dm = SimpleNamespace(k=2, skill_names=["const", "copy"], skills_graph=None)
    aligned = SkillItCallback(graph=str(graph))._graph(dm)
    assert aligned.tolist() == [[1.0, 0.0], [0.5, 1.0]]  # row copy (now 1) still helps column const (now 0)
    other = SimpleNamespace(k=2, skill_names=["const", "length"], skills_graph=None)
    with pytest.raises(DataError, match=r"learned on skills \['copy', 'const'\], but the data has"):
        SkillItCallback(graph=str(graph))._graph(other)
