"""One place that turns batch masks (padding, packed segments, causality) into an SDPA attention mask.

Both backbones use it: the compact transformer for every forward, the Hugging Face adapter for packed rows
(`segment_ids`), so "which token may see which" is decided identically everywhere.
"""

from __future__ import annotations

import torch
from torch import Tensor


def sdpa_mask(
    attention_mask: Tensor | None,
    segment_ids: Tensor | None,
    *,
    causal: bool,
    q_len: int,
    kv_len: int,
    device: torch.device,
) -> tuple[Tensor | None, bool]:
    """Return `(mask, is_causal)` for `F.scaled_dot_product_attention`.

    attention_mask: [B, kv_len] 1 = real token, 0 = padding (covers cached keys too during generation).
    segment_ids:    [B, kv_len] document index per token in packed rows, 0 = padding; needs q_len == kv_len.
    The queries are the last `q_len` of the `kv_len` positions (generation with a KV cache).

    mask is boolean [B, 1, q_len, kv_len], True = may attend, or None when no mask is needed, in which case
    `is_causal` says whether SDPA should apply its own causal pattern (its fast, mask-free path).

    Every query may always attend to its own key. This changes nothing for real tokens (a real token always
    sees itself) but keeps a fully padded query row from having zero allowed keys, whose softmax is NaN; a NaN
    in a pad position's value would then leak into real rows through 0 * NaN in the next layer.
    """
    has_padding = attention_mask is not None and not bool(attention_mask.all())
    if segment_ids is None and not has_padding:
        if q_len == kv_len:
            return None, causal
        if q_len == 1:  # one new token sees every cached key
            return None, False

    q_offset = kv_len - q_len
    q_pos = torch.arange(q_offset, kv_len, device=device)  # [Tq] absolute index of each query
    k_pos = torch.arange(kv_len, device=device)  # [Tk]
    allowed = torch.ones(1, q_len, kv_len, dtype=torch.bool, device=device)  # [1, Tq, Tk]
    if causal:
        allowed = allowed & (k_pos[None, :] <= q_pos[:, None])[None]
    if has_padding:
        allowed = allowed & attention_mask.to(device=device, dtype=torch.bool)[:, None, :]  # [B, Tq, Tk]
    if segment_ids is not None:
        if q_len != kv_len:
            raise ValueError("segment_ids (packed rows) are not supported together with a KV cache")
        seg = segment_ids.to(device)
        same_doc = (seg[:, :, None] == seg[:, None, :]) & (seg != 0)[:, None, :]  # [B, Tq, Tk]
        allowed = allowed & same_doc
    allowed = allowed | (k_pos[None, :] == q_pos[:, None])[None]
    return allowed[:, None], False  # [B or 1, 1, Tq, Tk]
