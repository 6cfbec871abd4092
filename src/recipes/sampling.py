"""Sample k graded solutions per question with the KV cache, resumably: a recipe stage (cDPO's step 0).

Questions are processed in fixed chunks; chunk c draws from its own generator seeded by (seed, c), so the output
does not depend on where an earlier attempt was killed. Each finished chunk is appended to `<out>.partial` in one
write and fsync'd; a rerun keeps the complete chunks it finds there (a torn last chunk is dropped) and continues
with the next one. When every chunk is done the partial file is renamed to `<out>` (the stage's artifact).

Output rows (jsonl): `{"prompt", "answer", "skill", "completions": [{"text", "answer", "correct",
"first_wrong_step", "well_formed"}, ...]}`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from src.models.components.generation import generate


def _complete_rows(partial: Path, chunk: int) -> list[str]:
    """The rows of the complete chunks already in `partial` (the file is cut back to them)."""
    if not partial.is_file():
        return []
    data = partial.read_bytes()
    lines = data.split(b"\n")[:-1]  # a torn last line has no newline: dropped
    keep = len(lines) // chunk * chunk
    rows = [ln.decode() for ln in lines[:keep]]
    with partial.open("r+b") as f:
        f.truncate(sum(len(ln) + 1 for ln in lines[:keep]))
    return rows


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] ids and attention mask, prompts right-aligned (what `generate` needs)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)  # [B, T]
    mask = torch.zeros_like(ids)  # [B, T]
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    return ids, mask


@torch.no_grad()
def sample_graded(
    backbone: nn.Module,
    tok: Any,
    questions: Sequence[dict[str, Any]],
    grade: Callable[[str, str], Any],
    out: Path,
    *,
    k: int,
    temperature: float,
    top_p: float | None,
    max_new_tokens: int,
    chunk_questions: int,
    seed: int,
    progress: bool = True,
    prompt_text: Callable[[str], str] | None = None,
) -> list[dict[str, Any]]:
    """k completions per question (`{"prompt", ...}` dicts), each graded by `grade(prompt, text)`; see module doc.
    `prompt_text`: the text each prompt is asked as (a chat template's rendering; default: the prompt itself), while
    rows and grades keep the prompt as given."""
    if out.is_file():
        return [json.loads(ln) for ln in out.read_text().splitlines()]
    partial = out.with_name(out.name + ".partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = _complete_rows(partial, chunk_questions)
    device = backbone.output_weight.device
    n_chunks = -(-len(questions) // chunk_questions)
    bar = tqdm(total=len(questions), initial=len(rows), desc="sample", unit="q", disable=not progress)
    with partial.open("ab") as f:
        for c in range(len(rows) // chunk_questions, n_chunks):
            qs = questions[c * chunk_questions:(c + 1) * chunk_questions]
            asked = [prompt_text(q["prompt"]) if prompt_text else q["prompt"] for q in qs]
            prompt_ids = [tok.encode(a) for a in asked for _ in range(k)]
            ids, mask = left_pad(prompt_ids, tok.pad_id)
            gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + c)
            new = generate(backbone, ids.to(device), mask.to(device), max_new_tokens=max_new_tokens,
                           temperature=temperature, top_p=top_p, stop_token_ids=(tok.eos_id,),
                           pad_token_id=tok.pad_id, generator=gen).tolist()  # [len(qs)·k, max_new_tokens]
            lines = []
            for i, q in enumerate(qs):
                comps = []
                for row in new[i * k:(i + 1) * k]:
                    text = tok.decode(row[: row.index(tok.eos_id)] if tok.eos_id in row else row, skip_special=True)
                    g = grade(q["prompt"], text)
                    comps.append({"text": text, "answer": g.answer, "correct": g.correct,
                                  "first_wrong_step": g.first_wrong_step, "well_formed": g.well_formed})
                lines.append(json.dumps({**q, "completions": comps}))
            f.write(("\n".join(lines) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
            rows += lines
            bar.update(len(qs))
    bar.close()
    os.replace(partial, out)
    return [json.loads(ln) for ln in rows]
