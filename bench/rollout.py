"""Benchmark: rollout throughput (generated tokens/s) with the KV cache vs recomputing the whole prefix per token.

GRPO spends most of a step sampling G completions per prompt, so the cache is what makes RL affordable. Both
paths sample the same batch of left-padded prompts with the same sampler (src/models/components/generation.py);
the uncached path runs the full forward over prompt + generated tokens for every new token (what a model
without `forward_cached` would have to do). Every row generates exactly `--new` tokens (no stop token), so both
paths do the same work in tokens.

    python bench/rollout.py                                   # CPU: d 256, 4 layers, rows 16,64, 128 new tokens
    python bench/rollout.py --device cuda --rows 16,64,256 --d-model 512 --layers 8

Prints a markdown table (tokens/s of each path and the speed-up).
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import time

import torch

from src.models.components.generation import (
    generate,
    next_token_logits,
    positions_from_mask,
    sample_token,
)
from src.models.components.transformer import CompactTransformer


@torch.no_grad()
def generate_uncached(backbone: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                      max_new_tokens: int, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """The baseline: one full forward over every token so far per new token ([B, T+t] each time)."""
    ids, mask = input_ids, attention_mask.long()
    out = []
    for _ in range(max_new_tokens):
        hidden = backbone(ids, attention_mask=mask, position_ids=positions_from_mask(mask))  # [B, T+t, d]
        token = sample_token(next_token_logits(backbone, hidden[:, -1]), temperature=temperature,
                             generator=generator)  # [B]
        out.append(token)
        ids = torch.cat([ids, token[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return torch.stack(out, dim=1)  # [B, new]


def prompts(rows: int, vocab: int, min_len: int, max_len: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded random prompts of lengths in [min_len, max_len]: ids [B, T], mask [B, T]."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(min_len, max_len + 1, (rows,), generator=g)
    ids = torch.zeros(rows, max_len, dtype=torch.long)
    mask = torch.zeros(rows, max_len, dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        ids[i, max_len - n:] = torch.randint(3, vocab, (n,), generator=g)
        mask[i, max_len - n:] = 1
    return ids.to(device), mask.to(device)


def timed(fn, device: str, reps: int) -> float:
    """Best wall time of `reps` calls (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rows", default="16,64", help="comma-separated batch sizes (prompts x rollouts)")
    ap.add_argument("--new", type=int, default=128, help="new tokens per row")
    ap.add_argument("--prompt-len", default="8,32", help="min,max prompt length (left-padded)")
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lo, hi = (int(x) for x in args.prompt_len.split(","))
    model = CompactTransformer(vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers,
                               n_heads=args.heads, max_seq_len=hi + args.new + 1).to(args.device).eval()
    n_params = sum(p.numel() for p in model.parameters())
    when = dt.datetime.now(dt.timezone.utc)
    print(f"# rollout bench {when:%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(f"# CompactTransformer d={args.d_model} layers={args.layers} vocab={args.vocab} ({n_params / 1e6:.1f}M "
          f"params), prompts {lo}-{hi} tokens left-padded, {args.new} new tokens, temperature 1\n")
    print("| rows | KV cache tok/s | no cache tok/s | speed-up |")
    print("|---:|---:|---:|---:|")
    for rows in (int(r) for r in args.rows.split(",")):
        ids, mask = prompts(rows, args.vocab, lo, hi, args.device)

        def cached(ids: torch.Tensor = ids, mask: torch.Tensor = mask) -> torch.Tensor:
            g = torch.Generator(device=args.device).manual_seed(1)
            return generate(model, ids, mask, max_new_tokens=args.new, temperature=1.0, pad_token_id=0,
                            generator=g)

        def uncached(ids: torch.Tensor = ids, mask: torch.Tensor = mask) -> torch.Tensor:
            g = torch.Generator(device=args.device).manual_seed(1)
            return generate_uncached(model, ids, mask, max_new_tokens=args.new, temperature=1.0, generator=g)

        same = bool((cached() == uncached()).float().mean() > 0.95)  # same sampler, same draws: near-identical
        t_c, t_u = timed(cached, args.device, args.reps), timed(uncached, args.device, args.reps)
        tokens = rows * args.new
        flag = "" if same else " (outputs differ!)"
        print(f"| {rows} | {tokens / t_c:,.0f} | {tokens / t_u:,.0f} | {t_u / t_c:.1f}x{flag} |")


if __name__ == "__main__":
    main()
