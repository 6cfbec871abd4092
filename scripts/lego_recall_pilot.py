"""Pilot: does key -> value recall pretraining let a small from-scratch model learn the LEGO hops?

The paper's LEGO runs continue a *pretrained* GPT-Neo-125M, whose attention heads can already look a token up by
identity; our from-scratch CompactTransformers never learn that lookup (docs/results.md, Skill-It). This pilot
gives the same small model the lookup first, on a corpus with no chains in it, then trains LEGO:

1. recall pretraining: streams of 16 pairs `k = v` over 5-8 random keys (letters), a value being a bit or a
   letter; keys recur, so every repeated key's value is predictable only by looking its first occurrence up.
   LM loss on every next token; accuracy is measured on the values of repeated keys (1.0 = perfect lookup).
2. LEGO on the stratified pool (4000 questions per skill), loss at the answer token, greedy accuracy per skill
   on the experiment's validation set, with the same model (`--pretrain-steps 0`: from scratch).

    python scripts/lego_recall_pilot.py --pretrain-steps 12000 --lego-steps 2000 --n-layers 3   # ~20 min, 1 core

Same tokenizer (the LEGO BPE, cached), model (`CompactTransformer`, d=64, 4 heads) and optimiser recipe
(AdamW, 30 warm-up steps, cosine to 10 %, clip 1.0, batch 32) as `experiment=skillit/lego`; a plain loop keeps
the two stages in one short file. Results: docs/results.md, Skill-It.
"""

from __future__ import annotations

import argparse
import math
import random
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.data.skill_datamodule import SkillDataModule  # noqa: E402
from src.data.tasks.lego import generate_lego  # noqa: E402
from src.models.components.transformer import CompactTransformer  # noqa: E402

IGNORE = -100


def recall_stream(rng: random.Random, tok, n_pairs: int = 16) -> tuple[list[int], list[bool]]:
    """Token ids of one stream, and per token whether it is the value of a key seen before."""
    keys = rng.sample(string.ascii_lowercase, rng.randint(5, 8))
    value = {k: str(rng.randint(0, 1)) if rng.random() < 0.5 else rng.choice(string.ascii_lowercase) for k in keys}
    ids: list[int] = []
    repeat: list[bool] = []
    seen: set[str] = set()
    for j in range(n_pairs):
        k = rng.choice(keys)
        head, val = tok.encode((", " if j else "") + f"{k} ="), tok.encode(" " + value[k])
        ids += head + val
        repeat += [False] * len(head) + [k in seen] * len(val)
        seen.add(k)
    return ids, repeat


def stream_batch(streams: list[tuple[list[int], list[bool]]], pad: int) -> tuple[torch.Tensor, ...]:
    """input_ids, attention_mask, next-token labels, repeated-value mask; all [B, L]."""
    n, width = len(streams), max(len(ids) for ids, _ in streams)
    x = torch.full((n, width), pad)
    mask = torch.zeros(n, width, dtype=torch.long)
    y = torch.full((n, width), IGNORE)
    rep = torch.zeros(n, width, dtype=torch.bool)
    for i, (ids, repeat) in enumerate(streams):
        x[i, : len(ids)], mask[i, : len(ids)] = torch.tensor(ids), 1
        y[i, : len(ids) - 1] = torch.tensor(ids[1:])
        rep[i, : len(ids) - 1] = torch.tensor(repeat[1:])
    return x, mask, y, rep


def answer_batch(records: list[dict], tok) -> tuple[torch.Tensor, ...]:
    """input_ids, attention_mask [B, L]; position of the last prompt token and the answer id [B]."""
    ids = [p + tok.encode(r["response"]) for p, r in zip(tok.encode_batch([r["prompt"] for r in records]), records)]
    width = max(map(len, ids))
    x = torch.full((len(ids), width), tok.pad_id)
    mask = torch.zeros(len(ids), width, dtype=torch.long)
    for i, row in enumerate(ids):
        x[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    return x, mask, torch.tensor([len(r) - 2 for r in ids]), torch.tensor([r[-1] for r in ids])


def train(model: CompactTransformer, steps: int, lr: float, loss_fn: Callable[[], torch.Tensor],
          report: Callable[[], str], every: int, name: str) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    start = time.time()
    for step in range(1, steps + 1):
        scale = min(1.0, step / 30) * max(0.1, 0.5 * (1 + math.cos(math.pi * step / steps)))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % every == 0 or step == steps:
            model.eval()
            with torch.no_grad():
                line = report()
            model.train()
            print(f"{name} step {step:>6}  loss {loss.item():.3f}  {line}  ({time.time() - start:.0f} s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pretrain-steps", type=int, default=12000)
    ap.add_argument("--lego-steps", type=int, default=2000)
    ap.add_argument("--n-layers", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", default=str(ROOT / ".cache"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dm = SkillDataModule(task={"kind": "lego", "k": 5}, n_train=20000, pool=[1, 1, 1, 3, 5],
                         tokenizer={"vocab_size": 300, "mask": False}, cache_dir=args.cache_dir, seed=args.seed)
    tok = dm.tokenizer  # the LEGO experiment's BPE, so both stages share one vocabulary
    torch.manual_seed(args.seed)
    model = CompactTransformer(vocab_size=tok.vocab_size, d_model=64, n_layers=args.n_layers, n_heads=4,
                               max_seq_len=96)
    rng = random.Random(args.seed)

    if args.pretrain_steps:
        val_rng = random.Random(10_000 + args.seed)
        val = stream_batch([recall_stream(val_rng, tok) for _ in range(200)], tok.pad_id)

        def recall_loss() -> torch.Tensor:
            x, mask, y, _ = stream_batch([recall_stream(rng, tok) for _ in range(32)], tok.pad_id)
            return F.cross_entropy((model(x, mask) @ model.output_weight.T).flatten(0, 1), y.flatten(),
                                   ignore_index=IGNORE)

        def recall_acc() -> str:
            x, mask, y, rep = val
            pred = (model(x, mask) @ model.output_weight.T).argmax(-1)  # [B, L]
            return f"recall accuracy on repeated keys {(pred[rep] == y[rep]).float().mean().item():.3f}"

        train(model, args.pretrain_steps, args.lr, recall_loss, recall_acc, 500, "recall")

    pool = generate_lego([4000] * 5, seed=args.seed)
    val_lego = answer_batch(generate_lego([100] * 5, seed=1_000_003 + args.seed), tok)

    def lego_loss() -> torch.Tensor:
        x, mask, pos, ans = answer_batch(rng.sample(pool, 32), tok)
        return F.cross_entropy(model(x, mask)[torch.arange(len(x)), pos] @ model.output_weight.T, ans)

    def lego_acc() -> str:
        x, mask, pos, ans = val_lego
        pred = (model(x, mask)[torch.arange(len(x)), pos] @ model.output_weight.T).argmax(-1)
        acc = (pred == ans).float().view(5, 100).mean(1) * 100  # skills in order, 100 questions each
        return "LEGO accuracy % " + " ".join(f"{a:.0f}" for a in acc) + f"  mean {acc.mean():.1f}"

    with torch.no_grad():
        print("LEGO before training:", lego_acc(), flush=True)
    train(model, args.lego_steps, args.lr, lego_loss, lego_acc, 250, "lego")


if __name__ == "__main__":
    main()
