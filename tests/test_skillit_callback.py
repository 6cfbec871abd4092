"""Skill-It wired through the real config: mid-run mixture changes reach the data, resume keeps the mixture,
two DDP CPU ranks agree on every weight."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from src.callbacks.skills.evaluation import SkillEvalCallback
from src.callbacks.skills.skillit import SkillItCallback
from src.data.skills_graph import skillit_mixture
from src.models.objective import StepOutput
from src.runtime.build import build_components
from src.runtime.checkpoints import resolve_ckpt_path
from tests.helpers import compose_cfg

TINY = [
    "experiment=skillit/lego", "trainer.accelerator=cpu", "callbacks.progress_bar=null",
    "callbacks.run_artifacts.sample_max_new_tokens=0", "model.d_model=32", "model.n_layers=1",
    "data.n_train=550", "data.n_val_per_skill=8", "data.batch_size=8", "data.tokenizer.vocab_size=280",
    "trainer.max_steps=8", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
    "skillit.rounds=4", "skillit.window=2", "method.scheduler.warmup_steps=2", "trainer.enable_model_summary=false",
]


class _Record(pl.Callback):
    """Keeps the dataset indices of every trained batch (via the sampler's schedule) and the step losses."""

    def __init__(self) -> None:
        self.skills: list[list[int]] = []
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.skills.append(batch["skill"].tolist())
        self.losses.append(float(StepOutput.of(outputs).loss))  # this micro-batch's token mean


class _StopAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:  # noqa: ANN001, ANN002
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _fit(cfg, extra=(), ckpt=None):  # noqa: ANN001, ANN202
    pl.seed_everything(cfg.seed, workers=True)
    dm, module, trainer = build_components(cfg)
    trainer.callbacks.extend(extra)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    return dm, trainer, next(c for c in trainer.callbacks if isinstance(c, SkillEvalCallback))


def test_callback_changes_the_sampler_mid_epoch_by_the_update_rule(run_dir: Path, caplog) -> None:  # noqa: ANN001
    rec = _Record()
    dm, trainer, cb = _fit(compose_cfg(TINY, run_dir), [rec])
    # 2-step rounds, evaluations every 2 steps, window 2: round 2's window holds the step-0 evaluation
    assert "round 2's window of 2 evaluations still holds the step-0 one" in caplog.text
    assert isinstance(cb, SkillItCallback)
    assert [m["step"] for m in cb.mixtures] == [0, 2, 4, 6]  # round 1 at fit start, then T-1 = 3 updates
    graph = np.asarray(dm.skills_graph)
    np.testing.assert_allclose(cb.mixtures[0]["weights"], skillit_mixture(graph, None, 0.5), rtol=1e-9)
    for m in cb.mixtures[1:]:  # each round: the rule over the last w=2 evaluations up to that step
        window = [e["loss"] for e in cb.evals if e["step"] <= m["step"]][-2:]
        np.testing.assert_allclose(m["weights"], skillit_mixture(graph, np.array(window), 0.5), rtol=1e-9)
    # the sampler took every change, mid-stream, and the trained batches are exactly the schedule's samples
    sched = dm.sampler.schedule_state()
    assert len(sched) == 4 and sched[1][0] > 0
    drawn = dm.sampler.global_indices(0, 8 * 8)
    assert rec.skills == [[dm.sampler.skill_of(i) for i in drawn[8 * s: 8 * s + 8]] for s in range(8)]
    assert [e["step"] for e in cb.evals] == [0, 2, 4, 6, 8]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["skill/acc_mean"] <= 1.0 and "skill/loss_skill5" in metrics
    assert (run_dir / "skill_mixture.png").is_file() and (run_dir / "skills.json").is_file()


class _Killed(pl.Callback):
    """Stands in for a deadline: the process dies after step 5, before fit's end hooks run."""

    def on_train_batch_end(self, trainer, *args) -> None:  # noqa: ANN001, ANN002
        if trainer.global_step == 5:
            raise KeyboardInterrupt


def test_a_run_killed_mid_training_keeps_its_history_up_to_its_last_evaluation(run_dir: Path) -> None:
    """skills.json is written at every evaluation, so a job stopped at a GPU lease's deadline still has a table."""
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        _fit(compose_cfg(TINY, run_dir), [_Killed()])
    history = json.loads((run_dir / "skills.json").read_text())
    assert [e["step"] for e in history["evals"]] == [0, 2, 4] and history["finished"] is False
    assert [m["step"] for m in history["mixtures"]] == [0, 2, 4]


def test_without_the_step0_evaluation_the_first_window_holds_only_trained_losses(run_dir: Path,
                                                                                 caplog) -> None:  # noqa: ANN001
    """`eval_at_start=false`: no evaluation of the untrained model, so round 2 uses the step-2 losses alone."""
    dm, _, cb = _fit(compose_cfg([*TINY, "curriculum.callback.eval_at_start=false"], run_dir))
    assert "still holds the step-0 one" not in caplog.text
    assert [e["step"] for e in cb.evals] == [2, 4, 6, 8]
    graph = np.asarray(dm.skills_graph)
    np.testing.assert_allclose(cb.mixtures[1]["weights"],
                               skillit_mixture(graph, np.array([cb.evals[0]["loss"]]), 0.5), rtol=1e-9)


def test_resume_keeps_the_mixture_and_the_trajectory(tmp_path: Path) -> None:
    straight_rec, resumed_rec = _Record(), _Record()
    _, _, straight = _fit(compose_cfg([*TINY, "data.num_workers=1"], tmp_path / "a"), [straight_rec])
    _fit(compose_cfg([*TINY, "data.num_workers=1"], tmp_path / "b"), [_StopAt(4)])  # stops right at a round start
    ckpt = resolve_ckpt_path("last", tmp_path / "b", tmp_path / "logs")
    dm, _, resumed = _fit(compose_cfg([*TINY, "data.num_workers=1"], tmp_path / "b"), [resumed_rec], ckpt)
    assert resumed.mixtures == straight.mixtures  # same rounds, same weights, same switch positions
    assert [e["step"] for e in resumed.evals] == [e["step"] for e in straight.evals]
    assert resumed_rec.skills == straight_rec.skills[4:]  # same samples after the resume
    torch.testing.assert_close(torch.tensor(resumed_rec.losses), torch.tensor(straight_rec.losses[4:]),
                               rtol=0, atol=1e-5)


class _DumpMixtures(pl.Callback):
    def __init__(self, out: str) -> None:
        self.out = out

    def on_fit_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        cb = next(c for c in trainer.callbacks if isinstance(c, SkillEvalCallback))
        sched = trainer.datamodule.sampler.schedule_state()
        Path(self.out, f"rank{trainer.global_rank}.json").write_text(
            json.dumps({"mixtures": cb.mixtures, "evals": cb.evals, "schedule": sched}))


def _dump_run(overrides: list[str], run_dir: Path, dump: Path) -> None:
    cfg = compose_cfg([*TINY, "data.n_val_per_skill=7", "skillit.rounds=3", *overrides], run_dir)
    pl.seed_everything(cfg.seed, workers=True)
    dm, module, trainer = build_components(cfg)
    trainer.callbacks.append(_DumpMixtures(str(dump)))
    trainer.fit(module, datamodule=dm)


def test_two_ddp_ranks_use_identical_weights(tmp_path: Path) -> None:
    """7 validation questions per skill: the ranks' shards hold 4 and 3, so only a sum-then-divide reduction gives
    the single process's step-0 losses (a mean of the two shard means would not)."""
    _dump_run(["trainer.devices=2", "strategy.name=ddp_spawn", "trainer.max_steps=6"], tmp_path / "run",
              tmp_path)
    (tmp_path / "single").mkdir()
    _dump_run(["trainer.max_steps=1"], tmp_path / "run1", tmp_path / "single")
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert len(r0["mixtures"]) == 3 and r0["mixtures"][1]["weights"] != r0["mixtures"][0]["weights"]
    assert r0 == r1  # same evaluations (all-reduced), same weights, same switch positions on both ranks
    one = json.loads((tmp_path / "single" / "rank0.json").read_text())
    assert r0["evals"][0]["step"] == one["evals"][0]["step"] == 0  # the untrained model, same initial weights
    for key in ("loss", "acc"):
        np.testing.assert_allclose(r0["evals"][0][key], one["evals"][0][key], rtol=1e-5, atol=1e-7)


def test_mixture_switch_reduces_an_exact_position_on_the_strategy_device() -> None:
    """The all-reduce of the switch position must run on the strategy's device (NCCL refuses CPU tensors) and in
    int64 (float32 rounds positions above 2**24); the record says from which step the new mixture trains."""
    from types import SimpleNamespace

    seen: dict[str, torch.Tensor] = {}
    pos = 2**24 + 1  # float32 would make it 2**24

    def reduce(t: torch.Tensor, reduce_op: str) -> torch.Tensor:
        seen["t"] = t
        return torch.tensor(pos, dtype=torch.long)

    class DM:
        batch_size, skill_names = 8, ["s1", "s2"]
        sampler = SimpleNamespace(next_undrawn_position=lambda: pos)

        def set_mixture(self, w: np.ndarray, from_position: int | None = None) -> int:
            self.w, self.pos = w, from_position
            return from_position

        def current_weights(self) -> np.ndarray:
            return self.w

    dm = DM()
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta"), reduce=reduce),
                              accumulate_grad_batches=2, world_size=1, global_rank=1, max_steps=10**7, loggers=[])
    cb = SkillItCallback(rounds=4)
    cb._set_mixture_everywhere(trainer, dm, np.array([0.25, 0.75]), step=1_048_000)
    assert seen["t"].device.type == "meta" and seen["t"].dtype == torch.long
    assert dm.pos == pos
    assert cb.mixtures[-1]["applies_from_step"] == -(-pos // 16)  # 16 samples per optimizer step


def test_every_rank_runs_as_many_evaluation_batches_as_the_busiest_one() -> None:
    """Sharded strategies gather parameters in every forward: a rank with one batch fewer than the others would
    hang them. The short rank repeats the skill's first batch, and those repeats do not count."""
    import types

    import torch

    from src.callbacks.skills.evaluation import rank_batches

    shards = {(0, 2): ["a0", "a1", "a2"], (1, 2): ["b0"], (0, 1): ["first", "x"]}  # (rank, world) -> batches
    dm = types.SimpleNamespace(skill_val_batches=lambda skill, rank, world: iter(shards[(rank, world)]))
    seen = []

    def reduce(tensor, reduce_op):
        seen.append((float(tensor), reduce_op))
        return torch.tensor(3.0)  # the busiest rank has 3 batches

    trainer = types.SimpleNamespace(strategy=types.SimpleNamespace(root_device=torch.device("cpu"), reduce=reduce))
    assert rank_batches(trainer, dm, 0, 1, 2) == [("b0", True), ("first", False), ("first", False)]
    assert rank_batches(trainer, dm, 0, 0, 2) == [("a0", True), ("a1", True), ("a2", True)]
    assert seen == [(1.0, torch.distributed.ReduceOp.MAX), (3.0, torch.distributed.ReduceOp.MAX)]
    single = types.SimpleNamespace(strategy=None)  # one process: no collective at all
    assert rank_batches(single, dm, 0, 0, 1) == [("first", True), ("x", True)]
