from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.data.errors import DataError
from src.data.lm_datamodule import LMDataModule
from src.data.packing import IGNORE_INDEX
from tests.data.conftest import write_jsonl

PRETRAIN_KEYS = {"input_ids", "labels", "attention_mask", "position_ids", "segment_ids"}
CONF = Path(__file__).resolve().parents[2] / "conf" / "data"


def _pretrain_dm(tmp_path, corpus, **kw):
    path = write_jsonl(tmp_path / "train.jsonl", [{"text": t} for t in corpus])
    args = dict(
        source={"kind": "file", "path": str(path)},
        tokenizer={"vocab_size": 300},
        seq_len=32,
        batch_size=4,
        val_fraction=0.1,
        seed=0,
        cache_dir=str(tmp_path / "cache"),
    )
    return LMDataModule(**(args | kw))


def test_pretrain_batches_follow_the_contract(tmp_path, corpus):
    dm = _pretrain_dm(tmp_path, corpus)
    assert dm.tokenizer.vocab_size == 300  # available before setup: train.py sizes the model from it
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == PRETRAIN_KEYS
    for k, v in batch.items():
        assert v.shape == (4, 32) and v.dtype == torch.long, k
    inp, lab = batch["input_ids"], batch["labels"]
    same = (lab != IGNORE_INDEX)[:, :-1]
    assert torch.equal(lab[:, :-1][same], inp[:, 1:][same])  # labels are the next input token
    val = list(dm.val_dataloader())
    assert val and all(set(b) == PRETRAIN_KEYS for b in val)
    assert [b["input_ids"].tolist() for b in dm.val_dataloader()] == [b["input_ids"].tolist() for b in val]
    # val documents are held out of train: the two splits' packed tokens together are every document once
    n_tokens = sum(len(dm.tokenizer.encode(t)) + 1 for t in corpus)
    n_real = sum(int(dm.train_dataset[i]["attention_mask"].sum()) + 1 for i in range(len(dm.train_dataset)))
    n_real += sum(int(dm.val_dataset[i]["attention_mask"].sum()) + 1 for i in range(len(dm.val_dataset)))
    assert n_real - len(dm.train_dataset) - len(dm.val_dataset) <= n_tokens <= n_real
    # ... and as records: disjoint, together every document exactly once
    train, val_split = dm._raw_splits()
    tr, va = list(train.dataset["text"]), list(val_split.dataset["text"])
    assert sorted(tr + va) == sorted(corpus) and (set(tr) & set(va)) <= _dupes(corpus)


def _dupes(texts: list[str]) -> set[str]:
    """Texts that occur more than once in the corpus (those may legitimately land in both splits)."""
    seen, dup = set(), set()
    for t in texts:
        (dup if t in seen else seen).add(t)
    return dup


def test_resume_continues_exactly_where_training_stopped(tmp_path, corpus):
    dm = _pretrain_dm(tmp_path, corpus)
    dm.setup("fit")
    first = [b["input_ids"] for b in itertools.islice(iter(dm.train_dataloader()), 6)]
    # a checkpoint after 3 optimizer steps (accumulate 1, one device)
    dm.trainer = SimpleNamespace(global_step=3, accumulate_grad_batches=1, world_size=1, global_rank=0)
    state = dm.state_dict()
    assert state == {"samples_consumed": 3 * 4, "global_step": 3, "data": dm.data_identity()} and state["data"]
    dm2 = _pretrain_dm(tmp_path, corpus, num_workers=2)
    dm2.load_state_dict(state)
    dm2.setup("fit")
    resumed = [b["input_ids"] for b in itertools.islice(iter(dm2.train_dataloader()), 3)]
    assert all(torch.equal(a, b) for a, b in zip(resumed, first[3:]))


def test_state_dict_counts_all_ranks_and_accumulation(tmp_path, corpus):
    dm = _pretrain_dm(tmp_path, corpus)
    dm.trainer = SimpleNamespace(global_step=5, accumulate_grad_batches=2, world_size=2, global_rank=1)
    assert dm.state_dict() == {"samples_consumed": 5 * 2 * 4 * 2, "global_step": 5, "data": None}  # not set up


