"""StochasTok expansion throughput vs the reference algorithm, and data wait vs step time in the addition setup.

    python bench/stochastok.py [--lengths 512 1024 2048 4096 8192] [--p 0.1] [--repeats 5] [--wait-p 0 0.3]
                               [--packing-p 0.1 0.3 1.0] [--skip-wait] [--skip-packing]

1. Tokens/s of `src.data.stochastok.expand` and of a faithful re-implementation of the reference algorithm
   (anyasims/stochastok: a Python list rebuilt by slicing on every successful attempt, O(p*n^2)) on the same
   SmolLM2-tokenized text, same p, same split table. Median of `--repeats` runs each.
2. The addition experiment (conf/experiment/stochastok/addition.yaml) at each `--wait-p` rate: time to build one
   training batch as the DataLoader does (`__getitems__`: expansion + one vectorised conversion), and row by row
   (the earlier path), vs one optimizer step of its model (forward + backward + AdamW) on that batch; the ratio is
   the data wait of a synchronous (num_workers=0) loader. The in-training figure (Lightning's profiler) is in
   docs/benchmarks.md.
3. Packing cost of the same experiment at each `--packing-p` rate: rows are packed before expansion with headroom
   (docs/stochastok.md), so a p > 0 epoch has more, emptier rows than p = 0, i.e. fewer problems per step. Reports
   the row count relative to p = 0 and the mean fill of the expanded rows (epoch 0).

Prints a markdown table and writes bench/results/stochastok-<time>.json (`--out`: another folder). Shared CPUs:
read the ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from src.data.stochastok import SplitTable, expand
from src.data.tasks.stories import generate_stories
from src.data.tokenizer import load_pretrained

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests.helpers` composes the real config

ROOT = Path(__file__).resolve().parents[1]


def reference_expand(token_ids: list[int], p: float, splits: dict[int, list[tuple[int, int]]]) -> list[int]:
    """The reference algorithm: draw from the current list, rebuild the list around each split."""
    for _ in range(int(len(token_ids) * p)):
        idx = np.random.randint(len(token_ids))
        tid = token_ids[idx]
        if tid in splits:
            a, b = random.choice(splits[tid])
            token_ids = token_ids[:idx] + [a, b] + token_ids[idx + 1 :]
    return token_ids


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_expand(lengths: list[int], p: float, repeats: int) -> list[dict]:
    tok = load_pretrained("smollm2-135m")
    table = SplitTable.build(tok)
    splits = {v: table.splits(v) for v in range(table.vocab_size) if table.offsets[v + 1] > table.offsets[v]}
    stream = tok.encode(" ".join(generate_stories(3000, seed=0)))
    rows = []
    for n in lengths:
        ids = stream[:n]
        rng = np.random.default_rng(0)
        ours = timed(lambda ids=ids, rng=rng: expand(ids, table, p, rng), repeats)
        ref = timed(lambda ids=ids: reference_expand(list(ids), p, splits), repeats)
        rows.append({"length": n, "p": p, "ours_tok_per_s": n / ours, "reference_tok_per_s": n / ref,
                     "speedup": ref / ours})
    return rows


def _addition_datamodule(p: float):  # noqa: ANN202
    from hydra.utils import instantiate

    from tests.helpers import compose_cfg

    cfg = compose_cfg(["experiment=stochastok/addition", f"data.stochastok.p={p}"],
                      Path("/tmp/stochastok-bench-run"))
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    return cfg, dm


def bench_packing(ps: list[float]) -> list[dict]:
    """Rows per epoch relative to p = 0, and how full the expanded rows are (real tokens / seq_len + 1)."""
    _, plain = _addition_datamodule(0.0)
    n_plain = len(plain.train_dataset)
    out = []
    for p in ps:
        _, dm = _addition_datamodule(p)
        ds = dm.train_dataset
        fill = [np.count_nonzero(ds.expanded_row(i, 0)[1]) / ds.width for i in range(len(ds) - 1)]  # last: padded
        out.append({"p": p, "rows": len(ds), "rows_over_p0": len(ds) / n_plain, "mean_fill": float(np.mean(fill))})
    return out


def bench_addition_wait(repeats: int, p: float) -> dict:
    """One training batch of the addition experiment at StochasTok rate `p`, fetched as the DataLoader does
    (`__getitems__`: whole batch, vectorised) and row by row (`ds[key]` + stacking, the pre-batching path), vs
    one optimizer step of the experiment's model on that batch."""
    from hydra.utils import instantiate

    cfg, dm = _addition_datamodule(p)
    ds, collate = dm.train_dataset, dm._collate()
    model = instantiate(cfg.model, vocab_size=dm.tokenizer.vocab_size)
    module = instantiate(cfg.method, backbone=model, tokenizer=dm.tokenizer)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    b = int(cfg.data.batch_size)
    tagged = p > 0  # StochasTok rows are keyed (index, epoch); plain packed rows by index
    keys = iter([(i % len(ds), i // len(ds)) if tagged else i % len(ds) for i in range(10_000_000)])

    def batched() -> dict:
        return collate(ds.__getitems__([next(keys) for _ in range(b)]))

    def per_row() -> dict:
        return collate([ds[next(keys)] for _ in range(b)])

    batch = batched()

    def step() -> None:
        loss = module.compute_loss(batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    batched_s = timed(batched, repeats * 10)
    per_row_s = timed(per_row, repeats * 10)
    step_s = timed(step, repeats * 4)
    return {"batch_size": b, "seq_len": int(cfg.data.seq_len), "p": p, "data_ms_per_batch": 1e3 * batched_s,
            "per_row_ms_per_batch": 1e3 * per_row_s, "step_ms": 1e3 * step_s, "data_over_step": batched_s / step_s,
            "torch_threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    ap.add_argument("--p", type=float, nargs="+", default=[0.1, 1.0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-wait", action="store_true")
    ap.add_argument("--wait-p", type=float, nargs="+", default=[0.0, 0.3], help="StochasTok rates for the wait part")
    ap.add_argument("--skip-packing", action="store_true")
    ap.add_argument("--packing-p", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="folder of the result json")
    args = ap.parse_args()
    rows = [r for p in args.p for r in bench_expand(args.lengths, p, args.repeats)]
    print("| length | p | ours (tok/s) | reference (tok/s) | speedup |\n|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['length']} | {r['p']} | {r['ours_tok_per_s']:,.0f} | {r['reference_tok_per_s']:,.0f} | "
              f"{r['speedup']:.1f}x |")
    wait = [] if args.skip_wait else [bench_addition_wait(args.repeats, p) for p in args.wait_p]
    if wait:
        print("\n| addition, p | batch | data ms/batch (batched fetch) | per-row fetch | step ms | data/step |\n"
              "|---:|---|---:|---:|---:|---:|")
    for w in wait:
        print(f"| {w['p']} | {w['batch_size']}x{w['seq_len']} | {w['data_ms_per_batch']:.2f} | "
              f"{w['per_row_ms_per_batch']:.2f} | {w['step_ms']:.1f} | {100 * w['data_over_step']:.1f}% |")
    packing = [] if args.skip_packing else bench_packing(args.packing_p)
    if packing:
        print("\n| addition, p | rows per epoch | vs p=0 | mean fill after expansion |\n|---:|---:|---:|---:|")
    for r in packing:
        print(f"| {r['p']} | {r['rows']} | {r['rows_over_p0']:.2f}x | {100 * r['mean_fill']:.0f}% |")
    out = args.out / f"stochastok-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "date": datetime.now().isoformat()}
    out.write_text(json.dumps({**meta, "torch": torch.__version__, "expand": rows, "addition_wait": wait,
                               "packing": packing}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
