"""The critical-token DPO recipe ("cDPO" in tokensmith; not the label-smoothed "conservative DPO"), one command:

    python train.py experiment=cdpo/arith

Stages, each in its own directory of the run dir, each skipped when its artifact exists (src/recipes/stages.py):

| stage | does | artifact |
|---|---|---|
| sft | supervised fine-tuning of the base policy on the task | sft/final.pt, tokenizer/ |
| sample | k solutions per training question (KV cache, temperature, top-p), graded | sample/samples.jsonl |
| select | positive set, negative set, preference pairs (src/recipes/cdpo_select.py) | select/*.jsonl |
| positive, negative | the two contrastive models, each fine-tuned FROM THE BASE on its set | */final.pt |
| score | s_t per token of every pair; 1 − s_t weights; HTML picture; lowest-token analysis | score/pairs.jsonl |
| dpo, cdpo | sequence DPO and token-weighted DPO from the same start (the base), reference = the base | */final.pt |
| shuffled, constant | cDPO's controls (`recipe.arms=[dpo,cdpo,shuffled,constant]`, weight_controls.py) | */final.pt |

The task (`recipe.task`, src/recipes/cdpo_task.py) is the built-in arithmetic one (`kind: arith`) or your own
`{prompt, answer}` records graded by the `reward=` group (`kind: prompt`, `experiment=cdpo/prompts`). Every
training stage evaluates greedy accuracy on the task's held-out questions, so the run's metrics.json holds
`sft/<acc>`, `positive/<acc>` (the "SFT on the positive set" baseline), `dpo/<acc>`, `cdpo/<acc>` (`<acc>`:
`arith/acc` or `task/acc`), the sampling and selection counts, and, where the task defines steps, the
critical-token analysis.

Continue an interrupted recipe with `ckpt_path=last` (the newest run of this task) or `ckpt_path=<run dir>`:
finished stages are skipped, an interrupted training stage resumes from its own last checkpoint, an interrupted
sampling stage keeps its finished chunks. `debug=smoke` makes every stage a few steps on a few questions.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.data.cache import atomic_write_lines, atomic_write_text
from src.data.errors import DataError
from src.recipes.cdpo_select import select_contrastive_data
from src.recipes.cdpo_task import CdpoTask, build_task
from src.recipes.sampling import sample_graded
from src.recipes.stages import build_backbone, load_weights, stage_config, train_stage
from src.recipes.token_scores import first_wrong_step_analysis, score_pairs, token_spans
from src.recipes.weight_controls import CONTROLS
from src.runtime.checkpoints import CheckpointNotFoundError, ensure_fresh_run_dir
from src.runtime.errors import ConfigError

log = logging.getLogger(__name__)
STATE = "recipe.json"  # marks a recipe's run dir; lists the finished stages
SMOKE_TRAINER = {"max_steps": 4, "val_check_interval": 2, "limit_val_batches": 2}
SMOKE_SAMPLE = {"n_questions": 8, "k": 4, "chunk_questions": 4}
ARMS = ("dpo", "cdpo", *CONTROLS)  # the preference stages recipe.arms may name (dpo and cdpo by default)


def recipe_run_dir(cfg: DictConfig) -> Path:
    """The run dir to work in: a fresh one, or (ckpt_path=last | <run dir>) an earlier run of this recipe."""
    out = Path(cfg.paths.output_dir)
    want = cfg.get("ckpt_path")
    if want in (None, "", "null"):
        if (out / STATE).is_file():  # a requeued job keeps its run dir: continue it
            return out
        ensure_fresh_run_dir(out)
        return out
    if want == "last":
        if (out / STATE).is_file():
            return out
        runs = Path(cfg.paths.log_dir) / cfg.task_name / "runs"
        found = sorted(runs.glob(f"*/{STATE}"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise CheckpointNotFoundError(f"ckpt_path=last: no earlier run of this recipe under {runs}/ (none has "
                                          f"{STATE}); run without ckpt_path first, or pass ckpt_path=<run dir>")
        return found[-1].parent
    path = Path(want)
    if not (path / STATE).is_file():
        raise CheckpointNotFoundError(f"ckpt_path={want}: not the run dir of a recipe (it has no {STATE}); pass the "
                                      "directory the recipe was started in")
    return path


def _write_state(run_dir: Path, done: list[str]) -> None:
    atomic_write_text(run_dir / STATE, json.dumps({"recipe": "cdpo", "done": done}, indent=2) + "\n")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def _prefixed(prefix: str, metrics: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}


def check_settings(r: DictConfig) -> None:
    """Every recipe setting in range before any stage runs (one message naming the key and the fix)."""
    s, sel, sc = r.sample, r.select, r.score
    problems = [
        (int(s.n_questions) >= 1, f"recipe.sample.n_questions={s.n_questions} must be >= 1"),
        (int(s.k) >= 2, f"recipe.sample.k={s.k} must be >= 2 (pairs need a right and a wrong solution)"),
        (float(s.temperature) > 0, f"recipe.sample.temperature={s.temperature} must be > 0 (k greedy samples are "
                                   "k copies of one solution)"),
        (s.get("top_p") is None or 0 < float(s.top_p) <= 1, f"recipe.sample.top_p={s.get('top_p')} must be in (0, 1]"),
        (int(s.max_new_tokens) >= 1, f"recipe.sample.max_new_tokens={s.max_new_tokens} must be >= 1"),
        (int(s.chunk_questions) >= 1, f"recipe.sample.chunk_questions={s.chunk_questions} must be >= 1"),
        (0 < float(sel.negative_coverage) <= 1, f"recipe.select.negative_coverage={sel.negative_coverage} must be "
                                                "in (0, 1]"),
        (int(sel.pairs_per_question) >= 1, f"recipe.select.pairs_per_question={sel.pairs_per_question} must be >= 1"),
        (float(sc.b) >= 0, f"recipe.score.b={sc.b} must be >= 0 (the contrast strength of s_t)"),
    ]
    arms = r.get("arms")
    if arms is not None:
        names = list(arms) if OmegaConf.is_list(arms) or isinstance(arms, list) else [arms]
        unknown = [a for a in names if a not in ARMS]
        problems.append((bool(names) and not unknown and len(set(names)) == len(names),
                         f"recipe.arms={names} must be distinct names among {list(ARMS)}, e.g. "
                         "recipe.arms=[dpo,cdpo,shuffled,constant]"))
    bad = [msg for ok, msg in problems if not ok]
    if bad:
        raise ConfigError("; ".join(bad))


def run_cdpo(cfg: DictConfig) -> dict[str, Any]:
    """Run (or continue) every stage; returns the run's metrics.json content."""
    r = cfg.recipe
    check_settings(r)
    run_dir = recipe_run_dir(cfg).resolve()
    smoke = SMOKE_TRAINER if cfg.get("smoke") else None
    done: list[str] = json.loads((run_dir / STATE).read_text())["done"] if (run_dir / STATE).is_file() else []
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_state(run_dir, done)
    atomic_write_text(run_dir / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    metrics: dict[str, Any] = {}

    def finish(stage: str) -> None:
        if stage not in done:
            done.append(stage)
            _write_state(run_dir, done)

    task = build_task(cfg, run_dir)

    def stage(overrides: Any, name: str) -> DictConfig:  # a stage's config, with the task's held-out evaluation
        c = stage_config(cfg, overrides, run_dir / name, smoke)
        extra = task.stage_callbacks(c.get("callbacks"))
        return OmegaConf.merge(c, {"callbacks": extra}) if extra else c

    # 1. SFT of the base policy; its tokenizer is saved for every later stage
    sft_cfg = stage(r.get("sft") or {}, "sft")
    base, m = train_stage(sft_cfg, "sft", None)
    metrics.update(_prefixed("sft", m))
    finish("sft")
    tok, backbone = build_backbone(sft_cfg)
    tok_dir = run_dir / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file():
        tok.hf.save_pretrained(str(tok_dir))

    # 2. sample k graded solutions per training question
    s = OmegaConf.to_container(r.sample, resolve=True)
    if smoke:
        s.update(SMOKE_SAMPLE)
    questions = task.questions()[: int(s["n_questions"])]
    backbone.load_state_dict(load_weights(base))
    rows = sample_graded(backbone, tok, questions, task.grade, run_dir / "sample" / "samples.jsonl",
                         k=int(s["k"]), temperature=float(s["temperature"]), top_p=s.get("top_p"),
                         max_new_tokens=int(s["max_new_tokens"]), chunk_questions=int(s["chunk_questions"]),
                         seed=int(cfg.seed), prompt_text=lambda q: task.prompt_text(tok, q))
    if smoke:  # a 4-step base solves nothing: give each question its reference solution so later stages have data
        for row in rows:
            ref = task.reference_solution(row)
            if ref is not None:
                g = task.grade(row["prompt"], ref)
                row["completions"].append({"text": ref, "answer": g.answer, "correct": g.correct,
                                           "first_wrong_step": None, "well_formed": g.well_formed})
    comps = [c for row in rows for c in row["completions"]]
    metrics.update({"sample/questions": len(rows), "sample/correct": sum(c["correct"] for c in comps) / len(comps),
                    "sample/well_formed": sum(c["well_formed"] for c in comps) / len(comps)})
    finish("sample")

    # 3. positive / negative sets and pairs, their prompts as the later stages train on them
    def asked(rec: dict[str, Any]) -> dict[str, Any]:  # task.chat: the chat text; `question` keeps what is graded
        return {**rec, "question": rec["prompt"], "prompt": task.prompt_text(tok, rec["prompt"])} if task.chat else rec

    sel_dir = run_dir / "select"
    if not (sel_dir / "pairs.jsonl").is_file():
        sel = select_contrastive_data(rows, float(r.select.negative_coverage), int(r.select.pairs_per_question),
                                      int(cfg.seed))
        for name in ("positive", "negative"):
            if not getattr(sel, name):
                raise DataError(f"cdpo: the {name} set is empty ({sel.stats()} from {len(rows)} questions); "
                                 "sample more questions (recipe.sample.n_questions), more solutions each "
                                 "(recipe.sample.k) or at a higher temperature")
            atomic_write_lines(sel_dir / f"{name}.jsonl", [json.dumps(asked(x)) for x in getattr(sel, name)])
        atomic_write_lines(sel_dir / "pairs.jsonl", [json.dumps(asked(x)) for x in sel.pairs])  # the artifact
    pairs = _jsonl(sel_dir / "pairs.jsonl")
    metrics.update({f"select/{k}": len(_jsonl(sel_dir / f"{k}.jsonl")) for k in ("positive", "negative", "pairs")})
    finish("select")

    # 4. contrastive models, each from the base
    tok_cfg = {"pretrained": str(tok_dir)}
    models: dict[str, Path] = {}
    for name in ("positive", "negative"):
        c = stage(r.contrastive, name)
        c.data.source.path, c.data.tokenizer = str(sel_dir / f"{name}.jsonl"), tok_cfg
        models[name], m = train_stage(c, name, base)
        metrics.update(_prefixed(name, m))
        finish(name)

    # 5. token scores on exactly the ids DPO trains on
    sc = r.score
    score_dir = run_dir / "score"
    scored_file = score_dir / "pairs.jsonl"
    if not scored_file.is_file():
        pos, neg = copy.deepcopy(backbone), copy.deepcopy(backbone)
        pos.load_state_dict(load_weights(models["positive"]))
        neg.load_state_dict(load_weights(models["negative"]))
        seq_len = int(r.preference.data.seq_len)
        backbone.load_state_dict(load_weights(base))  # the DPO stages' reference: log-probs computed once here
        scored = score_pairs(pos, neg, tok, pairs, seq_len=seq_len, b=float(sc.b), reference=backbone,
                             chosen_weights=bool(sc.chosen_weights), batch_size=int(sc.batch_size),
                             seed=int(cfg.seed))
        rows_html = _pictures(tok, scored, task, score_dir, int(sc.html_examples), int(cfg.seed))
        _log_wandb(cfg, score_dir, rows_html)
        atomic_write_lines(scored_file, [json.dumps(x) for x in scored])  # the stage's artifact, last
    analysis = json.loads((score_dir / "analysis.json").read_text())
    metrics.update(_prefixed("score", analysis))
    finish("score")

    # 6. DPO, token-weighted DPO and its controls from the same start and pairs, reference = the base
    arms = list(r.get("arms") or ARMS[:2])
    if any(a in CONTROLS for a in arms):
        first = json.loads(scored_file.read_text().splitlines()[0]) if pairs else {}
        if pairs and f"rejected_weights_{CONTROLS[0]}" not in first:
            raise DataError(f"cdpo: {scored_file} was scored before the weight controls existed (no "
                            f"rejected_weights_{CONTROLS[0]}); delete {score_dir} and rerun with ckpt_path={run_dir} "
                            "to rescore (the other stages are kept)")
    for name in arms:
        c = stage(r.preference, name)
        c.data.source.path, c.data.tokenizer = str(scored_file), tok_cfg
        c.data.format_options.token_weights = name != "dpo"
        if name in CONTROLS:  # the same weights moved (shuffled) or flattened (constant)
            c.data.format_options.rejected_weights_field = f"rejected_weights_{name}"
        # method.reference=precomputed: the base's log-probs from the score stage, no reference model in memory
        c.data.format_options.ref_logps = c.method.get("reference") == "precomputed"
        _, m = train_stage(c, name, base)
        metrics.update(_prefixed(name, m))
        finish(name)

    acc = {k: metrics.get(f"{k}/{task.acc_metric}") for k in ("sft", "positive", *ARMS)}
    gains = [("cdpo", "dpo"), ("cdpo", "sft"), ("dpo", "sft"), ("cdpo", "positive"), ("cdpo", "shuffled"),
             ("cdpo", "constant"), ("shuffled", "sft"), ("constant", "sft")]
    for a, b in gains:  # paired, per seed
        if acc[a] is not None and acc[b] is not None:
            metrics[f"gain/{a}_vs_{b}"] = acc[a] - acc[b]
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    log.info("cdpo: %s", _summary(metrics, task.acc_metric))
    return metrics


def _pictures(tok: Any, scored: list[dict[str, Any]], task: CdpoTask, out: Path, n_html: int,
              seed: int) -> list[dict[str, Any]]:
    """score/analysis.json, score/critical_tokens.html, score/lowest_token_vs_first_wrong_step.png (the last only
    where the task defines steps); returns the rows of the HTML picture."""
    from src.plots.critical_tokens import plot_lowest_token_offsets, token_score_html

    grade = task.grade
    if task.has_steps:
        analysis = first_wrong_step_analysis(tok, scored, grade, seed)
    else:
        analysis = {"n": 0, "note": "the task defines no steps (its grade is a reward): the lowest-scored token "
                                    "cannot be compared with a first wrong step; see critical_tokens.html"}
        log.info("cdpo: first-wrong-step analysis skipped: %s", analysis["note"])
    offsets = analysis.pop("offsets", [])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "analysis.json", json.dumps(analysis, indent=2) + "\n")
    rows = []
    for rec in scored[:n_html]:
        spans = token_spans(tok, rec["rejected"])
        question = rec.get("question", rec["prompt"])
        g = grade(question, rec["rejected"])
        wrong = g.step_spans[g.first_wrong_step] if g.first_wrong_step is not None and \
            g.first_wrong_step < len(g.step_spans) else None
        rows.append({"prompt": question, "tokens": [rec["rejected"][a:b] for a, b in spans],
                     "scores": rec["rejected_scores"][: len(spans)], "wrong_span": wrong})
    atomic_write_text(out / "critical_tokens.html", token_score_html(rows, "rejected solutions, scored"))
    if offsets:
        plot_lowest_token_offsets(offsets, out / "lowest_token_vs_first_wrong_step.png",
                                  analysis.get("random_rate"))
    return rows


