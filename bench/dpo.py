"""Benchmark: one DPO training step (policy + frozen reference, chosen + rejected) with fused log-probs vs
materialised logits, at SmolLM2-135M's head shape (V = 49152, d = 576).

The step is `DPOModule.compute_loss` + backward, the code a run executes; only the log-prob kernel differs:
`chunked` (fused: logits built chunk by chunk, never [tokens × V]) vs `reference` (logits materialised, what naive
code does). The body is one transformer layer so that the head, the part the kernel changes, dominates; a real
135M body adds the same activation memory to both paths. 4 pairs of 1024 tokens (a 64-token prompt, masked)
= 8192 scored rows through the policy and 8192 through the reference.

Each impl runs in its own subprocess; CPU peak memory is its max RSS minus that of a baseline child that builds
the same model and batch and stops. Times are medians of `--reps` steps after `--warmup`.

    python bench/dpo.py                 # CPU, ~3 min on 2 cores
    python bench/dpo.py --pairs 2 --seq 512

Prints a markdown table; writes JSON rows to bench/results/dpo-<time>.json (`--out` another folder).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.kernels import _machine, _versions, run_measured  # noqa: E402  (machine and version strings, shared)


def child(args: argparse.Namespace) -> None:
    import torch

    from src.models.components.transformer import CompactTransformer
    from src.models.dpo import DPOModule

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    backbone = CompactTransformer(vocab_size=args.v, d_model=args.d, n_layers=1, n_heads=max(1, args.d // 64),
                                  max_seq_len=args.seq)
    module = DPOModule(backbone, optimizer=torch.optim.AdamW, beta=0.1, reference="copy",
                       kernel_impl="chunked" if args.impl == "baseline" else args.impl)
    gen = torch.Generator().manual_seed(0)
    batch = {}
    for view in ("chosen", "rejected"):
        ids = torch.randint(0, args.v, (args.pairs, args.seq), generator=gen)  # [B, T]
        labels = torch.roll(ids, -1, dims=1)
        labels[:, : args.prompt] = -100  # the prompt is not scored
        labels[:, -1] = -100
        batch |= {f"{view}_input_ids": ids, f"{view}_labels": labels,
                  f"{view}_attention_mask": torch.ones_like(ids),
                  f"{view}_position_ids": torch.arange(args.seq).expand(args.pairs, -1).contiguous()}
    if args.impl == "baseline":
        print(json.dumps({"ok": True}))
        return
    times = []
    for i in range(args.warmup + args.reps):
        module.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        out = module.compute_loss(batch)
        (out.numerator / out.denominator).backward()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    print(json.dumps({"ok": True, "times_s": times, "loss": float(out.numerator / out.denominator)}))


def parent(args: argparse.Namespace) -> None:
    gib = 2**30
    now = dt.datetime.now().isoformat(timespec="seconds")
    meta = {"machine": _machine("cpu"), "versions": _versions(), "date": now,
            "command": " ".join(sys.argv), "pairs": args.pairs, "seq": args.seq, "v": args.v, "d": args.d,
            "reps": args.reps, "warmup": args.warmup, "threads": args.threads}
    print(f"# {meta['machine']} | {meta['versions']} | {meta['date']}\n# {meta['command']}")
    print("| impl | step median (s) | peak extra (GiB) | time / materialised | materialised mem / mem |")
    print("|---|---|---|---|---|")
    base = _run(args, "baseline")
    rows, ref = [], None
    for impl in ("reference", "chunked"):
        r = _run(args, impl)
        row = {**meta, "impl": impl, **r}
        if r.get("ok"):
            row["time_median_s"] = statistics.median(r["times_s"])
            row["peak_bytes"] = r["maxrss_bytes"] - base["maxrss_bytes"]
            ref = ref or row
            print(f"| {'materialised logits' if impl == 'reference' else 'fused (chunked)'} | "
                  f"{row['time_median_s']:.3f} | {row['peak_bytes'] / gib:.2f} | "
                  f"{row['time_median_s'] / ref['time_median_s']:.2f}x | "
                  f"{ref['peak_bytes'] / max(row['peak_bytes'], 1):.1f}x |", flush=True)
        else:
            print(f"| {impl} | failed: {r.get('error')} | | | |", flush=True)
        rows.append(row)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"dpo-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(rows, indent=1))
    print(f"# wrote {path}")


def _run(args: argparse.Namespace, impl: str) -> dict:
    """One child process; its peak memory is its max RSS (`run_measured`, bench/kernels.py)."""
    cmd = [sys.executable, __file__, "--child", "--impl", impl, "--pairs", str(args.pairs), "--seq", str(args.seq),
           "--prompt", str(args.prompt), "--v", str(args.v), "--d", str(args.d), "--reps", str(args.reps),
           "--warmup", str(args.warmup), "--threads", str(args.threads)]
    rc, maxrss, text = run_measured(cmd)
    last = [ln for ln in text.splitlines() if ln.startswith("{")]
    if rc != 0 or not last:
        return {"ok": False, "error": (text.strip().splitlines() or ["no output"])[-1][:200]}
    return {**json.loads(last[-1]), "maxrss_bytes": maxrss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--impl", default="chunked", help=argparse.SUPPRESS)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--v", type=int, default=49152)
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="folder of the result json")
    args = ap.parse_args()
    child(args) if args.child else parent(args)


if __name__ == "__main__":
    main()
