"""Fused linear → per-token log-prob / entropy kernels (see docs/kernels.md).

``token_logprobs`` is the one primitive every loss calls; ``set_default_impl`` / env ``TOKENSMITH_KERNEL_IMPL``
force "reference", "chunked", "cce" or "triton" (experimental) process-wide; "auto" picks per call
(dispatch.auto_impl).
"""

from src.kernels.dispatch import IMPLS, get_default_impl, resolve_impl, set_default_impl, token_logprobs
from src.kernels.reference import reference_token_logprobs

__all__ = [
    "IMPLS",
    "get_default_impl",
    "reference_token_logprobs",
    "resolve_impl",
    "set_default_impl",
    "token_logprobs",
]
