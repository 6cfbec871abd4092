"""fp32 master weights for bf16-true training (src/models/master_weights.py): small updates are kept, the
scheduler's lr reaches the inner optimizer, and the masters survive a checkpoint."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from src.callbacks.artifacts import RunArtifacts
from src.models.master_weights import MasterWeights, master_weight_adamw
from src.models.schedules import warmup_cosine
from src.runtime.build import build_components
from tests.helpers import compose_cfg


def _sgd_steps(opt: torch.optim.Optimizer, p: torch.Tensor, n: int) -> None:
    for _ in range(n):
        p.grad = torch.ones_like(p)
        opt.step()
        opt.zero_grad()


def test_keeps_updates_that_bf16_weights_round_away() -> None:
    """The docstring's hand example: SGD lr 1e-3 on a bf16 weight of 1.0 with gradient 1.0."""
    plain = torch.nn.Parameter(torch.ones(1, dtype=torch.bfloat16))
    _sgd_steps(torch.optim.SGD([plain], lr=1e-3), plain, 2)
    assert plain.item() == 1.0  # 0.999 rounds back to 1.0 every time: bf16 SGD never moves

    p = torch.nn.Parameter(torch.ones(1, dtype=torch.bfloat16))
    opt = MasterWeights([p], lambda g: torch.optim.SGD(g, lr=1e-3))
    _sgd_steps(opt, p, 1)
    assert p.item() == 1.0 and opt.masters()[0].dtype == torch.float32
    assert opt.masters()[0].item() == pytest.approx(0.999, abs=1e-7)
    _sgd_steps(opt, p, 1)
    assert p.dtype == torch.bfloat16 and p.item() == 0.99609375  # master 0.998 is nearer 1 - 2^-8 than 1.0
    assert p.grad is None and opt.masters()[0].grad is None  # no fp32 gradient copy lingers between steps


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int, sched: object | None = None) -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 6, generator=g).to(next(model.parameters()).dtype)  # [B, 6]
        model(x).square().mean().backward()
        opt.step()
        if sched is not None:
            sched.step()
        opt.zero_grad(set_to_none=True)


def _groups(model: torch.nn.Module) -> list[dict]:
    return [{"params": [p for p in model.parameters() if p.ndim >= 2]},
            {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0}]


def test_on_fp32_parameters_it_is_adamw_with_the_schedulers_lr() -> None:
    """fp32 masters of fp32 weights: the same trajectory as AdamW itself, warmup-cosine lr included (a scheduler
    whose lr did not reach the inner optimizer would leave it at the base lr and the weights apart)."""
    a, b = _model(), _model()
    kw = {"lr": 1e-2, "betas": (0.9, 0.95), "weight_decay": 0.1}
    ref = torch.optim.AdamW(_groups(a), **kw)
    opt = master_weight_adamw(_groups(b), **kw)
    _train(a, ref, 8, warmup_cosine(ref, warmup_steps=3, total_steps=8))
    _train(b, opt, 8, warmup_cosine(opt, warmup_steps=3, total_steps=8))
    assert opt.param_groups[1]["weight_decay"] == 0.0 and opt.inner.param_groups[1]["weight_decay"] == 0.0
    assert opt.param_groups[0]["lr"] == ref.param_groups[0]["lr"] < 1e-2
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-7)


def test_state_dict_round_trip_resumes_exactly_and_refuses_a_plain_adamw_state() -> None:
    straight = _model().to(torch.bfloat16)
    opt = master_weight_adamw(straight.parameters(), lr=1e-2)
    _train(straight, opt, 3)
    saved_model = {k: v.clone() for k, v in straight.state_dict().items()}
    saved = copy.deepcopy(opt.state_dict())  # torch's state_dict holds references to the live moments
    _train(straight, opt, 3)

    resumed = _model().to(torch.bfloat16)
    resumed.load_state_dict(saved_model)
    opt2 = master_weight_adamw(resumed.parameters(), lr=1e-2)  # masters built from the bf16 weights ...
    opt2.load_state_dict(saved)  # ... and replaced by the saved fp32 ones
    for m, s in zip(opt2.masters(), saved["masters"]):
        assert torch.equal(m, s) and m.dtype == torch.float32
    _train(resumed, opt2, 3)
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)

    plain = torch.optim.AdamW(_model().parameters(), lr=1e-2).state_dict()
    with pytest.raises(ValueError, match="not saved by MasterWeights"):
        opt2.load_state_dict(plain)


def test_bf16_true_run_trains_with_fp32_masters_in_its_checkpoint(run_dir: Path) -> None:
    cfg = compose_cfg(["debug=smoke", "trainer.accelerator=cpu", "trainer.precision=bf16-true",
                       "trainer.max_steps=12", "callbacks.progress_bar=null",
                       "callbacks.run_artifacts.sample_max_new_tokens=0",
                       "method.optimizer._target_=src.models.master_weights.master_weight_adamw",
                       "+method.optimizer.fused=true"], run_dir)
    dm, module, trainer = build_components(cfg)
    trainer.fit(module, datamodule=dm)
    history = next(c for c in trainer.callbacks if isinstance(c, RunArtifacts)).train_history  # [(step, loss)]
    print(f"\nbf16-true + masters: step loss {history[0][1]:.2f} -> {history[-1][1]:.2f}")
    assert history[-1][1] < history[0][1] - 0.5  # it learned
    opt = trainer.optimizers[0]
    assert isinstance(opt, MasterWeights)
    assert all(p.dtype == torch.bfloat16 for p in module.backbone.parameters())
    assert all(m.dtype == torch.float32 for m in opt.masters())
    # the bf16 weights are the masters rounded: the masters carry bits the weights do not
    params = [p for g in opt.param_groups for p in g["params"]]
    assert all(torch.equal(p, m.to(torch.bfloat16)) for p, m in zip(params, opt.masters()))
    assert any(not torch.equal(p.float(), m) for p, m in zip(params, opt.masters()))
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["optimizer_states"][0]["masters"][0].dtype == torch.float32


def test_optimizer_and_parameter_dtypes_that_do_not_fit_are_named(run_dir: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """bf16 parameters under plain AdamW, and fp32 masters of fp32 parameters, each get one warning with the fix;
    the right pairing gets none; a master dtype that is not a float type is refused."""
    master = "src.models.master_weights.master_weight_adamw"
    cases = [("torch.optim.AdamW", torch.bfloat16, "master_weight_adamw"), (master, torch.bfloat16, None),
             (master, torch.float32, "for nothing"), ("torch.optim.AdamW", torch.float32, None)]
    for optimizer, dtype, warning in cases:
        _, module, _ = build_components(compose_cfg(["debug=smoke", "trainer.accelerator=cpu",
                                                     f"method.optimizer._target_={optimizer}"], run_dir))
        module.to(dtype)  # what trainer.precision=bf16-true does before configure_optimizers
        caplog.clear()
        with caplog.at_level("WARNING", logger="src.models.objective"):
            module.configure_optimizers()
        said = [r.getMessage() for r in caplog.records if r.name == "src.models.objective"]
        if warning is None:
            assert not said, (optimizer, dtype, said)
        else:
            assert len(said) == 1 and warning in said[0], (optimizer, dtype, said)
    with pytest.raises(ValueError, match="floating dtype"):
        master_weight_adamw(_model().parameters(), master_dtype="int8", lr=1e-3)
