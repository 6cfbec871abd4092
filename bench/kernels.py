"""Benchmark: forward+backward time and peak memory of per-token log-prob paths (and peers) vs the naive baseline.

Each (config, impl) runs in its own subprocess so peak memory is that run's alone:
- CPU: the child's max RSS (os.wait4 rusage) minus that of a baseline child that only allocates the inputs;
- CUDA: torch.cuda.max_memory_allocated during the timed calls minus what the inputs already held.
Loss for every impl: mean over tokens of −logp (what Liger / CCE compute), so the comparison is like for like;
pass --entropy to also request the entropy from our paths.

    python bench/kernels.py     # CPU default: N=1k and the goal N=8k, V=128k, d=1024, fp32; 2 reps (~9 min on 2 cores,
                                # the reference child peaks at ~19 GiB RSS)
    python bench/kernels.py --device cuda --dtype bf16 --n 1024,8192,32768 --v 32768,131072 --d 512,2048

Prints a markdown table; appends JSON rows to bench/results/kernels-<device>-<time>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


# ----------------------------------------------------------------------------------------------- child process
def _make_inputs(n: int, v: int, d: int, dtype: str, device: str, seed: int = 0):
    import torch

    gen = torch.Generator(device="cpu").manual_seed(seed)
    dt_ = getattr(torch, DTYPES[dtype])
    # Filled in place: a temporary [V, d] copy here would raise the baseline child's max RSS by V·d·4 bytes and
    # hide up to that much of every path's real extra memory (CPU peaks are max-RSS differences).
    hidden = torch.empty(n, d).normal_(generator=gen).to(device=device, dtype=dt_).requires_grad_(True)  # [N, d]
    weight = torch.empty(v, d).normal_(generator=gen).mul_(d**-0.5)
    weight = weight.to(device=device, dtype=dt_).requires_grad_(True)  # [V, d]
    targets = torch.randint(0, v, (n,), generator=gen).to(device)  # [N]
    targets[::17] = -100  # some ignored rows, as in padded batches
    return hidden, weight, targets


# bench name -> our dispatcher's impl. cce_ours: CCE through our wrapper (exact settings, logp = −per-token loss,
# our reduction), to compare with the raw `cce` call (CCE's defaults, gradient filtering on); auto: what
# `token_logprobs` picks for these inputs (printed by the child).
OURS = {"reference": "reference", "chunked": "chunked", "chunked_hint": "chunked", "triton": "triton",
        "cce_ours": "cce", "auto": "auto"}
NEEDS_CUDA = ("triton", "liger", "cce", "cce_exact", "cce_ours")
NEEDS_MODULE = {"liger": "liger_kernel", "cce": "cut_cross_entropy", "cce_exact": "cut_cross_entropy",
                "cce_ours": "cut_cross_entropy"}


def _loss_fn(impl: str, entropy: bool):
    """A callable (hidden, weight, targets) → scalar loss: mean −logp over non-ignored tokens."""
    import torch

    if impl in OURS:
        from src.kernels import token_logprobs

        name = OURS[impl]

        def fn(h, w, y):
            # *_hint / auto: what the causal-LM objective calls (grad_hint = label mask; only chunked uses it)
            hint = (y != -100).float() if impl in ("chunked_hint", "auto") else None
            out = token_logprobs(h, w, y, impl=name, with_entropy=entropy, grad_hint=hint)
            logp = out[0] if entropy else out
            return -logp.sum() / (y != -100).sum()

        return fn
    if impl == "liger":
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        mod = LigerFusedLinearCrossEntropyLoss(ignore_index=-100, reduction="mean")
        return lambda h, w, y: mod(w, h, y)
    if impl == "cce":
        from cut_cross_entropy import linear_cross_entropy

        return lambda h, w, y: linear_cross_entropy(h, w, y, ignore_index=-100, reduction="mean")
    if impl == "cce_exact":  # CCE's own exact preset (no gradient filtering, compensated accumulation): what
        from cut_cross_entropy import linear_cross_entropy  # cce_ours runs, minus our wrapper

        return lambda h, w, y: linear_cross_entropy(h, w, y, ignore_index=-100, reduction="mean", impl="cce_exact")
    if impl == "torch_ce":  # what most users write: F.cross_entropy on materialised logits
        return lambda h, w, y: torch.nn.functional.cross_entropy(h @ w.t(), y, ignore_index=-100)
    raise ValueError(impl)


def child(args: argparse.Namespace) -> None:
    import torch

    torch.manual_seed(0)
    h, w, y = _make_inputs(args.n, args.v, args.d, args.dtype, args.device)
    if args.impl == "baseline":
        print(json.dumps({"ok": True}))
        return
    fn = _loss_fn(args.impl, args.entropy)
    resolved = None
    if args.impl == "auto":
        from src.kernels import dispatch

        dtype = dispatch.matmul_dtype(h) if dispatch.matmul_dtype(h) == dispatch.matmul_dtype(w) else None
        resolved = dispatch.resolve_impl("auto", h.device, dtype=dtype, with_entropy=args.entropy)
    cuda = args.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    base_alloc = torch.cuda.memory_allocated() if cuda else 0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args.warmup + args.reps):
        h.grad = w.grad = None
        sync()
        t0 = time.perf_counter()
        fn(h, w, y).backward()
        sync()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    row = {"ok": True, "times_s": times}
    if resolved:
        row["resolved_impl"] = resolved
    if cuda:
        row["peak_bytes"] = torch.cuda.max_memory_allocated() - base_alloc
    print(json.dumps(row))


# ---------------------------------------------------------------------------------------------- parent process
def run_measured(cmd: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> tuple[int, int, str]:
    """(exit status, max RSS in bytes, stdout + stderr) of one child process: the peak memory of every benchmark
    here that runs its cases in subprocesses (`os.wait4`'s rusage; Linux reports KiB)."""
    if env is None:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        out.seek(0)
        text = out.read()
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024, text


def _run_child(cfg: dict, impl: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", "--impl", impl, "--device", args.device, "--n", str(cfg["n"]),
           "--v", str(cfg["v"]), "--d", str(cfg["d"]), "--dtype", cfg["dtype"], "--reps", str(args.reps),
           "--warmup", str(args.warmup)] + (["--entropy"] if args.entropy else [])
    rc, maxrss, text = run_measured(cmd)
    last = [ln for ln in text.splitlines() if ln.startswith("{")]
    if rc != 0 or not last:
        tail = text.strip().splitlines()[-1:] or [f"exit {rc}"]
        return {"ok": False, "error": tail[0][:200]}
    row = json.loads(last[-1])
    row["maxrss_bytes"] = maxrss
    return row


def _impls_for(args: argparse.Namespace) -> list[str]:
    import importlib.util

    impls = args.impls.split(",")
    keep = []
    for impl in impls:
        known = (*OURS, "liger", "cce", "cce_exact", "torch_ce")
        if impl not in known:
            raise SystemExit(f"unknown impl {impl!r}; expected some of {', '.join(known)}")
        if impl in NEEDS_CUDA and args.device != "cuda":
            continue  # Triton kernels (ours and the peers') need CUDA
        mod = NEEDS_MODULE.get(impl)
        if mod and importlib.util.find_spec(mod) is None:
            print(f"# skipping {impl}: {mod} not installed", file=sys.stderr)
            continue
        keep.append(impl)
    return keep


def _versions() -> dict:
    import torch

    vers = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("triton", "liger_kernel", "cut_cross_entropy"):
        try:
            from importlib.metadata import version

            vers[mod] = version(mod.replace("_", "-"))
        except Exception:
            pass
    return vers


def _machine(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    try:
        model = [ln.split(":", 1)[1].strip() for ln in subprocess.run(["lscpu"], capture_output=True, text=True)
                 .stdout.splitlines() if ln.startswith("Model name")][0]
    except Exception:
        model = platform.processor()
    return f"{model}, {os.cpu_count()} cores"


def parent(args: argparse.Namespace) -> None:
    gib = 2**30
    configs = [{"n": n, "v": v, "d": d, "dtype": t} for t in args.dtype.split(",") for n in _ints(args.n)
               for v in _ints(args.v) for d in _ints(args.d)]
    impls = _impls_for(args)
    meta = {"device": args.device, "machine": _machine(args.device), "versions": _versions(),
            "date": dt.datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv),
            "reps": args.reps, "warmup": args.warmup, "entropy": args.entropy}
    print(f"# {meta['machine']} | {meta['versions']} | {meta['date']}\n# {meta['command']}")
    print("| N | V | d | dtype | impl | time median (s) | peak extra (GiB) | time / ref | ref mem / mem |")
    print("|---|---|---|---|---|---|---|---|---|")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"kernels-{args.device}-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    rows = []
    for cfg in configs:
        base = _run_child(cfg, "baseline", args) if args.device == "cpu" else {"maxrss_bytes": 0}
        ref = None
        for impl in impls:
            r = _run_child(cfg, impl, args)
            row = {**meta, **cfg, "impl": impl, **r}
            if r.get("ok"):
                row["time_median_s"] = statistics.median(r["times_s"])
                if args.device == "cpu":
                    row["peak_bytes"] = r["maxrss_bytes"] - base["maxrss_bytes"]
                if impl == "reference":
                    ref = row
            rows.append(row)
            path.write_text(json.dumps(rows, indent=1))  # after every row: a killed sweep keeps what it measured
            if not r.get("ok"):
                print(f"| {cfg['n']} | {cfg['v']} | {cfg['d']} | {cfg['dtype']} | {impl} | failed: "
                      f"{r['error']} | | | |", flush=True)
                continue
            t_ratio = row["time_median_s"] / ref["time_median_s"] if ref else float("nan")
            m_ratio = ref["peak_bytes"] / max(row["peak_bytes"], 1) if ref else float("nan")
            shown = f"auto→{r['resolved_impl']}" if r.get("resolved_impl") else impl
            print(f"| {cfg['n']} | {cfg['v']} | {cfg['d']} | {cfg['dtype']} | {shown} | {row['time_median_s']:.4g}"
                  f" | {row['peak_bytes'] / gib:.3f} | {t_ratio:.2f}x | {m_ratio:.1f}x |", flush=True)
    print(f"# wrote {path}")


def _ints(s: str) -> list[int]:
    return [int(float(x.lower().replace("k", "e3"))) if "k" in x.lower() else int(x) for x in s.split(",")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--n", default=None, help="comma-separated token counts (default cpu: 1024,8192)")
    p.add_argument("--v", default=None, help="comma-separated vocab sizes (default cpu: 128000)")
    p.add_argument("--d", default=None, help="comma-separated hidden sizes (default cpu: 1024)")
    p.add_argument("--dtype", default=None, help="fp32,bf16 (default: fp32 on cpu, bf16 on cuda)")
    p.add_argument("--impls", default="reference,torch_ce,chunked,chunked_hint,triton,liger,cce",
                   help="reference (our naive path), torch_ce (F.cross_entropy on logits), chunked, chunked_hint "
                        "(chunked with the CE grad_hint, as the LM objective calls it), triton (experimental), liger, "
                        "cce (raw CCE call, its defaults: gradient filtering on), cce_exact (raw, CCE's exact preset), "
                        "cce_ours (CCE through our wrapper, exact settings), auto (what "
                        "token_logprobs picks; shown as auto→name); unavailable ones are skipped")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (median reported)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls first (default: 0 on cpu, 2 on cuda)")
    p.add_argument("--entropy", action="store_true", help="also compute the entropy in our paths")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.n, args.v, args.d = int(args.n), int(args.v), int(args.d)
        child(args)
        return
    cpu = args.device == "cpu"
    args.n = args.n or ("1024,8192" if cpu else "1024,8192,32768")
    args.v = args.v or ("128000" if cpu else "32768,131072")
    args.d = args.d or ("1024" if cpu else "512,2048")
    args.dtype = args.dtype or ("fp32" if cpu else "bf16")
    args.warmup = (0 if cpu else 2) if args.warmup is None else args.warmup
    args.reps = args.reps or (2 if cpu else 10)
    parent(args)


if __name__ == "__main__":
    main()