def test_position_stays_exact_across_resumes_with_another_global_batch(tmp_path, corpus):
    """Steps before a resume keep the batch size they had: 4 steps at B=2, resume at B=4 to step 6, resume at
    B=2 (on 2 ranks) to step 7 — 8 + 8 + 4 samples, not every step re-priced at the current batch."""
    def trainer(step, world=1, rank=0):
        return SimpleNamespace(global_step=step, accumulate_grad_batches=1, world_size=world, global_rank=rank)

    dm = _pretrain_dm(tmp_path, corpus, batch_size=2)
    dm.trainer = trainer(4)
    first = dm.state_dict()
    assert first["samples_consumed"] == 8
    dm2 = _pretrain_dm(tmp_path, corpus, batch_size=4)
    dm2.load_state_dict(first)
    dm2.trainer = trainer(6)
    second = dm2.state_dict()
    assert second["samples_consumed"] == 8 + 2 * 4  # the old formula said 6 * 4 = 24: 8 samples skipped
    dm3 = _pretrain_dm(tmp_path, corpus, batch_size=2)
    dm3.load_state_dict(second)
    dm3.trainer = trainer(7, world=2)
    assert dm3.state_dict()["samples_consumed"] == 16 + 1 * 2 * 2
    # an older checkpoint without the step: assumed to have had the current global batch
    dm4 = _pretrain_dm(tmp_path, corpus, batch_size=4)
    dm4.load_state_dict({"samples_consumed": 8})
    dm4.trainer = trainer(3)
    assert dm4.state_dict()["samples_consumed"] == 12


