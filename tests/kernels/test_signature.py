"""The kernel call signature is declared once (src/kernels/signature.py) and every implementation matches it."""

from __future__ import annotations

import pytest

from src.kernels import dispatch
from src.kernels.cce_backend import cce_token_logprobs
from src.kernels.chunked import chunked_token_logprobs
from src.kernels.reference import reference_token_logprobs
from src.kernels.signature import implements


def test_every_implementation_is_routed_by_name() -> None:
    assert dispatch.IMPLS == ("auto", "reference", "chunked", "triton", "cce")
    assert dispatch.IMPLEMENTATIONS["reference"]() is reference_token_logprobs
    assert dispatch.IMPLEMENTATIONS["chunked"]() is chunked_token_logprobs
    assert dispatch.IMPLEMENTATIONS["cce"]() is cce_token_logprobs
    for fn in (reference_token_logprobs, chunked_token_logprobs, cce_token_logprobs, dispatch.token_logprobs):
        assert implements(fn) is fn  # unchanged, and matches the contract


def test_a_drifted_signature_fails_naming_the_argument() -> None:
    def drifted(hidden, weight, targets, *, bias=None, temperature=1.0, ignore_index=-1, with_entropy=False):  # noqa: ANN001, ANN202
        return hidden

    with pytest.raises(TypeError, match=r"ignore_index=-1 instead of \*, ignore_index=-100.*missing \*, entropy_grad"):
        implements(drifted)


def test_extra_arguments_must_be_keyword_hints() -> None:
    def needs_more(hidden, weight, targets, *, bias=None, temperature=1.0, ignore_index=-100,  # noqa: ANN001, ANN202
                   with_entropy=False, entropy_grad=False, chunk_size):
        return hidden

    with pytest.raises(TypeError, match="keyword-only with a default"):
        implements(needs_more)
