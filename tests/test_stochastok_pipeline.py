"""StochasTok in the training pipeline: packed rows, per-epoch segmentation, task evaluation, the two-stage run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from src.callbacks.task_eval import char_tokenize, option_logliks
from src.data.errors import DataError
from src.data.lm_datamodule import LMDataModule
from src.data.stochastok import StochasTokPackedDataset
from src.data.tasks.stories import generate_stories
from src.models.components.transformer import CompactTransformer
from src.runtime.run import run_training
from tests.helpers import compose_cfg


@pytest.fixture(scope="module")
def dms(tmp_path_factory: pytest.TempPathFactory) -> tuple[LMDataModule, LMDataModule]:
    cache = tmp_path_factory.mktemp("cache")
    recs = [{"text": t} for t in generate_stories(300, seed=2)]
    kw = dict(source={"kind": "records", "records": recs}, tokenizer={"vocab_size": 400}, seq_len=48,
              batch_size=4, val_fraction=0.0, seed=3, cache_dir=str(cache))
    plain, stok = LMDataModule(**kw), LMDataModule(**kw, stochastok={"p": 0.5})
    plain.setup(), stok.setup()
    return plain, stok


def test_expanded_rows_keep_the_text_and_the_batch_contract(dms: tuple[LMDataModule, LMDataModule]) -> None:
    plain, stok = dms
    ds = stok.train_dataset
    assert isinstance(ds, StochasTokPackedDataset)
    tok = stok.tokenizer
    grew = 0
    for i in range(len(ds)):
        base_tok, base_seg = ds.rows.tokens[i], ds.rows.segments[i]
        item = ds[(i, 0)]
        assert item["input_ids"].shape == (48,)
        tokens, segs = ds.expanded_row(i, 0)
        assert torch.equal(item["input_ids"], torch.from_numpy(tokens[:-1]))
        m, n_real = int(np.count_nonzero(segs)), int(np.count_nonzero(base_seg))
        assert tok.decode(tokens[:m].tolist()) == tok.decode(base_tok[:n_real].tolist())  # same text
        for s in np.unique(base_seg[:n_real]):  # ... and every piece kept its own document's segment id
            assert tok.decode(tokens[segs == s].tolist()) == tok.decode(base_tok[base_seg == s].tolist())
        assert int(item["attention_mask"].sum()) == min(m, 48)
        grew += m > n_real
        ok = item["labels"][:-1] != -100  # labels are the row shifted by one
        assert torch.equal(item["labels"][:-1][ok], item["input_ids"][1:][ok])
        # a label of -100 exactly where the next token is another document or padding
        seg = item["segment_ids"]
        assert torch.equal(item["labels"][:-1] == -100, (seg[1:] != seg[:-1]) | (seg[1:] == 0))
    assert grew > len(ds) // 2  # p=0.5: nearly every row got longer
    assert len(ds) > len(plain.train_dataset)  # headroom for the expansion: more, shorter unexpanded rows


def test_fresh_segmentation_each_epoch_and_reproducible(dms: tuple[LMDataModule, LMDataModule]) -> None:
    ds = dms[1].train_dataset
    a, b, c = ds[(2, 0)], ds[(2, 0)], ds[(2, 1)]
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert not torch.equal(a["input_ids"], c["input_ids"])
    # the loader tags keys with the epoch: two passes over the data give different segmentations of row r
    loader = dms[1].train_dataloader()
    n = len(ds)
    keys = []
    it = iter(loader.sampler)
    for _ in range(2 * n):
        keys.append(next(it))
    assert {e for _, e in keys[:n]} == {0} and {e for _, e in keys[n:]} == {1}
    assert sorted(i for i, _ in keys[:n]) == list(range(n))


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_batches_equal_the_per_item_expansion(dms: tuple[LMDataModule, LMDataModule], workers: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches are expanded whole (`__getitems__`, in the main process or in workers); each row must still be the
    expansion of its own (index, epoch) key, exactly what `ds[key]` gives, so neither batching nor workers change
    the data or its seeding."""
    stok = dms[1]
    monkeypatch.setattr(stok, "num_workers", workers)
    loader = stok.train_dataloader()
    keys = iter(loader.sampler)
    for batch in (next(it := iter(loader)), next(it)):
        expect = [stok.train_dataset[next(keys)] for _ in range(stok.batch_size)]
        for k, v in batch.items():
            assert torch.equal(v, torch.stack([e[k] for e in expect])), k


