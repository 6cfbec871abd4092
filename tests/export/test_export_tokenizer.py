"""The exported tokenizer files: special tokens (pad / eos / mask / reserved pads / extras) and a chat template
survive `save_pretrained`, and `AutoTokenizer` encodes exactly as tokensmith's tokenizer does."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from src.data.tokenizer import SpecialTokens, train_bpe
from src.export.tokenizer_files import save_tokenizer, special_token_ids

TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|endoftext|>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def test_special_tokens_and_chat_template_survive(tmp_path: Path) -> None:
    texts = [f"the {w} sat on the mat number {i}" for i, w in enumerate(["cat", "dog", "bird"] * 20)]
    specials = SpecialTokens(n_reserved_pads=2, extras=("<|user|>", "<|assistant|>"))
    tok = train_bpe(texts, 300, specials, cache_dir=tmp_path / "cache")
    tok.hf.chat_template = TEMPLATE
    save_tokenizer(tok, tmp_path / "out")

    hf = AutoTokenizer.from_pretrained(tmp_path / "out")
    probe = ["the cat sat", "<|user|>hi<|endoftext|><|pad_1|>", "unseen wörds 42"]
    assert [hf.encode(t, add_special_tokens=False) for t in probe] == [tok.encode(t) for t in probe]
    assert (hf.pad_token_id, hf.eos_token_id, hf.mask_token_id) == (tok.pad_id, tok.eos_id, tok.mask_id)
    assert set(tok.special_ids) <= set(hf.all_special_ids)
    assert len(hf) == tok.vocab_size
    chat = [{"role": "user", "content": "hi"}]
    assert hf.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == tok.hf.apply_chat_template(
        chat, tokenize=False, add_generation_prompt=True)
    assert special_token_ids(tok) == {"bos_token_id": None, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id}
