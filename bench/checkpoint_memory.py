"""Benchmark: what saving a checkpoint costs a real DPO run. SmolLM2-135M-Instruct, full fine-tune, reference copy.

Three runs on the same generated preference pairs, each in its own process, same steps, batch, lr and length:
- `tokensmith, saving`: `python train.py model=smollm2_135m data=preference_jsonl method=dpo`, a checkpoint at the
  last step (the default callbacks);
- `tokensmith, no checkpoint`: the same with `callbacks.model_checkpoint=null`;
- `TRL DPOTrainer, saving`: TRL's trainer on the same model weights and pairs, saving at the last step
  (`save_steps`), when `trl` is importable (skipped with a note otherwise; `--trl-path` adds a directory to its
  import path, e.g. one filled by `pip install --no-deps --target DIR trl`).
Peak memory is each process's max RSS (`os.wait4`); the checkpoint size is `last.ckpt` (TRL: its checkpoint dir).
`--tree DIR` runs another checkout's train.py for the tokensmith rows (to compare commits: before/after a change).

    python bench/checkpoint_memory.py                  # ~5 min on 2 CPU cores
    python bench/checkpoint_memory.py --tree /tmp/old --skip-trl

Prints a markdown table; appends JSON rows to bench/results/checkpoint_memory-<time>.json.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.kernels import _machine, _versions, run_measured  # noqa: E402  (machine and version strings, shared)

WORDS = ["apple", "river", "stone", "cloud", "music", "garden", "light", "paper", "window", "silver", "forest",
         "bridge", "candle", "ocean", "market", "winter", "pencil", "ladder", "mirror", "thunder"]


def write_pairs(path: Path, n: int, seed: int = 0) -> None:
    """n {prompt, chosen, rejected} records of ~25 / ~30 tokens: a list to continue, right and wrong."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            items = rng.sample(WORDS, 8)
            prompt = "Repeat these words in order: " + ", ".join(items) + ".\n"
            f.write(json.dumps({"prompt": prompt, "chosen": " ".join(items) + ".",
                                "rejected": " ".join(reversed(items)) + "."}) + "\n")


def _run(cmd: list[str], log: Path, env: dict[str, str], cwd: Path) -> tuple[int, float]:
    """(exit status, max RSS in GiB) of one child; its output goes to `log`."""
    rc, maxrss, text = run_measured(cmd, env, cwd)
    log.write_text(text)
    return rc, maxrss / 2**30


def tokensmith_cmd(tree: Path, pairs: Path, out: Path, a: argparse.Namespace, save: bool) -> list[str]:
    return [sys.executable, str(tree / "train.py"), "model=smollm2_135m", "data=preference_jsonl", "method=dpo",
            f"data.source.path={pairs}", f"data.seq_len={a.seq}", f"data.batch_size={a.batch}",
            "data.num_workers=0", "data.num_proc=null", "data.val_fraction=0.05", f"trainer.max_steps={a.steps}",
            f"trainer.val_check_interval={a.steps}", "trainer.limit_val_batches=1", "method.reference=copy",
            f"method.beta={a.beta}", f"method.optimizer.lr={a.lr}", "callbacks.progress_bar=null",
            "callbacks.run_artifacts.sample_max_new_tokens=0", f"hydra.run.dir={out}",
            *([] if save else ["callbacks.model_checkpoint=null"])]


def trl_child(a: argparse.Namespace) -> None:
    """TRL's DPOTrainer on the same weights (our SmolLM2 loader) and pairs; saves at the last step."""
    import datasets
    from trl import DPOConfig, DPOTrainer

    from src.data.tokenizer import load_pretrained
    from src.models.components.hf_adapter import HFBackbone

    model = HFBackbone("smollm2-135m", cache_dir=os.environ["TOKENSMITH_CACHE"]).model
    # the GGUF is dequantised to float32 on load, but transformers keeps its "quantized" flag, and its Trainer
    # refuses to fine-tune a quantized model without adapters: the weights are plain float32 tensors
    model.is_quantized, model.hf_quantizer = False, None
    tok = load_pretrained("smollm2-135m", cache_dir=os.environ["TOKENSMITH_CACHE"]).hf
    rows = [json.loads(x) for x in Path(a.pairs).read_text().splitlines()]
    args = DPOConfig(output_dir=a.out, per_device_train_batch_size=a.batch, max_steps=a.steps,
                     learning_rate=a.lr, beta=a.beta, max_length=a.seq, save_strategy="steps", save_steps=a.steps,
                     report_to=[], logging_steps=1, use_cpu=True, dataloader_num_workers=0, seed=0)
    ref = copy.deepcopy(model).eval().requires_grad_(False)  # TRL would reload it from the model's path: a copy
    DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=datasets.Dataset.from_list(rows),
               processing_class=tok).train()


