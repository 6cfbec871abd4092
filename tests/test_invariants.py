"""Layer 7: how the global batch is split must not change training.

Same global batch of 8 packed rows per optimizer step, three ways: one process with batch 8; one process with
batch 4 x 2 accumulated micro-batches; two CPU processes (DDP over gloo) with batch 4 each; and DeepSpeed ZeRO-2 /
ZeRO-3 on two CPU processes. The sampler hands each step the same 8 rows however they are split
(src/data/sampler.py), so each must give the same per-step loss and the same final weights.

Why equality is exact in exact arithmetic here: the causal-LM loss is a per-micro-batch token mean, DDP averages
the ranks' gradients and accumulation averages the micro-batches' — a mean of means, which equals the global token
mean only if every micro-batch carries the same number of label tokens. The corpus below is one long document, so
every packed row is full (no document boundary, no padding) and every micro-batch holds exactly batch x seq_len
labels; the tests assert that precondition on the batches actually used. (With document boundaries or SFT
masking, micro-batches differ in token count and the split does change the weighting: see docs/scaleout.md.)

Resume: a run interrupted after 3 steps and resumed from its last checkpoint (DDP, ZeRO-2, ZeRO-3, FSDP2) ends where
the uninterrupted 6-step DDP run ends: same losses after the resume, same final weights.

Tolerances: everything runs in fp32; the splits differ only in the order of float additions (a gradient summed
over 8 rows vs two sums of 4 added by gloo or by accumulation), ~1e-7 relative per step, which AdamW (dividing by
sqrt(v)) amplifies most on rarely-updated weights over 6 steps at lr 3e-3. Measured differences are stated next to
each tolerance; a real bug (a missing gradient, a wrong data split) moves weights by ~lr = 3e-3 per step.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from tests.distributed import PROBE, final_weights, step_losses, token_counts, train_subprocess

STEPS = 6
GLOBAL_BATCH = 8
SEQ_LEN = 32
# Losses 5.85 -> 4.92 nats over the 6 steps. Measured max |Δ| (tests/test_invariants.py, 2 CPU cores):
# DDP vs single 7.2e-7, accumulation vs single 4.8e-7, ZeRO-2 vs DDP 2.4e-7, ZeRO-3 vs DDP 4.8e-7,
# FSDP2 vs DDP 2.4e-7.
LOSS_ATOL = 2e-5
# Measured max |Δ| of any weight after 6 steps: DDP vs single 1.6e-5, accumulation vs single 1.2e-7,
# ZeRO-2 vs DDP 6e-8, ZeRO-3 vs DDP 9.9e-6, FSDP2 vs DDP 7.5e-9.
WEIGHT_ATOL = 1e-4

_WORDS = ["the", "cat", "dog", "sat", "ran", "on", "a", "mat", "log", "big", "small", "red", "blue", "and", "then",
          "it", "was", "very", "happy", "sad", "tom", "mia", "saw", "went", "to", "park", "home", "day", "night",
          "sun", "moon", "tree"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two long documents (train / val): every packed row of the train split is full, none spans a boundary."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "one_long_document.jsonl"
    docs = [" ".join(rng.choice(_WORDS) for _ in range(12000)) for _ in range(2)]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


def common(corpus: Path) -> list[str]:
    """A ~150k-parameter model on 32-token rows: each run is a few seconds of compute."""
    return [
        "data=jsonl", f"data.source.path={corpus}", "data.val_fraction=0.5", "data.num_workers=0",
        "data.num_proc=null", f"data.seq_len={SEQ_LEN}",
        "model.d_model=64", "model.n_layers=2", "model.n_heads=2",
        f"trainer.max_steps={STEPS}", "trainer.val_check_interval=3", "trainer.limit_val_batches=1",
        "trainer.accelerator=cpu", "trainer.enable_model_summary=false", "trainer.enable_progress_bar=false",
        "method.scheduler.warmup_steps=1", "callbacks.progress_bar=null",
        "callbacks.run_artifacts.sample_max_new_tokens=0", PROBE,
    ]


def two_processes(strategy: str) -> list[str]:
    """2 CPU ranks x batch 4. ZeRO-3 with every weight partitioned (the default keeps small tensors whole, which
    for this model would be all of them), so the objective's use of the output weight outside the backbone's
    forward is really exercised, gradients included."""
    extra = ["strategy.zero_config.stage3_param_persistence_threshold=0"] if "zero3" in strategy else []
    return [f"data.batch_size={GLOBAL_BATCH // 2}", f"strategy={strategy}", "trainer.devices=2", *extra]


def assert_same_training(ref: Path, other: Path, ref_accumulate: int = 1, other_accumulate: int = 1) -> None:
    a, b = step_losses(ref, ref_accumulate), step_losses(other, other_accumulate)
    assert sorted(b) == list(range(1, STEPS + 1)) and sorted(a) == sorted(b)
    # Not vacuous: the runs trained (the loss moved by far more than the tolerance) ...
    assert a[1] - a[STEPS] > 1000 * LOSS_ATOL
    # ... along the same trajectory, to the same weights.
    torch.testing.assert_close(torch.tensor([b[s] for s in a]), torch.tensor(list(a.values())), rtol=0,
                               atol=LOSS_ATOL)
    wa, wb = final_weights(ref), final_weights(other)
    assert wa.keys() == wb.keys()
    # The measured differences quoted above and in docs/scaleout.md: `pytest tests/test_invariants.py -s`.
    print(f"\n{other.name} vs {ref.name}: max |Δ| loss {max(abs(b[s] - a[s]) for s in a):.2g}, "
          f"weights {max(float((wb[n] - wa[n]).abs().max()) for n in wa):.2g}")
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=0, atol=WEIGHT_ATOL, msg=name)


@pytest.fixture(scope="module")
def single(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Reference: one process, the whole global batch in one micro-batch."""
    run = train_subprocess(tmp_path_factory.mktemp("single"), [*common(corpus), f"data.batch_size={GLOBAL_BATCH}"])
    assert token_counts(run) == {GLOBAL_BATCH * SEQ_LEN}  # precondition: every row full
    return run


