"""Dispatcher: impl selection (argument, process default, env var), validation, leading-dim handling."""

from __future__ import annotations

import pytest
import torch

from src.kernels import dispatch, resolve_impl, set_default_impl, token_logprobs


@pytest.fixture(autouse=True)
def _restore_default(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    yield
    set_default_impl(None)


def test_auto_is_chunked_on_cpu() -> None:
    assert resolve_impl(None, torch.device("cpu")) == "chunked"
    assert resolve_impl("auto", torch.device("cpu")) == "chunked"


def test_forcing_an_impl(monkeypatch: pytest.MonkeyPatch) -> None:
    set_default_impl("reference")
    assert resolve_impl(None, torch.device("cpu")) == "reference"
    assert resolve_impl("chunked", torch.device("cpu")) == "chunked"  # the call argument wins
    set_default_impl(None)
    monkeypatch.setenv(dispatch.ENV_VAR, "reference")
    assert resolve_impl(None, torch.device("cpu")) == "reference"
    set_default_impl("chunked")  # set_default_impl wins over the environment
    assert resolve_impl(None, torch.device("cpu")) == "chunked"


def test_forced_reference_changes_what_runs() -> None:
    h, w, y = torch.randn(4, 3), torch.randn(5, 3).bfloat16(), torch.tensor([0, 1, 2, 3])
    set_default_impl("reference")
    assert token_logprobs(h.bfloat16(), w, y).dtype == torch.bfloat16  # naive path stays in input dtype
    set_default_impl("chunked")
    assert token_logprobs(h.bfloat16(), w, y).dtype == torch.float32  # fused paths return fp32


def test_unknown_impl_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError):
        set_default_impl("cuda-magic")
    with pytest.raises(ValueError):
        token_logprobs(torch.randn(2, 3), torch.randn(4, 3), torch.tensor([0, 1]), impl="nope")
    monkeypatch.setenv(dispatch.ENV_VAR, "nope")
    with pytest.raises(ValueError):
        resolve_impl(None, torch.device("cpu"))


def test_shape_errors() -> None:
    with pytest.raises(ValueError):
        token_logprobs(torch.randn(2, 3), torch.randn(4, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        token_logprobs(torch.randn(2, 3), torch.randn(4, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError):
        token_logprobs(torch.randn(2, 3), torch.randn(4, 3), torch.tensor([0, 1]), temperature=0.0)


@pytest.mark.parametrize("impl", ["reference", "chunked"])
def test_leading_dims_are_flattened_and_restored(impl: str) -> None:
    gen = torch.Generator().manual_seed(0)
    h, w = torch.randn(2, 5, 4, generator=gen), torch.randn(11, 4, generator=gen)
    y = torch.randint(0, 11, (2, 5), generator=gen)
    y[1, 4] = -100
    logp, ent = token_logprobs(h, w, y, with_entropy=True, impl=impl)
    assert logp.shape == ent.shape == (2, 5)
    flat = token_logprobs(h.reshape(10, 4), w, y.reshape(10), impl=impl)
    torch.testing.assert_close(logp.reshape(10), flat)
    assert logp[1, 4] == 0
    expected = torch.log_softmax(h @ w.t(), -1).gather(-1, y.clamp(min=0)[..., None]).squeeze(-1)
    torch.testing.assert_close(logp[y != -100], expected[y != -100], rtol=1e-5, atol=1e-5)


def test_autocast_runs_the_fused_matmul_in_the_autocast_dtype() -> None:
    """Under bf16 autocast (Lightning's bf16-mixed) the fused paths see bf16 operands like F.linear would,
    and the gradient still reaches the fp32 master weight in fp32."""
    from src.kernels import token_logprobs
    from src.kernels.dispatch import cast_like_autocast

    torch.manual_seed(0)
    h = torch.randn(6, 8)
    w = torch.randn(11, 8, requires_grad=True)
    y = torch.randint(0, 11, (6,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hc, wc, bc = cast_like_autocast(h, w, None)
        assert hc.dtype == wc.dtype == torch.bfloat16 and bc is None
        fused = token_logprobs(h, w, y, impl="chunked")
        ref = token_logprobs(h, w, y, impl="reference")
    fused.sum().backward()
    assert w.grad is not None and w.grad.dtype == torch.float32
    torch.testing.assert_close(fused.float(), ref.float(), rtol=0, atol=0.1)
    hc, wc, _ = cast_like_autocast(h, w, None)  # outside autocast: untouched
    assert hc is h and wc is w


def test_auto_on_cpu_stays_chunked_whatever_the_call() -> None:
    cpu = torch.device("cpu")
    for dtype in (torch.float32, torch.bfloat16):
        for with_entropy in (False, True):
            assert resolve_impl("auto", cpu, dtype=dtype, with_entropy=with_entropy) == "chunked"


def test_auto_rule_picks_cce_only_for_what_it_computes_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule itself (no GPU needed): CUDA + CCE installed + bf16/fp16, no entropy, no bias → cce."""
    from src.kernels import cce_backend

    monkeypatch.setattr(cce_backend, "cce_installed", lambda: True)
    monkeypatch.setattr(cce_backend, "cce_accumulates_exactly", lambda: True)
    cuda = torch.device("cuda")
    assert resolve_impl("auto", cuda, dtype=torch.bfloat16) == "cce"
    assert resolve_impl("auto", cuda, dtype=torch.float16) == "cce"
    assert resolve_impl("auto", cuda, dtype=torch.float32) == "chunked"  # CCE 25.1.1's backward: bf16/fp16 only
    assert resolve_impl("auto", cuda, dtype=torch.bfloat16, with_entropy=True) == "chunked"
    assert resolve_impl("auto", cuda, dtype=torch.bfloat16, has_bias=True) == "chunked"
    assert resolve_impl("auto", cuda, dtype=None) == "chunked"  # hidden and weight in different dtypes
    monkeypatch.setattr(cce_backend, "cce_accumulates_exactly", lambda: False)  # e.g. the PyPI 25.1.1 wheel
    assert resolve_impl("auto", cuda, dtype=torch.bfloat16) == "chunked"
    monkeypatch.setattr(cce_backend, "cce_installed", lambda: False)
    assert resolve_impl("auto", cuda, dtype=torch.bfloat16) == "chunked"


def test_forced_cce_without_cuda_raises_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    h, w, y = torch.randn(4, 3), torch.randn(5, 3), torch.tensor([0, 1, 2, 3])
    with pytest.raises(RuntimeError, match="impl='cce' cannot run this call: it needs a CUDA device"):
        token_logprobs(h, w, y, impl="cce")
    monkeypatch.setenv(dispatch.ENV_VAR, "CCE")  # the env var and set_default_impl know the name
    assert resolve_impl(None, torch.device("cpu")) == "cce"
    set_default_impl("cce")
    assert resolve_impl(None, torch.device("cpu")) == "cce"
