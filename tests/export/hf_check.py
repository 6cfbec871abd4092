"""Load exported directories with plain transformers (and peft), in a fresh process that never imports tokensmith.

    python hf_check.py spec.json

spec: {"batch": <.pt with input_ids/attention_mask/labels>, "prompts": <.pt with input_ids/attention_mask>,
       "texts": [...], "max_new_tokens": N, "result": <.pt to write>,
       "jobs": [{"name": ..., "model": <dir>, "adapter": <dir or null>, "tokenizer": <dir>}]}
result: {name: {"logp": [B, T] (0 where labels == -100), "generated": [B, N], "ids": [[...] per text],
                "chat": rendered chat template or None}}
The test runs it with the tests directory as its only project path, so `import src` would fail; it also checks
that nothing imported a module named `src`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def run_job(job: dict, batch: dict, prompts: dict, texts: list[str], max_new_tokens: int) -> dict:
    model = AutoModelForCausalLM.from_pretrained(job["model"], dtype=torch.float32)
    if job.get("adapter"):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, job["adapter"])
    model.eval()
    tok = AutoTokenizer.from_pretrained(job["tokenizer"])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        labels = batch["labels"]
        logp = torch.log_softmax(logits, dim=-1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
        logp = logp.masked_fill(labels == -100, 0.0)
        gen = model.generate(input_ids=prompts["input_ids"], attention_mask=prompts["attention_mask"],
                             max_new_tokens=max_new_tokens, do_sample=False)
    new = gen[:, prompts["input_ids"].shape[1]:]
    pad = model.generation_config.pad_token_id
    if new.shape[1] < max_new_tokens:  # every row stopped early
        new = torch.cat((new, torch.full((new.shape[0], max_new_tokens - new.shape[1]), pad)), dim=1)
    chat = None
    if tok.chat_template:
        chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    return {
        "logp": logp, "generated": new, "ids": [tok.encode(t, add_special_tokens=False) for t in texts],
        "special": {k: getattr(tok, k) for k in ("eos_token", "pad_token", "bos_token", "mask_token")},
        "eos_id": model.generation_config.eos_token_id, "pad_id": pad, "chat": chat,
    }


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    batch = torch.load(spec["batch"], weights_only=True)
    prompts = torch.load(spec["prompts"], weights_only=True)
    out = {job["name"]: run_job(job, batch, prompts, spec["texts"], spec["max_new_tokens"]) for job in spec["jobs"]}
    out["_src_imported"] = any(m == "src" or m.startswith("src.") for m in sys.modules)
    torch.save(out, spec["result"])


if __name__ == "__main__":
    main()
