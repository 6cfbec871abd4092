"""How far can one GRPO step go before it hurts? Move a policy along its GRPO gradient and measure the reward.

    python scripts/grpo_step_probe.py outputs/grpo_arith/runs/<run>            # the run's SFT base (stage 1)
    python scripts/grpo_step_probe.py <run dir> --prompts 64 --steps 0.003 0.01 0.03 0.1 --advantages positive

A policy-gradient step of small enough size raises the expected reward; how small "small enough" is sets the
learning rate GRPO can use. This script takes a run's stage-1 policy (the base GRPO starts from), computes the
GRPO loss gradient on `--batches` generation batches of `--prompts` prompts × G rollouts (the run's own GRPO stage
config: reward, normaliser, temperature), and moves the weights by a parameter-space distance s along the
normalised descent direction, for each s in `--steps`. It reports the mean sampled reward on `--eval-batches`
other prompt batches before and after each move, with the same sampling seeds (common random numbers), so the
differences are the step's and not the sampler's. `--advantages positive` keeps only the rollouts that beat their
group (SFT on the policy's own correct solutions), `negative` only the others: which half does the damage.

Read the table against Adam: its step moves each parameter by about the learning rate, i.e. a distance of about
lr · sqrt(#parameters) per update, along a direction of its own (not the gradient's).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a grpo/arith (two-stage) run dir: its stage-1 checkpoint is the policy")
    ap.add_argument("--prompts", type=int, default=64, help="prompts per batch (G rollouts each: the run's own G)")
    ap.add_argument("--batches", type=int, default=2, help="generation batches the gradient is summed over")
    ap.add_argument("--eval-batches", type=int, default=2, help="other prompt batches the reward is measured on")
    ap.add_argument("--steps", type=float, nargs="+", default=[0.003, 0.01, 0.03, 0.1],
                    help="parameter-space distances to move along the normalised descent direction")
    ap.add_argument("--advantages", choices=["all", "positive", "negative"], default="all")
    ap.add_argument("--seed", type=int, default=1000)
    a = ap.parse_args(argv)

    from omegaconf import OmegaConf

    from src.recipes.finetune import finetune_config
    from src.runtime.build import build_components

    cfg_file, ckpt = a.run / "config_resolved.yaml", a.run / "checkpoints" / "last.ckpt"
    if not (cfg_file.is_file() and ckpt.is_file()):
        print(f"error: {a.run} is not a finished run dir (it needs config_resolved.yaml and checkpoints/last.ckpt)",
              file=sys.stderr)
        return 2
    cfg = OmegaConf.load(cfg_file)
    if cfg.get("finetune") is None:
        print(f"error: {a.run} has no `finetune:` stage; run it with experiment=grpo/arith", file=sys.stderr)
        return 2
    cfg.finetune.data.batch_size = a.prompts
    ft = finetune_config(cfg, Path("/tmp") / "grpo_step_probe")
    dm, module, _ = build_components(ft)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    module.load_backbone_weights({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")})
    dm.setup("fit")
    batches = iter(dm.train_dataloader())
    train = [next(batches) for _ in range(a.batches)]
    held = [next(batches) for _ in range(a.eval_batches)]
    g = int(module.g)

    def reward(seed: int) -> float:
        total = 0.0
        for i, b in enumerate(held):
            gen = torch.Generator().manual_seed(seed + i)
            module.sampler = lambda gen=gen: gen
            with torch.no_grad():
                _, texts, meta = module._generate(b, g, greedy=False, max_new_tokens=module.max_new_tokens)
            total += float(module._score(texts, meta)[0].mean())
        return total / len(held)

    module.sampler = lambda: torch.Generator().manual_seed(a.seed - 1)
    module.backbone.zero_grad()
    for b in train:
        fixed, _ = module.make_generation_batch(b)
        if a.advantages != "all":
            adv = fixed["advantages"]
            fixed["advantages"] = adv.clamp(min=0) if a.advantages == "positive" else adv.clamp(max=0)
        out = module.compute_loss(fixed)
        (out.numerator / out.denominator).backward()
    grads = {n: p.grad.detach().clone() for n, p in module.backbone.named_parameters() if p.grad is not None}
    norm = float(torch.sqrt(sum((x.double() ** 2).sum() for x in grads.values())))
    n_params = sum(p.numel() for p in module.backbone.parameters())
    if not norm > 0:
        print(f"error: the GRPO gradient is zero on these {a.batches} batches (every group's rollouts scored alike, so "
              "every advantage is 0): nothing to probe; use more --prompts or a base that solves some prompts",
              file=sys.stderr)
        return 1
    base = copy.deepcopy(module.backbone.state_dict())
    print(f"# {a.run}: {n_params} parameters, gradient norm {norm:.4g} over {a.batches} x {a.prompts} prompts x G={g}"
          f" ({a.advantages} advantages); Adam at lr 1e-4 moves ~{1e-4 * n_params ** 0.5:.3g} per update")
    print("| distance s | sampled reward (held-out prompt batches) |\n|---|---|")
    print(f"| 0 (the base) | {reward(a.seed):.4f} |")
    for s in a.steps:
        module.backbone.load_state_dict(base)
        with torch.no_grad():
            for n, p in module.backbone.named_parameters():
                if n in grads:
                    p -= s * grads[n] / norm
        print(f"| {s:g} | {reward(a.seed):.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
