"""HFBackbone(causal=False): a Llama made bidirectional by handing transformers a 4D mask without the causal part
(what `method=mdlm model=hf_llama_tiny model.causal=false` trains). A later token changes an earlier position's
hidden state; padding is still never seen; the causal default is untouched."""

from __future__ import annotations

import pytest
import torch

from src.models.components.hf_adapter import HFBackbone
from src.runtime.build import build_components
from tests.helpers import compose_cfg
from tests.models.components.conftest import tiny_llama_config


def _pair(causal: bool, impl: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    m = HFBackbone(tiny_llama_config(), pretrained=False, causal=causal, attn_implementation=impl).eval()
    a = torch.tensor([[3, 4, 5, 6, 7], [3, 4, 5, 6, 7]])
    b = a.clone()
    b[:, 3] = 9  # a later token changes
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])  # row 1: the changed token is padding
    with torch.no_grad():
        return m(a, attention_mask=mask), m(b, attention_mask=mask), mask


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_bidirectional_attention_sees_later_tokens_but_not_padding(impl: str) -> None:
    ha, hb, _ = _pair(False, impl)
    assert (ha[0, :3] - hb[0, :3]).abs().amax(-1).min() > 1e-4  # every earlier position sees the change
    torch.testing.assert_close(ha[1, :3], hb[1, :3], rtol=0, atol=1e-6)  # a padded key stays unseen
    ca, cb, _ = _pair(True, impl)
    torch.testing.assert_close(ca[0, :3], cb[0, :3], rtol=0, atol=1e-6)  # causal: the past is untouched


def test_bidirectional_hf_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="attn_implementation=sdpa or eager"):
        HFBackbone(tiny_llama_config(), pretrained=False, causal=False, attn_implementation="flash_attention_2")
    m = HFBackbone(tiny_llama_config(), pretrained=False, causal=False)
    assert m.causal is False
    with pytest.raises(ValueError, match="needs a causal model"):
        m.forward_cached(torch.tensor([[1]]), torch.tensor([[1]]), torch.tensor([[0]]), None)


def test_mdlm_trains_on_a_bidirectional_hf_llama(run_dir) -> None:  # noqa: ANN001
    cfg = compose_cfg(["data=rainbow_copy", "method=mdlm", "model=hf_llama_tiny", "model.causal=false",
                       "model.model.num_hidden_layers=1", "debug=smoke", "data.task.n_train=200"], run_dir)
    dm, module, _ = build_components(cfg)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    out = module.compute_loss(batch)
    (out.numerator / out.denominator).backward()
    assert torch.isfinite(out.numerator) and out.metrics["mask_rate"] > 0
    assert all(p.grad is not None for n, p in module.backbone.named_parameters() if "layers.0.self_attn" in n)
    with pytest.raises(Exception, match="model.causal=false"):
        build_components(compose_cfg(["data=rainbow_copy", "method=mdlm", "model=hf_llama_tiny", "debug=smoke",
                                      "data.task.n_train=200"], run_dir / "causal"))
