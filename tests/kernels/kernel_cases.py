"""Shared cases and the error-budget check for the kernel tests (imported by the test modules in this folder).

Error-budget rule (spec): for every quantity, |fused − truth| ≤ |naive same-dtype − truth| + tolerance, where
truth is the reference path in float64 on the very same (already rounded) inputs and upstream gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from src.kernels import reference_token_logprobs, token_logprobs

# Tolerance added to the naive error, relative to the truth's largest magnitude. Naive fp32 errors are ~1e-6
# relative, naive bf16 ones ~1e-2: the slack is well below the naive error itself in both dtypes.
REL_TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-3}


@dataclass(frozen=True)
class Case:
    n: int
    d: int
    v: int
    bias: bool
    temperature: float
    n_ignored: int
    entropy_grad: bool

    @property
    def id(self) -> str:
        return (f"N{self.n}-d{self.d}-V{self.v}-{'bias' if self.bias else 'nobias'}-T{self.temperature}"
                f"-ign{self.n_ignored}-{'Hgrad' if self.entropy_grad else 'Hnograd'}")


# Odd shapes (primes / non-powers of two), ignored rows, T ≠ 1, bias on/off, entropy gradient on/off.
CASES = [
    Case(n=37, d=19, v=101, bias=True, temperature=0.7, n_ignored=5, entropy_grad=True),
    Case(n=23, d=33, v=67, bias=False, temperature=1.0, n_ignored=0, entropy_grad=False),
    Case(n=9, d=5, v=131, bias=True, temperature=1.9, n_ignored=3, entropy_grad=True),
]


def make_inputs(case: Case, dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor | None]:
    """Random inputs with logits of realistic spread (std ≈ 3), rounded to ``dtype`` once."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(case.n, case.d, generator=gen)  # [N, d]
    weight = torch.randn(case.v, case.d, generator=gen) * (3.0 / case.d**0.5)  # [V, d]
    bias = torch.randn(case.v, generator=gen) if case.bias else None  # [V]
    targets = torch.randint(0, case.v, (case.n,), generator=gen)  # [N]
    if case.n_ignored:
        targets[torch.randperm(case.n, generator=gen)[: case.n_ignored]] = -100
    g_logp = torch.randn(case.n, generator=gen)  # [N] arbitrary per-token upstream gradient
    g_ent = torch.randn(case.n, generator=gen)  # [N]
    cast = lambda t: None if t is None else t.to(dtype)
    return dict(hidden=cast(hidden), weight=cast(weight), bias=cast(bias), targets=targets,
                g_logp=cast(g_logp), g_ent=cast(g_ent))


def run_path(fn, inputs: dict, case: Case, dtype: torch.dtype, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Forward + backward of ``fn`` with the case's upstream gradients; returns outputs and grads in float64."""
    leaves = {k: inputs[k].to(device=device, dtype=dtype).detach().requires_grad_(True)
              for k in ("hidden", "weight", "bias") if inputs[k] is not None}
    logp, ent = fn(leaves["hidden"], leaves["weight"], inputs["targets"].to(device), bias=leaves.get("bias"),
                   temperature=case.temperature, with_entropy=True, entropy_grad=case.entropy_grad)
    loss = (logp * inputs["g_logp"].to(device=device, dtype=logp.dtype)).sum()
    if case.entropy_grad:
        loss = loss + (ent * inputs["g_ent"].to(device=device, dtype=ent.dtype)).sum()
    loss.backward()
    out = {"logp": logp.detach().double().cpu(), "entropy": ent.detach().double().cpu()}
    for k, t in leaves.items():
        out["d" + k] = t.grad.double().cpu()
    return out


def check_error_budget(impl: str, case: Case, dtype: torch.dtype, device: str = "cpu",
                       **kw) -> dict[str, tuple[float, float]]:
    """Assert the spec's error budget for logp, entropy, dhidden, dweight, dbias; return the errors.

    The naive same-dtype path runs on the same device as the fused one (its error is device-dependent).
    """
    inputs = make_inputs(case, dtype)
    truth = run_path(reference_token_logprobs, inputs, case, torch.float64)
    naive = run_path(reference_token_logprobs, inputs, case, dtype, device)
    fused = run_path(lambda *a, **k: token_logprobs(*a, impl=impl, **k, **kw), inputs, case, dtype, device)
    errors = {}
    for key, ref in truth.items():
        scale = ref.abs().max().item() + 1e-12
        e_fused = (fused[key] - ref).abs().max().item()
        e_naive = (naive[key] - ref).abs().max().item()
        errors[key] = (e_fused, e_naive)
        assert e_fused <= e_naive + REL_TOL[dtype] * scale, (
            f"{impl} {dtype} {key}: fused err {e_fused:.3g} > naive err {e_naive:.3g} + tol "
            f"{REL_TOL[dtype] * scale:.3g}"
        )
    return errors
