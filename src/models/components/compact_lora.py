"""LoRA for the compact transformer (`model=tiny model.lora={...}`): peft adapters on its Linear layers, plus
trainable rows of chosen tokens in the embedding and the output head (docs/models.md, docs/mdlm.md "Retrofit").

Why rows and not whole matrices: a LoRA retrofit (e.g. an <eos>-padded masked-diffusion model taught Rainbow
padding) adds K tokens the base model never used. Their embedding and output rows must learn, every other row must
stay the base's. peft's `trainable_token_indices` does exactly that for the embedding (a `TrainableTokensWrapper`
holding a [K, d] delta that *replaces* those rows); `modules_to_save` would copy and train the whole [V, d]
matrix, every row drifting. The compact transformer's untied output head is a bare `nn.Parameter` (the fused
log-prob kernels read `output_weight`, no module ever calls it), which peft cannot wrap, so `TokenRows` here does
the same replacement for it: a [K, d] parameter swapped into those rows of the frozen head whenever
`output_weight` is read. A tied head reads the embedding's rows, delta included.

Config (`model.lora`, a mapping): any `peft.LoraConfig` argument (`r`, `lora_alpha`, `lora_dropout`,
`use_rslora`, ...; `target_modules` defaults to every attention and MLP projection), and

- `trainable_token_indices`: token ids whose embedding/output rows train (a list), or a name the run resolves
  from its tokenizer (`pads`: the reserved Rainbow pad tokens; `resolve_token_names`).
- `token_init`: what those rows start from when base weights are loaded (`load_base_state_dict`): `keep` (the
  base's rows) or a token id / name (`eos`): that token's rows plus the row's own base value, a small
  per-token perturbation that keeps the K rows distinct. For Rainbow pads the end token is the filler they
  replace, so the retrofit starts from "pad ~ eos" instead of from rows that stage 1 pushed to never be predicted.

Checkpoints hold the wrapped layout (`q_proj.base_layer.weight`, `q_proj.lora_A.default.weight`,
`embed.token_adapter.trainable_tokens_delta.default`, `token_rows.ids`, `token_rows.head_delta`), so a LoRA run
resumes from its own checkpoints as it is. `load_base_state_dict` loads a plain (non-LoRA) compact state dict
into the wrapped model (a fine-tune stage's starting point); `merge_lora_state` turns a wrapped state dict back
into a plain one with the adapters folded in (export).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER = "default"  # peft's adapter name
TOKEN_KEYS = ("trainable_token_indices", "token_init")
# LoraConfig options that change the function merge_lora_state's W + scale·B·A stands for (DoRA, per-module ranks
# or alphas, trained biases)
MERGE_CHANGING = ("use_dora", "rank_pattern", "alpha_pattern", "lora_bias", "bias")
_EMBED_DELTA = f"embed.token_adapter.trainable_tokens_delta.{ADAPTER}"


def plain_container(obj: Any) -> Any:
    """Hydra hands nested dicts/lists over as DictConfig/ListConfig; peft wants plain containers."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a project dependency
        return obj
    if isinstance(obj, (DictConfig, ListConfig)):
        return OmegaConf.to_container(obj, resolve=True)
    return obj


def resolve_token_names(lora: Mapping[str, Any] | None, names: Mapping[str, int | Sequence[int] | None]
                        ) -> dict[str, Any] | None:
    """`model.lora` with token names (`pads`, `eos`, ...) replaced by the tokenizer's ids `names`; a name the
    tokenizer does not have is one ValueError naming the known ones."""
    if not lora:
        return None
    out = dict(plain_container(lora))
    for key in TOKEN_KEYS:
        value = out.get(key)
        if isinstance(value, str) and value != "keep":
            ids = names.get(value)
            if ids is None or ids == []:
                known = sorted(k for k, v in names.items() if v not in (None, []))
                raise ValueError(f"model.lora.{key}={value!r}: this tokenizer has no such tokens; use a list of ids "
                                 f"or one of {known}")
            if key == "token_init":
                if not isinstance(ids, int):
                    raise ValueError(f"model.lora.token_init={value!r} names {len(ids)} tokens; it needs one token")
                out[key] = int(ids)
            else:
                out[key] = [int(ids)] if isinstance(ids, int) else [int(i) for i in ids]
    return out


def lora_scaling(lora: Mapping[str, Any]) -> float:
    """peft's LoRA scale: lora_alpha / r (lora_alpha / sqrt(r) with use_rslora); peft's defaults r=8, alpha=8."""
    r, alpha = int(lora.get("r", 8)), float(lora.get("lora_alpha", 8))
    return alpha / r ** 0.5 if lora.get("use_rslora") else alpha / r


class TokenRows(nn.Module):
    """Which token rows train (`ids`, saved with the model) and, for an untied head, their trainable output rows
    (`head_delta` [K, d]); `swap_head` returns the head with those rows replaced (differentiable in the delta)."""

    def __init__(self, ids: Sequence[int], head: Tensor | None) -> None:
        super().__init__()
        self.register_buffer("ids", torch.tensor(list(ids), dtype=torch.long))  # [K]
        self.head_delta = None if head is None else nn.Parameter(head.detach()[self.ids].clone())  # [K, d]

    def swap_head(self, head: Tensor) -> Tensor:  # [V, d] -> [V, d]
        return head.index_copy(0, self.ids, self.head_delta.to(head.dtype))


