"""Masked-diffusion cost: LLaDA sampler throughput against canvas length, and one training step vs the causal LM.

    python bench/mdlm_sampler.py                                  # CPU defaults (~2 min on 2 shared cores)
    python bench/mdlm_sampler.py --canvases 64,128,256,512,1024 --device cuda

Sampler: prompts of 16 tokens, a canvas of C [MASK] tokens, steps = C (one token committed per step), one block,
greedy low-confidence remasking (src/models/components/mdlm_sampler.py). Each step runs the whole sequence
through the bidirectional model, so the cost grows ~C² (C steps × C + 16 tokens, plus attention); the figure is
answer (canvas) tokens per second over the batch. Weights are random: the cost does not depend on them.

Training step: forward + backward + AdamW of the same compact transformer, same batch shape, as
`MaskedDiffusionModule.compute_loss` (masking, bidirectional attention, LLaDA loss through the fused kernel) and
`CausalLMModule.compute_loss` (next-token CE). Median over interleaved repeats (the CPUs are shared).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.models.components.mdlm_sampler import diffusion_sample  # noqa: E402
from src.models.components.transformer import CompactTransformer  # noqa: E402
from src.models.lm import CausalLMModule  # noqa: E402
from src.models.mdlm import MaskedDiffusionModule  # noqa: E402

PAD, END, MASK = 0, 1, 2


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def model(args: argparse.Namespace, causal: bool, device: torch.device) -> CompactTransformer:
    torch.manual_seed(0)
    return CompactTransformer(args.vocab, args.d, args.layers, args.heads, max_seq_len=4096, causal=causal).to(device)


def bench_sampler(args: argparse.Namespace, device: torch.device) -> list[tuple[int, float, float]]:
    bb = model(args, causal=False, device=device).eval()
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(10, args.vocab, (16,), generator=g).tolist() for _ in range(args.sample_batch)]
    rows = []
    for c in [int(x) for x in args.canvases.split(",")]:
        diffusion_sample(bb, prompts, gen_length=c, mask_id=MASK, pad_id=PAD, steps=min(c, 4))  # warm-up
        sync(device)
        t0 = time.perf_counter()
        diffusion_sample(bb, prompts, gen_length=c, mask_id=MASK, pad_id=PAD, steps=c)
        sync(device)
        dt = time.perf_counter() - t0
        rows.append((c, dt, c * len(prompts) / dt))
        print(f"  canvas {c}: {dt:.2f} s", flush=True)
    return rows


def bench_train_step(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    tok = SimpleNamespace(pad_id=PAD, eos_id=END, mask_id=MASK, reserved_pad_ids=[], special_ids=frozenset())
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(10, args.vocab, (args.batch, args.seq + 1), generator=g)
    prompt = args.seq // 4
    mdlm_batch = {"input_ids": ids[:, :-1], "labels": ids[:, :-1].clone(),
                  "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.long)}
    mdlm_batch["labels"][:, :prompt] = -100  # SFT: the first quarter is the prompt
    lm_labels = ids[:, 1:].clone()
    lm_labels[:, : prompt - 1] = -100
    lm_batch = {"input_ids": ids[:, :-1], "labels": lm_labels, "attention_mask": mdlm_batch["attention_mask"]}
    mods = {
        "mdlm (bidirectional)": (MaskedDiffusionModule(model(args, False, device), torch.optim.AdamW, tokenizer=tok),
                                 mdlm_batch),
        "causal LM": (CausalLMModule(model(args, True, device), torch.optim.AdamW, tokenizer=tok), lm_batch),
    }
    times: dict[str, list[float]] = {k: [] for k in mods}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, (m, _) in mods.items()}
    for r in range(args.repeats + 1):
        for k, (m, batch) in mods.items():
            m.to(device).train()
            b = {key: v.to(device) for key, v in batch.items()}
            sync(device)
            t0 = time.perf_counter()
            out = m.compute_loss(b)
            opts[k].zero_grad()
            out.loss.backward()
            opts[k].step()
            sync(device)
            if r:  # the first round warms up
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--canvases", default="64,128,256,512")
    p.add_argument("--sample-batch", type=int, default=4)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    machine = platform.processor() or platform.machine()
    print(f"# {date.today()} {platform.node()} {machine}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}; model d={args.d} L={args.layers} V={args.vocab}")
    rows = bench_sampler(args, device)
    print("\n| canvas (= steps) | batch | time (s) | answer tokens/s |\n|---|---|---|---|")
    for c, dt, tps in rows:
        print(f"| {c} | {args.sample_batch} | {dt:.2f} | {tps:.1f} |")
    step = bench_train_step(args, device)
    base = step["causal LM"]
    print(f"\n| training step (B={args.batch}, T={args.seq}) | median (ms) | vs causal LM |\n|---|---|---|")
    for k, v in step.items():
        print(f"| {k} | {v * 1000:.1f} | {v / base:.2f}x |")


if __name__ == "__main__":
    main()
