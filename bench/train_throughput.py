"""Training throughput: the tokensmith training step vs a bare PyTorch loop, and our compact transformer vs
Hugging Face's LlamaForCausalLM of the same shape.

    python bench/train_throughput.py                       # CPU defaults (~3 min on 2 cores)
    python bench/train_throughput.py --device cuda --dtype bf16 --d 1024 --layers 24 --heads 16 \
        --seq 2048 --batch 8 --vocab 32768                  # ~350M on one GPU, reports MFU
    ... --dtype bf16-true --fused-adamw --compile          # bf16 weights, fp32 master weights, fused AdamW

`--dtype`: fp32; bf16 (autocast over fp32 weights, Lightning's bf16-mixed); bf16-true (the model in bf16, fp32
master weights in the optimizer: src/models/master_weights.py, Lightning's bf16-true).

Every mode trains the same architecture from the same initial weights on the same in-memory batches, so the
ratios isolate what differs:
- tokensmith: a real Lightning Trainer with our CausalLMModule, CSV logger and our callbacks (framework cost);
- bare (fused loss): a hand-written loop with the same loss kernel, clipping, AdamW and schedule;
- bare (naive CE): the loop a user writes first (materialised logits + F.cross_entropy);
- compact vs HF Llama: the naive-CE loop on each architecture.
Modes run in interleaved rounds and report the median step time, because these CPUs are shared.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.losses.token_ce import token_cross_entropy  # noqa: E402
from src.models.components.transformer import CompactTransformer  # noqa: E402
from src.models.logprobs import batch_logprobs  # noqa: E402
from src.models.master_weights import master_weight_adamw  # noqa: E402
from src.models.schedules import warmup_cosine  # noqa: E402

# --dtype -> Lightning precision
PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed", "bf16-true": "bf16-true"}


def make_batches(n: int, batch: int, seq: int, vocab: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (batch, seq + 1), generator=g)
        out.append({"input_ids": ids[:, :-1].contiguous(), "labels": ids[:, 1:].contiguous(),
                    "attention_mask": torch.ones(batch, seq, dtype=torch.long)})
    return out


def optimizer_factory(dtype: str, fused: bool, lr: float = 3e-4) -> Callable[..., torch.optim.Optimizer]:
    """AdamW as the framework builds it (`method.optimizer`); on fp32 masters for bf16-true."""
    kw = {"lr": lr, "betas": (0.9, 0.95), "weight_decay": 0.1, **({"fused": True} if fused else {})}
    return partial(master_weight_adamw if dtype == "bf16-true" else torch.optim.AdamW, **kw)


def optimizer_for(model: torch.nn.Module, dtype: str, fused: bool) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    return optimizer_factory(dtype, fused)([{"params": decay}, {"params": rest, "weight_decay": 0.0}])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_loop(model, batches, device, dtype, loss: str, steps: int, hf: bool = False,  # noqa: ANN001
              fused: bool = False) -> list[float]:
    """Hand-written training loop; returns per-step wall times (s). `loss="fused"` needs one of our backbones
    (`hf=False`); the HF model runs the naive CE only."""
    if hf and loss == "fused":
        raise ValueError("the fused loss runs on our backbone contract; the HF model is benchmarked with naive CE")
    opt = optimizer_for(model, dtype, fused)
    sched = warmup_cosine(opt, warmup_steps=10, total_steps=10_000)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")  # bf16-true: no casts
    times = []
    for i in range(steps):
        b = {k: v.to(device, non_blocking=True) for k, v in batches[i % len(batches)].items()}
        t0 = time.perf_counter()
        with autocast:
            if loss == "fused":  # the objective's path (src/models/logprobs.py): same kernel and batch keys
                logp = batch_logprobs(model, b).logp  # [B, T]
                value, _ = token_cross_entropy(logp.flatten(), b["labels"].flatten())
            else:
                if hf:
                    hidden = model.model(input_ids=b["input_ids"]).last_hidden_state  # [B, T, d]
                    weight = model.lm_head.weight
                else:
                    hidden = model(b["input_ids"])  # [B, T, d]
                    weight = model.output_weight
                logits = hidden @ weight.T  # [B, T, V]
                value = F.cross_entropy(logits.flatten(0, 1).float(), b["labels"].flatten())
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def lightning_loop(model, batches, device, dtype, steps: int, workdir: Path,  # noqa: ANN001
                   fused: bool = False) -> list[float]:
    """The tokensmith step: Trainer + CausalLMModule + CSV logger + our callbacks; per-step wall times."""
    import lightning.pytorch as pl

    from src.callbacks.artifacts import RunArtifacts
    from src.models.lm import CausalLMModule

    class Timer(pl.Callback):
        def __init__(self) -> None:
            self.stamps: list[float] = []

        def on_train_batch_start(self, *a: object) -> None:
            sync(device)
            self.stamps.append(time.perf_counter())

        def on_train_batch_end(self, *a: object) -> None:
            sync(device)
            self.stamps.append(time.perf_counter())

    module = CausalLMModule(
        model,
        optimizer=optimizer_factory(dtype, fused),
        scheduler=partial(warmup_cosine, warmup_steps=10, total_steps=10_000),
    )
    timer = Timer()
    trainer = pl.Trainer(
        accelerator=device.type, devices=1, max_steps=steps, precision=PRECISION[dtype],
        gradient_clip_val=1.0, logger=pl.loggers.CSVLogger(workdir, name="csv", version=""),
        callbacks=[timer, RunArtifacts(sample_max_new_tokens=0)], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, default_root_dir=workdir,
        log_every_n_steps=10,
    )
    loader = torch.utils.data.DataLoader([batches[i % len(batches)] for i in range(steps)], batch_size=None)
    trainer.fit(module, train_dataloaders=loader)
    s = timer.stamps
    # start of batch i to start of batch i+1: includes Lightning's hooks, logging and data fetch
    return [s[2 * i + 2] - s[2 * i] for i in range(len(s) // 2 - 1)]


def hf_llama_like(model: CompactTransformer) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=model.vocab_size, hidden_size=model.d_model, intermediate_size=model.ffn_hidden,
                      num_hidden_layers=model.n_layers, num_attention_heads=model.n_heads,
                      num_key_value_heads=model.n_kv_heads, max_position_embeddings=model.max_seq_len,
                      rope_theta=model.rope_theta, tie_word_embeddings=False, attn_implementation="sdpa")
    return LlamaForCausalLM(cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=list(PRECISION), default="fp32")
    ap.add_argument("--fused-adamw", action="store_true", help="AdamW(fused=True): one kernel for the whole step")
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=12, help="measured steps per mode per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (nn.Module.compile) in every mode")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="for MFU on CUDA (H100 SXM bf16 dense)")
    ap.add_argument("--modes", default="tokensmith,bare_fused,bare_naive,hf_llama")
    ap.add_argument("--out", default="bench/results/train_throughput.json")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    base = CompactTransformer(args.vocab, args.d, args.layers, args.heads, max_seq_len=args.seq)
    batches = make_batches(8, args.batch, args.seq, args.vocab)
    tokens_per_step = args.batch * args.seq
    modes = args.modes.split(",")
    times: dict[str, list[float]] = {m: [] for m in modes}
    workdir = Path(args.out).parent / "lightning_tmp"
    warm = 3
    for r in range(args.rounds):
        for m in (modes if r % 2 == 0 else modes[::-1]):  # alternate order against drift
            model = copy.deepcopy(base) if m != "hf_llama" else hf_llama_like(base)
            model.to(device)
            if args.dtype == "bf16-true":
                model.to(torch.bfloat16)  # what Lightning's bf16-true does (the tokensmith mode does it again)
            if args.compile:
                model.compile()
            n = args.steps + warm
            if m == "tokensmith":
                # start-to-start intervals: n + 1 batches give n of them, as many as the bare loops time
                t = lightning_loop(model, batches, device, args.dtype, n + 1, workdir, fused=args.fused_adamw)
            else:
                t = bare_loop(model, batches, device, args.dtype, "fused" if m == "bare_fused" else "naive", n,
                              hf=m == "hf_llama", fused=args.fused_adamw)
            times[m] += t[warm:]
            del model
    med = {m: statistics.median(v) for m, v in times.items()}
    flops = base.flops_per_token(args.seq)
    rows = []
    for m in modes:
        tps = tokens_per_step / med[m]
        row = {"mode": m, "median_step_s": med[m], "tokens_per_s": tps, "steps": len(times[m])}
        if device.type == "cuda":
            row["mfu"] = flops * tps / (args.peak_tflops * 1e12)
        rows.append(row)
    ref = {"tokensmith": "bare_fused", "bare_naive": "bare_fused", "hf_llama": "bare_naive"}
    print(f"\n{device} {args.dtype} d={args.d} L={args.layers} H={args.heads} T={args.seq} B={args.batch} "
          f"V={args.vocab} compile={args.compile} fused_adamw={args.fused_adamw} "
          f"params={base.num_params() / 1e6:.1f}M torch={torch.__version__} {date.today()}")
    print("| mode | median step (ms) | tokens/s | vs | ratio |" + (" MFU |" if device.type == "cuda" else ""))
    print("|---|---|---|---|---|" + ("---|" if device.type == "cuda" else ""))
    for row in rows:
        other = ref.get(row["mode"])
        ratio = row["tokens_per_s"] / (tokens_per_step / med[other]) if other in med else None
        row["ratio_vs"] = other if ratio else None
        row["ratio"] = ratio
        line = (f"| {row['mode']} | {1e3 * row['median_step_s']:.1f} | {row['tokens_per_s']:.0f} | "
                f"{other or ''} | {f'{ratio:.3f}' if ratio else ''} |")
        if device.type == "cuda":
            line += f" {100 * row['mfu']:.1f}% |"
        print(line)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"date": str(date.today()), "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__, "args": vars(args)}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