def _size(path: Path) -> float | None:
    """GiB of a file, or of every file under a directory; None when absent."""
    if path.is_file():
        return path.stat().st_size / 2**30
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
    return sum(p.stat().st_size for p in files) / 2**30 if files else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--pairs-n", type=int, default=48)
    ap.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose train.py the tokensmith rows run")
    ap.add_argument("--skip-trl", action="store_true")
    ap.add_argument("--trl-path", help="a directory to put on the TRL child's import path")
    ap.add_argument("--trl-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pairs", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.trl_child:
        trl_child(a)
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(os.cpu_count()), "HF_HUB_OFFLINE": "1",
           "TOKENSMITH_CACHE": os.environ.get("TOKENSMITH_CACHE", str(ROOT / ".cache"))}
    rows = []
    with tempfile.TemporaryDirectory(prefix="ckpt_bench_") as tmp:
        t = Path(tmp)
        pairs = t / "pairs.jsonl"
        write_pairs(pairs, a.pairs_n)
        runs = [("tokensmith, saving", True), ("tokensmith, no checkpoint", False)]
        for name, save in runs:
            out = t / name.replace(", ", "_").replace(" ", "_")
            rc, rss = _run(tokensmith_cmd(a.tree.resolve(), pairs, out, a, save), t / f"{out.name}.log", env,
                           a.tree)
            if rc != 0:
                print((t / f"{out.name}.log").read_text()[-3000:], file=sys.stderr)
                raise SystemExit(f"{name}: train.py failed (exit {rc})")
            rows.append({"run": name, "peak_rss_gib": rss, "checkpoint_gib": _size(out / "checkpoints" / "last.ckpt")})
        if not a.skip_trl:
            trl_env = {**env, "PYTHONPATH": os.pathsep.join(p for p in (a.trl_path, str(ROOT)) if p)}
            out = t / "trl"
            cmd = [sys.executable, __file__, "--trl-child", f"--pairs={pairs}", f"--out={out}", f"--steps={a.steps}",
                   f"--batch={a.batch}", f"--seq={a.seq}", f"--lr={a.lr}", f"--beta={a.beta}"]
            rc, rss = _run(cmd, t / "trl.log", trl_env, ROOT)
            if rc != 0:
                print(f"TRL row skipped (exit {rc}): {(t / 'trl.log').read_text()[-600:]}", file=sys.stderr)
            else:
                rows.append({"run": "TRL DPOTrainer, saving", "peak_rss_gib": rss,
                             "checkpoint_gib": _size(out / f"checkpoint-{a.steps}")})
    print(f"SmolLM2-135M DPO, {a.steps} steps x {a.batch} pairs, seq {a.seq}, full fine-tune, reference copy; "
          f"{_machine('cpu')}; tree {a.tree}")
    print("| run | peak RSS (GiB) | checkpoint (GiB) |\n|---|---|---|")
    for r in rows:
        ck = f"{r['checkpoint_gib']:.2f}" if r["checkpoint_gib"] is not None else "-"
        print(f"| {r['run']} | {r['peak_rss_gib']:.2f} | {ck} |")
    res = ROOT / "bench" / "results"
    res.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    meta = {"machine": _machine("cpu"), "versions": _versions(), "tree": str(a.tree), "args": {
        k: v for k, v in vars(a).items() if k in ("steps", "batch", "seq", "lr", "beta", "pairs_n")}}
    (res / f"checkpoint_memory-{stamp}.json").write_text(json.dumps([{**meta, **r} for r in rows], indent=2))


if __name__ == "__main__":
    main()