def test_resume_on_another_world_size_continues_the_global_stream(tmp_path, corpus):
    """3 samples consumed on 1 rank, resumed on 2 ranks: the ranks' streams interleave into exactly the
    single-rank stream from position 3 (an odd count used to be refused)."""
    one = _pretrain_dm(tmp_path, corpus, batch_size=1)
    one.setup("fit")
    stream = [b["input_ids"] for b in itertools.islice(iter(one.train_dataloader()), 9)]
    ranks = []
    for r in range(2):
        dm = _pretrain_dm(tmp_path, corpus, batch_size=1)
        dm.load_state_dict({"samples_consumed": 3, "global_step": 3})
        dm.trainer = SimpleNamespace(global_step=3, accumulate_grad_batches=1, world_size=2, global_rank=r)
        dm.setup("fit")
        ranks.append([b["input_ids"] for b in itertools.islice(iter(dm.train_dataloader()), 3)])
    merged = [ranks[k % 2][k // 2] for k in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(merged, stream[3:9]))


def test_sft_end_to_end_masks_prompts_and_pads(tmp_path):
    recs = [{"prompt": f"Q{i}: who went to the park?", "response": f" Tom {'went ' * (i % 5)}home."} for i in range(40)]
    path = write_jsonl(tmp_path / "sft.jsonl", recs)
    dm = LMDataModule(
        {"kind": "file", "path": str(path)},
        format="sft",
        tokenizer={"vocab_size": 300},
        seq_len=64,
        batch_size=8,
        seed=1,
        cache_dir=str(tmp_path / "c"),
        val_fraction=0.1,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "labels", "attention_mask", "position_ids"}
    b, t = batch["input_ids"].shape
    assert b == 8 and t <= 64 and all(v.shape == (b, t) and v.dtype == torch.long for v in batch.values())
    tok = dm.tokenizer
    for i in range(b):
        n = int(batch["attention_mask"][i].sum())
        ids = batch["input_ids"][i, :n].tolist()
        text = tok.decode(ids)
        prompt = text[: text.index("?") + 1]
        n_prompt = len(tok.encode(prompt))
        lab = batch["labels"][i].tolist()
        assert lab[: n_prompt - 1] == [IGNORE_INDEX] * (n_prompt - 1)
        assert IGNORE_INDEX not in lab[n_prompt - 1 : n]
        assert lab[n - 1] == tok.eos_id and lab[n:] == [IGNORE_INDEX] * (t - n)
    assert dm.sample_prompts()[0].startswith("Q")


@pytest.mark.parametrize("split", ["train", "val"])
def test_too_long_prompt_error_names_file_and_line(tmp_path, split):
    """The records are shuffled into train/val before tokenization; the error must still point at the file line."""
    recs = [{"prompt": f"Q{i}: who went to the park?", "response": " Tom went home."} for i in range(40)]
    kw = dict(format="sft", tokenizer={"vocab_size": 300}, seq_len=24, batch_size=4, seed=1, val_fraction=0.1,
              cache_dir=str(tmp_path / "c"))
    probe = LMDataModule({"kind": "file", "path": str(write_jsonl(tmp_path / "p.jsonl", recs))}, **kw)
    _, val = probe._raw_splits()
    in_val = {q.split(":")[0] for q in val.dataset["prompt"]}
    bad = next(i for i in range(40) if (f"Q{i}" in in_val) == (split == "val") and i > 3)  # a record of that split
    recs[bad]["prompt"] = "Q: " + "who went to the park and the beach? " * 6
    path = write_jsonl(tmp_path / "sft.jsonl", recs)
    dm = LMDataModule({"kind": "file", "path": str(path)}, **kw)
    with pytest.raises(DataError) as e:
        dm.setup("fit")
    assert f"{path} line {bad + 1}: the prompt alone fills data.seq_len=24" in str(e.value)
    assert "drop_long_prompts" in str(e.value)


def test_empty_source_is_a_clear_error(tmp_path):
    (tmp_path / "e.jsonl").write_text("", encoding="utf-8")
    dm = LMDataModule(str(tmp_path / "e.jsonl"), cache_dir=str(tmp_path))
    with pytest.raises(DataError, match="empty"):
        _ = dm.tokenizer


def test_shipped_stories_config_instantiates_and_yields_batches(tmp_path):
    from tests.helpers import compose_cfg

    # composed as train.py composes it (the data configs pull their shared keys in through Hydra defaults)
    cfg = compose_cfg(["data=stories", "seed=3", f"paths.cache_dir={tmp_path}", "data.source.n_docs=1500"], tmp_path)
    dm = instantiate(cfg.data)  # n_docs: the real size is 20000; same code path, faster test
    assert isinstance(dm, LMDataModule) and dm.tokenizer.vocab_size == 512
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (16, 128)
    assert dm.sample_prompts()
    for name in ("jsonl.yaml", "sft_jsonl.yaml"):
        node = OmegaConf.load(CONF / name)
        assert node._target_ == "src.data.lm_datamodule.LMDataModule" and OmegaConf.is_missing(node.source, "path")


class _Recorder:
    """A minimal LightningModule that records the batches it trains on."""

    @staticmethod
    def make(vocab_size: int):
        import lightning as L

        class M(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.head = torch.nn.Embedding(vocab_size, vocab_size)
                self.seen: list[torch.Tensor] = []

            def training_step(self, batch, i):
                self.seen.append(batch["input_ids"].clone())
                logits = self.head(batch["input_ids"])  # [B, T, V]
                return torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten())

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        return M()


def test_lightning_resume_sees_the_same_batches_as_an_uninterrupted_run(tmp_path):
    import lightning as L

    def fit(max_steps, ckpt=None):
        dm = LMDataModule(
            {"kind": "stories", "n_docs": 300}, seq_len=16, batch_size=2, cache_dir=str(tmp_path), val_fraction=0.0
        )
        model = _Recorder.make(dm.tokenizer.vocab_size)
        trainer = L.Trainer(
            max_steps=max_steps,
            accelerator="cpu",
            logger=False,
            enable_progress_bar=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            accumulate_grad_batches=2,
            limit_val_batches=0,
            default_root_dir=tmp_path,
        )
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
        return model.seen, trainer

    full, _ = fit(6)
    first, trainer = fit(4)
    trainer.save_checkpoint(tmp_path / "c.ckpt")
    rest, _ = fit(6, str(tmp_path / "c.ckpt"))
    assert len(first) == 8 and len(rest) == 4  # micro-batches: 2 per optimizer step
    assert all(torch.equal(a, b) for a, b in zip(full, first + rest))


def test_hf_dataset_source_trains_and_names_rows_in_errors(tmp_path):
    """`kind: hf` goes through `datasets.load_dataset` (here its parquet builder on a local file, offline)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    prompts = [f"Q{i}: who went to the park?" for i in range(30)]
    pq.write_table(pa.table({"prompt": prompts, "response": [" Tom went home."] * 30, "extra": list(range(30))}),
                   tmp_path / "d.parquet")
    src = {"kind": "hf", "name": "parquet", "data_files": str(tmp_path / "d.parquet"), "max_records": 25}
    kw = dict(format="sft", tokenizer={"vocab_size": 300}, seq_len=24, batch_size=4, seed=1, val_fraction=0.2,
              cache_dir=str(tmp_path / "c"))
    dm = LMDataModule(src, **kw)
    dm.setup("fit")
    assert len(dm.train_dataset) + len(dm.val_dataset) == 25  # max_records, split 20/5
    assert next(iter(dm.train_dataloader()))["input_ids"].shape[0] == 4
    prompts[17] = "Q: " + "who went to the park and the beach? " * 6
    pq.write_table(pa.table({"prompt": prompts, "response": [" Tom went home."] * 30}), tmp_path / "e.parquet")
    bad = LMDataModule({**src, "data_files": str(tmp_path / "e.parquet")}, **kw)
    with pytest.raises(DataError, match=r"HF dataset parquet row 17: the prompt alone fills data.seq_len=24"):
        bad.setup("fit")
    chats = [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None if i == 4 else "Yo"}]
             for i in range(6)]
    pq.write_table(pa.table({"messages": chats}), tmp_path / "m.parquet")
    with pytest.raises(DataError, match=r"HF dataset parquet row 4: messages\[1\] must be"):  # validated like files
        LMDataModule({**src, "data_files": str(tmp_path / "m.parquet")}, **kw).setup("fit")
    with pytest.raises(DataError, match=r'SFT needs a "messages" column or "prompt"\+"answer" columns .*found'):
        LMDataModule({**src, "data_files": str(tmp_path / "e.parquet")}, **(kw | {"format": "sft"}),
                     response_field="answer").setup("fit")


def test_tokenization_is_cached_and_reused(tmp_path, corpus, monkeypatch):
    """A second launch on the same data and tokenizer reads the tokenized Arrow file instead of re-tokenizing."""
    from src.data import tokenized

    first = _pretrain_dm(tmp_path, corpus)
    first.setup("fit")
    assert list((tmp_path / "cache" / "tokenized").glob("*.arrow"))
    args = dict(source=first.source, tokenizer={"vocab_size": 300}, seq_len=32, batch_size=4, val_fraction=0.1,
                seed=0, cache_dir=str(tmp_path / "cache"))  # the same file: the same content key

    def boom(self, batch, indices):
        raise AssertionError("re-tokenized although the cache holds this exact dataset")

    monkeypatch.setattr(tokenized.TextTokenize, "__call__", boom)
    again = LMDataModule(**args)
    again.setup("fit")
    a, b = next(iter(first.train_dataloader())), next(iter(again.train_dataloader()))
    assert torch.equal(a["input_ids"], b["input_ids"])
    changed = LMDataModule(**(args | {"seed": 5}))  # another split: other records, so it must tokenize (and fail)
    changed._tokenizer = again.tokenizer  # the same tokenizer: only the split's fingerprint can tell them apart
    with pytest.raises(AssertionError, match="re-tokenized"):
        changed.setup("fit")


def test_seed_worker_streams_are_distinct_and_reproducible():
    """Every (base seed, rank, worker) gets its own python/numpy/torch stream, the same on every launch."""
    import random

    import numpy as np

    from src.data.lm_datamodule import seed_worker

    def draws(base, rank, worker):
        seed_worker(worker, base_seed=base, rank=rank)
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    keys = [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0)]
    streams = [draws(*k) for k in keys]
    assert len({s for stream in streams for s in stream}) == 3 * len(keys)
    assert [draws(*k) for k in keys] == streams


def test_resume_on_other_training_data_says_so_once(tmp_path, corpus, caplog):
    dm = _pretrain_dm(tmp_path, corpus)
    dm.setup("fit")
    state = dm.state_dict()
    assert state["data"] and state["samples_consumed"] == 0

    same = LMDataModule(source={"kind": "file", "path": str(tmp_path / "train.jsonl")}, tokenizer={"vocab_size": 300},
                        seq_len=32, batch_size=4, val_fraction=0.1, seed=0, cache_dir=str(tmp_path / "cache"))
    same.load_state_dict(state)
    with caplog.at_level("WARNING", logger="src.data.lm_datamodule"):
        same.train_dataloader()
    assert "differs from the checkpoint" not in caplog.text  # the same data: silent

    edited = _pretrain_dm(tmp_path, [t.upper() for t in corpus])  # same file name, other records
    edited.load_state_dict(state)
    with caplog.at_level("WARNING", logger="src.data.lm_datamodule"):
        edited.train_dataloader()
        edited.train_dataloader()  # a second loader (next epoch) does not repeat it
    assert caplog.text.count("the training data differs from the checkpoint's") == 1
    assert "resume with the data settings the run started with" in caplog.text
