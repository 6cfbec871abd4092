"""Learn a Skill-It skills graph (the authors did not release theirs): brute-force or approximate estimator.

    python scripts/learn_skills_graph.py --method approximate --steps 150 experiment=skillit/lego
    python scripts/learn_skills_graph.py --method brute --steps 150 experiment=skillit/addition

Every probe run starts from the same initial weights (the composed config's model at `seed`) and trains with
constant lr for `--steps` steps on a fixed mixture:
- approximate, k runs: skill i alone; A[i, j] = max(0, L_j(before) − L_j(after)), scaled to max 1.
- brute, k + k(k-1)/2 runs: j alone gives d_j, the balanced (i, j) mix gives d_ij on j and d_ji on i;
  edge i→j (0.5) if d_ij > d_j, diagonal 1.
Writes `<out>/skills_graph.yaml` (use it with `curriculum.callback.graph=<path>`) and `<out>/skills_graph.png`.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import src.runtime.resolvers  # noqa: E402, F401  (registers ${ts.*}, as train.py does)
from src.callbacks.skills.evaluation import answer_stats  # noqa: E402
from src.data.collate import PadCollator  # noqa: E402
from src.data.skill_sampler import SkillSampler  # noqa: E402
from src.data.skills_graph import approximate_graph, brute_force_graph  # noqa: E402
from src.losses.token_ce import token_cross_entropy  # noqa: E402
from src.models.logprobs import batch_logprobs  # noqa: E402
from src.plots.save import save_png  # noqa: E402


def compose_cfg(overrides: list[str], run_dir: Path) -> Any:
    """The config `python train.py <overrides>` would run, composed outside Hydra's main; only the run dir (which
    this script never writes to) is fixed. `paths.log_dir` stays the project's, so `--out` defaults under
    outputs/ (or TOKENSMITH_OUTPUTS)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf"), job_name="learn_skills_graph"):
        return compose(config_name="train", overrides=[*overrides, f"paths.output_dir={run_dir}"])


def skill_losses(backbone: torch.nn.Module, dm) -> np.ndarray:  # noqa: ANN001
    """Answer-token loss per skill on the validation questions `[k]`."""
    backbone.eval()
    out = np.zeros(dm.k)
    for j in range(dm.k):
        nll = n = 0.0
        for batch in dm.skill_val_batches(j):
            stats = answer_stats(backbone, batch)  # [nll, answer tokens, right, answers]
            nll, n = nll + float(stats[0]), n + float(stats[1])
        out[j] = nll / max(n, 1)
    backbone.train()
    return out


def train_on(backbone: torch.nn.Module, dm, weights: list[float], steps: int, lr: float, seed: int) -> None:  # noqa: ANN001
    opt = torch.optim.AdamW(backbone.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    sampler = SkillSampler(dm.pool_sizes, weights, seed=seed)
    loader = torch.utils.data.DataLoader(dm.train_dataset, batch_size=dm.batch_size, sampler=sampler,
                                         collate_fn=PadCollator(dm.tokenizer.pad_id))
    for _, batch in zip(range(steps), loader):
        logp = batch_logprobs(backbone, batch).logp  # [B, T]
        loss, _ = token_cross_entropy(logp.flatten(), batch["labels"].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(backbone.parameters(), 1.0)
        opt.step()


def plot_graph(a: np.ndarray, names: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    im = ax.imshow(a, cmap="viridis", vmin=0)
    ax.set_xticks(range(len(names)), names, rotation=45)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("evaluated skill j")
    ax.set_ylabel("trained skill i")
    for (i, j), v in np.ndenumerate(a):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w" if v < a.max() / 2 else "k", fontsize=8)
    fig.colorbar(im, ax=ax)
    ax.set_title(title, fontsize=9)
    save_png(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", choices=("approximate", "brute"), default="approximate")
    ap.add_argument("--steps", type=int, default=150, help="training steps per probe run (h or H)")
    ap.add_argument("--warmup-steps", type=int, default=0,
                    help="first train the shared start on the uniform mix (learns the answer format, so probes "
                         "measure skill transfer rather than 'answer with a bit')")
    ap.add_argument("--out", type=Path, default=None, help="output dir (default outputs/<task>/graphs/<method>)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=skillit/lego seed=2")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    tmp = Path("/tmp") / f"skills-graph-{time.time_ns()}"
    cfg = compose_cfg(list(args.overrides), tmp)
    torch.manual_seed(cfg.seed)
    dm = instantiate(cfg.data, _convert_="all")
    # Skill records with answer losses (SkillDataModule); RL prompts sample by skill too, but have no answer loss
    if not hasattr(dm, "skill_val_batches") or "loss" not in getattr(dm, "skill_signals", ("loss",)):
        raise SystemExit("learning a skills graph needs a skills data config (data=lego|addition|skills_jsonl)")
    dm.setup("fit")
    sized = {"vocab_size": dm.tokenizer.vocab_size} if OmegaConf.is_missing(cfg.model, "vocab_size") else {}
    init = instantiate(cfg.model, **sized)
    lr = float(cfg.method.optimizer.lr)
    if args.warmup_steps:
        train_on(init, dm, [1.0] * dm.k, args.warmup_steps, lr, cfg.seed + 1)
    before = skill_losses(init, dm)
    k, t0 = dm.k, time.perf_counter()

    def probe(weights: list[float]) -> np.ndarray:
        model = copy.deepcopy(init)
        train_on(model, dm, weights, args.steps, lr, cfg.seed)
        return skill_losses(model, dm)

    onehot = [[1.0 if x == i else 0.0 for x in range(k)] for i in range(k)]
    after_single = np.stack([probe(onehot[i]) for i in range(k)])  # [k, k]: row i trained on i
    if args.method == "approximate":
        graph = approximate_graph(before, after_single)
        extra = {"loss_after": after_single.round(4).tolist()}
    else:
        d_single = before - np.diag(after_single)  # [k]
        d_pair = np.zeros((k, k))
        for i in range(k):
            for j in range(i + 1, k):  # the (i, j) and (j, i) mixes are the same run: one gives both gains
                after = probe([0.5 if x in (i, j) else 0.0 for x in range(k)])  # [k]
                d_pair[i, j], d_pair[j, i] = before[j] - after[j], before[i] - after[i]
        graph = brute_force_graph(d_single, d_pair)
        extra = {"gain_single": d_single.round(4).tolist(), "gain_pair": d_pair.round(4).tolist()}
    out = args.out or Path(cfg.paths.log_dir) / cfg.task_name / "graphs" / args.method
    out.mkdir(parents=True, exist_ok=True)
    doc = {"skills": dm.skill_names, "method": args.method, "steps": args.steps, "warmup_steps": args.warmup_steps,
           "seed": int(cfg.seed), "overrides": list(args.overrides), "loss_before": before.round(4).tolist(), **extra,
           "graph": graph.round(4).tolist(), "seconds": round(time.perf_counter() - t0, 1)}
    (out / "skills_graph.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    plot_graph(graph, dm.skill_names, out / "skills_graph.png", f"{cfg.task_name}: {args.method}, {args.steps} steps")
    print(yaml.safe_dump({"graph": doc["graph"]}, default_flow_style=None), f"written to {out}", sep="")


if __name__ == "__main__":
    main()