def apply_lora(model: nn.Module, lora: Mapping[str, Any]) -> None:
    """Inject peft LoRA layers (and trainable token rows) into a CompactTransformer in place; afterwards only the
    adapters and the chosen rows require grad."""
    from peft import LoraConfig, inject_adapter_in_model

    cfg = dict(plain_container(lora))
    ids, init = cfg.pop("trainable_token_indices", None), cfg.pop("token_init", None)
    for key, value in (("trainable_token_indices", ids), ("token_init", init)):
        if isinstance(value, str) and value != "keep":
            raise ValueError(f"model.lora.{key}={value!r} is a token name that was not resolved to ids; build the "
                             "model through the run (src/runtime/build.py) or pass ids")
    cfg.setdefault("target_modules", list(DEFAULT_TARGETS))
    changed = [k for k in MERGE_CHANGING if cfg.get(k) not in (None, False, {}, "none")]
    if changed:  # merge_lora_state (export) folds in exactly W + scale·B·A: these options compute something else
        raise ValueError(f"model.lora.{changed[0]}={cfg[changed[0]]!r}: the compact transformer's LoRA supports "
                         "plain adapters (r, lora_alpha, lora_dropout, target_modules, use_rslora), which export "
                         "merges exactly; use an HF model (model=hf_llama_tiny, smollm2_135m) for this option")
    vocab = model.embed.weight.shape[0]
    if ids is not None:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad or not ids or len(set(ids)) != len(ids):
            raise ValueError(f"model.lora.trainable_token_indices={ids}: need distinct ids in [0, {vocab})")
        cfg["trainable_token_indices"] = {"embed": ids}
    try:
        config = LoraConfig(**cfg)
    except TypeError as err:
        raise ValueError(f"model.lora has a key peft.LoraConfig does not take ({err}); see docs/models.md") from None
    except ValueError as err:  # peft's own checks, e.g. r <= 0
        raise ValueError(f"model.lora: {err}") from None
    try:
        inject_adapter_in_model(config, model)
    except ValueError as err:  # peft: no target module exists in this model, or a bad value such as r <= 0
        if "not found" not in str(err):
            raise ValueError(f"model.lora: {err}") from None
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"model.lora.target_modules={list(plain_container(cfg['target_modules']))}: {err} "
                         f"This model's projections are {names}.") from None
    if ids is not None:
        model.token_rows = TokenRows(ids, model.lm_head)


def base_key_map(model: nn.Module) -> dict[str, str]:
    """{plain compact key: wrapped key} for every base (non-adapter) entry of a LoRA compact model's state."""
    out = {}
    for key in model.state_dict():
        if ".lora_" in key or "trainable_tokens_delta" in key or key.startswith("token_rows."):
            continue
        out[key.replace(".base_layer", "").replace(".token_adapter", "")] = key
    return out


@torch.no_grad()
def load_base_state_dict(model: nn.Module, state: Mapping[str, Tensor], token_init: int | str | None) -> None:
    """Load a plain compact state dict (a non-LoRA run's weights) into the LoRA-wrapped `model`; the adapters
    keep their init (LoRA B = 0: the model computes the base's function, up to the re-initialised token rows).
    Any key missing on either side is one ValueError (the two models differ)."""
    mapping = base_key_map(model)
    missing, unexpected = sorted(set(mapping) - set(state)), sorted(set(state) - set(mapping))
    if missing or unexpected:
        raise ValueError(f"the base weights do not fit this LoRA compact model: missing {missing}, unexpected "
                         f"{unexpected} (is the base a model of the same size, without LoRA?)")
    model.load_state_dict({mapping[k]: v for k, v in state.items()}, strict=False)
    rows = getattr(model, "token_rows", None)
    if rows is None:
        return
    embed = model.embed.token_adapter.base_layer.weight  # [V, d] frozen
    init_embed, init_head = embed[rows.ids], None if model.lm_head is None else model.lm_head[rows.ids]
    if token_init not in (None, "keep"):
        src = int(token_init)
        init_embed = init_embed + embed[src]
        init_head = None if init_head is None else init_head + model.lm_head[src]
    model.embed.token_adapter.trainable_tokens_delta[ADAPTER].copy_(init_embed)
    if rows.head_delta is not None:
        rows.head_delta.copy_(init_head)


def merge_lora_state(state: Mapping[str, Tensor], lora: Mapping[str, Any]) -> dict[str, Tensor]:
    """A LoRA compact state dict -> the plain compact state dict of the same function: W + scale·B·A for every
    adapted Linear, the trained token rows written into the embedding and head. Pure tensors (export)."""
    scale = lora_scaling(lora)
    ids = state.get("token_rows.ids")
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if ".lora_" in key or "trainable_tokens_delta" in key or key.startswith("token_rows."):
            continue
        plain = key.replace(".base_layer", "").replace(".token_adapter", "")
        if key.endswith(".base_layer.weight"):
            stem = key[: -len(".base_layer.weight")]
            a, b = state.get(f"{stem}.lora_A.{ADAPTER}.weight"), state.get(f"{stem}.lora_B.{ADAPTER}.weight")
            if a is not None and b is not None:  # [r, in], [out, r]
                value = value + (scale * (b.float() @ a.float())).to(value.dtype)
        out[plain] = value
    if ids is not None:
        if _EMBED_DELTA in state:
            out["embed.weight"] = out["embed.weight"].index_copy(0, ids, state[_EMBED_DELTA].to(out["embed.weight"]))
        if "token_rows.head_delta" in state and "lm_head" in out:
            out["lm_head"] = out["lm_head"].index_copy(0, ids, state["token_rows.head_delta"].to(out["lm_head"]))
    return out