@pytest.fixture(scope="module")
def ddp(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = train_subprocess(tmp_path_factory.mktemp("ddp"), [*common(corpus), *two_processes("ddp")])
    assert token_counts(run) == {GLOBAL_BATCH // 2 * SEQ_LEN}
    return run


def test_ddp_two_processes_match_one_process(single: Path, ddp: Path) -> None:
    """2 CPU processes x batch 4 == 1 process x batch 8: same per-step loss, same weights after 6 steps."""
    assert_same_training(single, ddp)


def test_micro_batch_times_accumulation_matches_one_batch(single: Path, tmp_path: Path, corpus: Path) -> None:
    """batch 4 x accumulate 2 == batch 8: same per-step loss, same weights after 6 steps."""
    run = train_subprocess(tmp_path / "accum", [
        *common(corpus), f"data.batch_size={GLOBAL_BATCH // 2}", "trainer.accumulate_grad_batches=2"])
    assert token_counts(run) == {GLOBAL_BATCH // 2 * SEQ_LEN}
    assert_same_training(single, run, other_accumulate=2)


@pytest.mark.parametrize("strategy", ["deepspeed_zero2", "deepspeed_zero3"])
def test_deepspeed_matches_ddp(strategy: str, ddp: Path, tmp_path: Path, corpus: Path) -> None:
    """ZeRO-2 / ZeRO-3 on 2 CPU processes train the same model as DDP; their sharded checkpoint, consolidated by
    src.runtime.convert_checkpoint, holds DDP's weights."""
    run = train_subprocess(tmp_path / strategy, [*common(corpus), *two_processes(strategy)])
    assert (run / "checkpoints" / "last.ckpt").is_dir()  # really a DeepSpeed (sharded) checkpoint
    assert_same_training(ddp, run)


def test_fsdp2_matches_ddp(ddp: Path, tmp_path: Path, corpus: Path) -> None:
    """FSDP2 (every block and the root sharded over 2 CPU processes) trains the same model as DDP, with the fused
    kernel reading the output weight outside the backbone's forward; its sharded checkpoint consolidates to DDP's
    weights, and generation after training (which bypasses forward's gather hooks) works on the sharded model."""
    run = train_subprocess(tmp_path / "fsdp", [*common(corpus), *two_processes("fsdp"),
                                               "callbacks.run_artifacts.sample_max_new_tokens=4"])
    assert (run / "checkpoints" / "last.ckpt" / ".metadata").is_file()  # really a sharded (DCP) checkpoint
    assert_same_training(ddp, run)
    assert "###" in (run / "samples.txt").read_text()


@pytest.mark.parametrize("strategy", ["ddp", pytest.param("deepspeed_zero2", marks=pytest.mark.heavy),
                                      pytest.param("deepspeed_zero3", marks=pytest.mark.heavy), "fsdp"])
def test_resume_matches_uninterrupted_run(strategy: str, ddp: Path, tmp_path: Path, corpus: Path) -> None:
    """Stop after 3 of 6 steps, resume with ckpt_path=last: steps 4-6 and the final weights are the
    uninterrupted DDP run's (for ZeRO this also restores the sharded optimizer state: Adam's moments matter)."""
    args = [*common(corpus), *two_processes(strategy)]
    run = tmp_path / strategy
    train_subprocess(run, [*args, "+callbacks.stop._target_=tests.distributed.StopAtStep", "+callbacks.stop.step=3"])
    assert set(step_losses(run)) == {1, 2, 3}
    train_subprocess(run, [*args, "ckpt_path=last"])
    resumed, straight = step_losses(run), step_losses(ddp)
    assert set(resumed) == {4, 5, 6}  # continued from step 3, did not start over
    torch.testing.assert_close(torch.tensor([resumed[s] for s in (4, 5, 6)]),
                               torch.tensor([straight[s] for s in (4, 5, 6)]), rtol=0, atol=LOSS_ATOL)
    wa, wb = final_weights(ddp), final_weights(run)
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=0, atol=WEIGHT_ATOL, msg=name)


# Gradient clipping. AdamW hardly depends on the gradient's scale, so the tests above cannot tell whether a strategy
# clips by the right norm. With plain SGD and a threshold far below the gradient norm, every update is
# lr * CLIP * g / |g|: a strategy that got the global norm wrong (e.g. a rank's local shard norm, ~1/sqrt(2) of it
# here) moves the weights by a different amount. SGD does not amplify round-off, so the tolerance is tight.
CLIP = 0.05
SGD = ["method.optimizer._target_=torch.optim.SGD", "~method.optimizer.betas", "~method.optimizer.eps",
       "method.optimizer.weight_decay=0",
       "method.optimizer.lr=2.0"]
# Measured (2026-11-23): every strategy 7.5e-9 from the single process (one float32 ulp); the sqrt(2) threshold
# 8.1e-3 away, no clipping 0.79 away.
CLIP_WEIGHT_ATOL = 1e-6


def _clipped(corpus: Path, clip: float) -> list[str]:
    return [*common(corpus), *SGD, f"trainer.gradient_clip_val={clip}"]


@pytest.fixture(scope="module")
def clipped_single(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_subprocess(tmp_path_factory.mktemp("clip_single"),
                            [*_clipped(corpus, CLIP), f"data.batch_size={GLOBAL_BATCH}"])


def _max_weight_diff(a: Path, b: Path) -> float:
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    return max(float((wb[n] - wa[n]).abs().max()) for n in wa)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_gradient_clipping_uses_the_global_norm(strategy: str, clipped_single: Path, tmp_path: Path,
                                                corpus: Path) -> None:
    """Clipped SGD over 2 processes ends at the single-process weights; a threshold sqrt(2) larger (what a
    local-shard norm would amount to) ends far away, so the comparison can tell the norms apart."""
    if strategy == "ddp":  # the sensitivity check, once: same run with the threshold scaled by sqrt(2)
        off = train_subprocess(tmp_path / "off", [*_clipped(corpus, CLIP * 2**0.5), f"data.batch_size={GLOBAL_BATCH}"])
        assert _max_weight_diff(clipped_single, off) > 100 * CLIP_WEIGHT_ATOL
    run = train_subprocess(tmp_path / strategy, [*_clipped(corpus, CLIP), *two_processes(strategy)])
    diff = _max_weight_diff(clipped_single, run)
    print(f"\nclipped SGD, {strategy} vs one process: max |Δ| weights {diff:.2g}")
    assert diff < CLIP_WEIGHT_ATOL


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_resume_on_half_the_processes_with_twice_the_accumulation(strategy: str, ddp: Path, tmp_path: Path,
                                                                  corpus: Path) -> None:
    """Saved by 2 processes x batch 4, resumed by 1 process x batch 4 x accumulation 2 (same global batch): steps
    4-6 are the uninterrupted run's. FSDP2: its sharded checkpoint is resharded from 2 ranks onto 1. Without the
    window alignment (src/callbacks/accumulation.py) the first resumed step took a single micro-batch (step-4 loss
    off by 1.3e-2, final weights by 3.2e-3)."""
    run = tmp_path / strategy
    stop = ["+callbacks.stop._target_=tests.distributed.StopAtStep", "+callbacks.stop.step=3"]
    train_subprocess(run, [*common(corpus), *two_processes(strategy), *stop])
    one = "strategy=auto" if strategy == "ddp" else f"strategy={strategy}"
    train_subprocess(run, [*common(corpus), one, "trainer.devices=1", f"data.batch_size={GLOBAL_BATCH // 2}",
                           "trainer.accumulate_grad_batches=2", "ckpt_path=last"])
    resumed, straight = step_losses(run, accumulate=2), step_losses(ddp)
    assert set(resumed) == {4, 5, 6}
    torch.testing.assert_close(torch.tensor([resumed[s] for s in (4, 5, 6)]),
                               torch.tensor([straight[s] for s in (4, 5, 6)]), rtol=0, atol=LOSS_ATOL)
    wa, wb = final_weights(ddp), final_weights(run)
    diff = max(float((wb[n] - wa[n]).abs().max()) for n in wa)
    print(f"\nresume {strategy} 2x4 -> 1x4x2: max |Δ| weights {diff:.2g}")
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=0, atol=WEIGHT_ATOL, msg=name)


# ---- SFT: micro-batches with very different label counts ------------------------------------------------------------
# With prompt masking a micro-batch may hold 3x the labels of its neighbour. `method.loss_normalization=step` (the
# default, src/models/token_normaliser.py) optimises the token mean of the whole step, so any split trains the same
# model; `micro_batch` (the mean of micro-batch means, plain DDP + accumulation) does not.


@pytest.fixture(scope="module")
def sft_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prompt/response records with 1- to 20-word responses."""
    rng = random.Random(1)
    path = tmp_path_factory.mktemp("sft") / "uneven_responses.jsonl"
    recs = [{"prompt": " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 6))) + " ?",
             "response": " " + " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 20)))} for _ in range(400)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def sft_common(path: Path) -> list[str]:
    """The runs above, on prompt/response records (responses only carry labels) with a small trained tokenizer."""
    base = common(path)
    assert base[0] == "data=jsonl"
    return ["data=sft_jsonl", *base[1:], "~data.tokenizer.pretrained", "+data.tokenizer.vocab_size=300"]


@pytest.fixture(scope="module")
def sft_single(sft_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_subprocess(tmp_path_factory.mktemp("sft_single"),
                            [*sft_common(sft_corpus), f"data.batch_size={GLOBAL_BATCH}"])


def _uneven(run: Path) -> None:
    """Precondition: the micro-batches' label counts really differ (else every normalisation agrees)."""
    counts = token_counts(run)
    assert len(counts) > 3 and max(counts) > 1.5 * min(counts), counts


def test_sft_accumulation_matches_one_batch_with_uneven_label_counts(sft_single: Path, sft_corpus: Path,
                                                                     tmp_path: Path) -> None:
    """batch 4 x accumulate 2 == batch 8 on SFT data; with loss_normalization=micro_batch it is not (the check
    can fail: the micro-batches' means are weighted equally however many labels each holds)."""
    args = [*sft_common(sft_corpus), f"data.batch_size={GLOBAL_BATCH // 2}", "trainer.accumulate_grad_batches=2"]
    run = train_subprocess(tmp_path / "step", args)
    _uneven(run)
    assert_same_training(sft_single, run, other_accumulate=2)
    mean_of_means = train_subprocess(tmp_path / "micro", [*args, "method.loss_normalization=micro_batch"])
    diff = _max_weight_diff(sft_single, mean_of_means)
    print(f"\nSFT, mean of micro-batch means vs one batch: max |Δ| weights {diff:.2g}")
    assert diff > 10 * WEIGHT_ATOL


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_sft_two_processes_match_one_process_with_uneven_label_counts(strategy: str, sft_single: Path,
                                                                     sft_corpus: Path, tmp_path: Path) -> None:
    """2 ranks x batch 4 == 1 x batch 8 on SFT data: the label count is all-reduced before the optimizer step."""
    run = train_subprocess(tmp_path / strategy, [*sft_common(sft_corpus), *two_processes(strategy)])
    _uneven(run)
    assert_same_training(sft_single, run)



# Plain SGD without clipping: the update is the gradient times lr, so a gradient of the wrong scale on some rank (the
# step's label count not all-reduced, each rank dividing by its own) moves the weights. AdamW normalises each
# coordinate and clipping rescales the whole gradient, which together hid such a bug from the tests above.
SGD = ["method.optimizer._target_=torch.optim.SGD", "~method.optimizer.betas", "~method.optimizer.eps",
       "method.optimizer.lr=0.1", "method.optimizer.weight_decay=0.0", "trainer.gradient_clip_val=null"]


@pytest.mark.heavy
def test_sft_two_processes_match_one_process_under_plain_sgd(sft_corpus: Path, tmp_path: Path) -> None:
    """2 ranks x batch 4 == 1 x batch 8 on SFT data (uneven label counts) with SGD and no clipping: the gradient
    itself, not only its direction, is the global token mean's."""
    single = train_subprocess(tmp_path / "single", [*sft_common(sft_corpus), *SGD, f"data.batch_size={GLOBAL_BATCH}"])
    run = train_subprocess(tmp_path / "ddp", [*sft_common(sft_corpus), *SGD, *two_processes("ddp")])
    _uneven(run)
    assert_same_training(single, run)
