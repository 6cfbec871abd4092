"""The objective seam: a new objective implements only `compute_loss`, and callbacks read its typed StepOutput."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loops.optimization.automatic import ClosureResult
from torch.utils.data import DataLoader

from src.callbacks.artifacts import RunArtifacts
from src.models.logprobs import batch_logprobs
from src.models.objective import Objective, StepOutput
from tests.models.components.conftest import VOCAB, tiny_compact


class SequenceNLL(Objective):
    """A toy objective: the mean over *sequences* of each sequence's summed NLL (denominator = sequences)."""

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        tl = batch_logprobs(self.backbone, batch, kernel=self.kernel)
        per_seq = -tl.logp.sum(-1)  # [B]
        return StepOutput(per_seq.sum(), torch.tensor(per_seq.numel()), capacity=per_seq.numel(),
                          metrics={"tokens": tl.mask.sum().float()})


def _batches(n: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        start = torch.randint(0, 8, (4, 1), generator=g)
        ids = (start + torch.arange(9)) % 8  # [4, 9] counting mod 8: every next token but the first is determined
        out.append({"input_ids": ids[:, :-1], "labels": ids[:, 1:].clone()})
    return out


def test_step_output_is_a_ratio_and_survives_lightnings_outputs() -> None:
    out = StepOutput(torch.tensor(6.0), torch.tensor(3), capacity=8, metrics={"m": torch.tensor(1.0)})
    assert float(out.loss) == 2.0
    assert float(StepOutput(torch.tensor(0.0), torch.tensor(0), capacity=8).loss) == 0.0  # empty: 0, not NaN
    # What a callback receives in on_train_batch_end is Lightning's processed training_step output.
    received = ClosureResult.from_training_step_output({"loss": torch.tensor(2.0), "step": out}).asdict()
    assert StepOutput.of(received) is out
    assert StepOutput.of({"loss": torch.tensor(1.0)}) is None and StepOutput.of(None) is None


def test_an_objective_implementing_only_its_loss_trains_and_gets_run_artifacts(tmp_path: Path) -> None:
    module = SequenceNLL(tiny_compact(vocab_size=VOCAB).train(),
                         optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2))
    batches = _batches(8)
    trainer = pl.Trainer(max_steps=30, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[RunArtifacts()],
                         default_root_dir=str(tmp_path), num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 30
    # RunArtifacts recorded the objective's own loss (per-sequence NLL, ~8 tokens x ln V at the start)...
    assert metrics["train/loss_first"] > 8 * 2.0
    # ...and learning happened: counting is learned (uniform over the 8 symbols would be 8·ln 8 ≈ 16.6).
    assert metrics["train/loss_last10"] < 0.5 * 8 * torch.log(torch.tensor(8.0)).item()
    assert (tmp_path / "loss_curve.png").is_file()
    assert not (tmp_path / "samples.txt").exists()  # the toy objective cannot sample: nothing is invented


def test_causal_lm_samples_through_its_own_sampler() -> None:
    from src.models.lm import CausalLMModule

    class Tok:  # the three things sample_ids/sample need from a tokenizer
        pad_id, eos_id, special_ids = 0, 1, (0, 1)

        def encode(self, text: str) -> list[int]:
            return [2 + (ord(c) % 40) for c in text]

        def decode(self, ids: list[int]) -> str:
            return " ".join(map(str, ids))

    module = CausalLMModule(tiny_compact(), optimizer=torch.optim.AdamW, tokenizer=Tok()).eval()
    rows = module.sample_ids([[5, 6, 7], [8]], max_new_tokens=4)
    assert len(rows) == 2 and all(len(r) == 4 for r in rows)
    texts = module.sample(["abc", "d"], max_new_tokens=4)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    bidirectional = CausalLMModule(tiny_compact(causal=False), optimizer=torch.optim.AdamW, tokenizer=Tok())
    assert bidirectional.sample(["abc"]) is None  # no autoregressive decoding of a bidirectional model


def test_rng_states_round_trip_through_a_weights_only_checkpoint() -> None:
    """Exact resume restores python/numpy/torch RNGs from a checkpoint read with weights_only=True (nothing is
    unpickled; the legacy pickled form is ignored)."""
    import io
    import random

    import numpy as np
    from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states

    from src.models.objective import rng_state_from_checkpoint, rng_state_to_checkpoint

    random.seed(3)
    np.random.seed(4)
    np.random.randn()  # numpy caches a Gaussian: its state has has_gauss = 1
    torch.manual_seed(5)
    buf = io.BytesIO()
    torch.save({"rng": rng_state_to_checkpoint(_collect_rng_states())}, buf)
    draws = lambda: (random.random(), float(np.random.randn()), float(torch.rand(1)))  # noqa: E731
    first = draws()
    buf.seek(0)
    _set_rng_states(rng_state_from_checkpoint(torch.load(buf, weights_only=True)["rng"]))
    assert draws() == first