def test_stochastok_on_sft_is_refused() -> None:
    with pytest.raises(DataError, match="data.stochastok.p=0.1 applies to pretraining"):
        LMDataModule(source={"kind": "records", "records": [{"prompt": "a", "response": "b"}]}, format="sft",
                     stochastok={"p": 0.1})


def test_option_logliks_score_only_the_option(dms: tuple[LMDataModule, LMDataModule]) -> None:
    tok = dms[0].tokenizer
    torch.manual_seed(0)
    model = CompactTransformer(vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=2).eval()
    prompts, options = ["Tom went to", "Mia saw a"], [[" the park", " a"], [" big dog", " the cake."]]
    got = option_logliks(model, tok, prompts, options, batch_size=3)
    for qi, (p, opts) in enumerate(zip(prompts, options)):
        for oi, o in enumerate(opts):
            p_ids, o_ids = tok.encode(p), tok.encode(o)
            ids = torch.tensor([p_ids + o_ids])
            with torch.no_grad():
                logits = model(ids) @ model.output_weight.T  # [1, T, V]
            logp = torch.log_softmax(logits[0, :-1], -1)  # predicts ids[1:]
            want = sum(logp[len(p_ids) - 1 + k, t] for k, t in enumerate(o_ids))
            assert got[qi, oi].item() == pytest.approx(float(want), abs=1e-4)


def test_char_tokenization_is_unseen_but_same_text(dms: tuple[LMDataModule, LMDataModule]) -> None:
    tok = dms[0].tokenizer
    q = "Tom went to the park"
    ids = char_tokenize(tok, q)
    assert len(ids) == len(q) and tok.decode(ids) == q and ids != tok.encode(q)


def test_two_stage_langgame_run_reports_game_accuracy(run_dir: Path) -> None:
    cfg = compose_cfg([
        "experiment=stochastok/langgame", "debug=smoke", "trainer.max_steps=3", "finetune.trainer.max_steps=2",
        "finetune.trainer.val_check_interval=2", "model.d_model=32", "model.n_layers=1",
        "finetune.callbacks.langgame_eval.n_per_game=4", "callbacks.run_artifacts.sample_max_new_tokens=0",
    ], run_dir)
    metrics = run_training(cfg)
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert metrics == on_disk
    assert on_disk["steps"] == 3 and on_disk["finetune/steps"] == 2
    assert 0.0 <= on_disk["finetune/langgame/acc"] <= 1.0 and "finetune/langgame/acc_shortest" in on_disk
    assert 0.0 <= on_disk["finetune/langgame/acc_seen"] <= 1.0
    assert (run_dir / "finetune" / "checkpoints" / "last.ckpt").is_file()
    ft = torch.load(run_dir / "finetune" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    pre = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    w = "backbone.embed.weight"
    assert w in ft["state_dict"]
    # fine-tuning continued the pretrained weights: closer to them than a fresh init would be
    fresh = CompactTransformer(vocab_size=ft["state_dict"][w].shape[0], d_model=32, n_layers=1, n_heads=4)
    d_pre = (ft["state_dict"][w] - pre["state_dict"][w]).norm()
    d_fresh = (ft["state_dict"][w] - fresh.embed.weight.detach()).norm()
    assert d_pre < 0.5 * d_fresh


def test_docs_seen_counts_problems_and_a_stochastok_step_holds_fewer(tmp_path: Path) -> None:
    """train/docs_seen is the number of finished problems trained on; at p = 0.3 the rows are packed short enough
    for their expansion to fit (49 of 65 tokens at seq_len 64), so 4 steps see about 3/4 of p = 0's problems."""
    seen = {}
    for p in (0.0, 0.3):
        run_dir = tmp_path / f"p{p}"
        run_training(compose_cfg([
            "experiment=stochastok/addition", "debug=smoke", f"data.stochastok.p={p}", "data.task.n_docs=3000",
            "callbacks.addition_eval.n_eval=4", "callbacks.run_artifacts.sample_max_new_tokens=0",
            "model.d_model=32", "model.n_layers=1"], run_dir))
        seen[p] = json.loads((run_dir / "metrics.json").read_text())["train/docs_seen"]
        logged = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
        assert "train/docs_seen" in logged and "addition/acc_train_tok" in logged
    # an addition problem is ~12 tokens, so 4 steps x 32 rows x 64 tokens hold several hundred
    assert 4 * 32 * 64 / 20 < seen[0.0] < 4 * 32 * 65 / 8
    assert 0.6 < seen[0.3] / seen[0.0] < 0.9