def _log_wandb(cfg: DictConfig, out: Path, rows: list[dict[str, Any]]) -> None:
    """With `logger=wandb`: one W&B run (job_type cdpo-score) holding the scored solutions as a table (each row's
    coloured HTML beside its lowest-scored token) and the lowest-token plot. W&B trouble is a warning, never the
    end of the recipe: the same pictures are in score/."""
    lg = (cfg.get("logger") or {}).get("wandb")
    if not lg:
        return
    from src.plots.critical_tokens import token_score_html

    try:
        import wandb

        run = wandb.init(project=lg.get("project"), name=f"{cfg.task_name}-critical-tokens", job_type="cdpo-score",
                         dir=str(out), mode="offline" if lg.get("offline") else None, reinit="create_new")
        table = wandb.Table(columns=["prompt", "rejected", "lowest-score token", "lowest score", "first wrong step",
                                     "scores"])
        for r in rows:
            low = min(range(len(r["scores"])), key=r["scores"].__getitem__) if r["scores"] else None
            text = "".join(r["tokens"])
            wrong = text[r["wrong_span"][0]:r["wrong_span"][1]] if r["wrong_span"] else ""
            table.add_data(r["prompt"], text, r["tokens"][low] if low is not None else "",
                           r["scores"][low] if low is not None else None, wrong, wandb.Html(token_score_html([r])))
        png = out / "lowest_token_vs_first_wrong_step.png"
        run.log({"cdpo/critical_tokens": table, **({"cdpo/lowest_token_vs_first_wrong_step": wandb.Image(str(png))}
                                                    if png.is_file() else {})})
        run.finish()
    except Exception as err:  # noqa: BLE001 (W&B is optional here: the files in score/ hold the same)
        log.warning("cdpo: could not log the critical-token table to W&B (%s: %s); see %s", type(err).__name__, err,
                    out / "critical_tokens.html")


def _summary(m: dict[str, Any], acc: str) -> str:
    keys = [f"{s}/{acc}" for s in ("sft", "positive", *ARMS)] + ["score/hit_rate", "score/random_rate"]
    return " ".join(f"{k}={m[k]:.3f}" for k in keys if k in m)
