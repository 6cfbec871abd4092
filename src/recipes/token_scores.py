"""cDPO step 3: score every token of every pair with the two contrastive models, and check where the lowest score
falls in a wrong solution.

The pairs are tokenized by the preference data format's own tokenize function (`PreferenceTokenize`), the one the
DPO stage will use, so a score belongs to exactly the token id that enters the loss; the stage re-checks the count
per record when it loads the weights (src/data/formats/preference.py). Scores come from
`contrastive_token_scores` (fused: no [T, V] logits for either model).

Weights written per pair: `rejected_weights` = 1 − s_t on the rejected response's tokens, the end token weighted 1
(spec); `chosen_weights` = s_t on the chosen response when `chosen_weights=true` (an option of the paper), else
absent (all 1). Scores themselves are kept (`rejected_scores`, `chosen_scores`) for the pictures and the analysis.
Beside them, the two controls of the rejected weights (src/recipes/weight_controls.py): `rejected_weights_shuffled`
(the same weights at random places) and `rejected_weights_constant` (each response's mean weight everywhere), drawn
from `seed` and the pair's index, so every arm of a run trains on the same pairs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from src.data.collate import pad_rows
from src.data.formats.preference import VIEWS, PreferenceTokenize
from src.data.packing import IGNORE_INDEX
from src.losses.critical_tokens import contrastive_token_scores
from src.models.logprobs import backbone_hidden, batch_logprobs
from src.recipes.weight_controls import CONTROLS, control_weights

FIELDS = {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}


@torch.no_grad()
def score_pairs(pos: nn.Module, neg: nn.Module, tok: Any, pairs: Sequence[dict[str, Any]], *, seq_len: int,
                b: float = 1.0, chosen_weights: bool = False, batch_size: int = 64, reference: nn.Module | None = None,
                progress: bool = True, seed: int = 0) -> list[dict[str, Any]]:
    """The pairs with `rejected_scores` / `rejected_weights` (and `chosen_scores`, optionally `chosen_weights`);
    with `reference`, also its log-probs `chosen_ref_logp` / `rejected_ref_logp` on the same ids (computed once, so
    DPO can run with `method.reference=precomputed` and no reference model)."""
    enc = PreferenceTokenize(tok, FIELDS, seq_len, drop_long=False)
    device = pos.output_weight.device
    was = pos.training, neg.training, reference.training if reference is not None else False
    pos.eval()
    neg.eval()
    if reference is not None:
        reference.eval()
    out: list[dict[str, Any]] = []
    for start in tqdm(range(0, len(pairs), batch_size), desc="score", unit="batch", disable=not progress):
        chunk = pairs[start:start + batch_size]
        cols = enc({k: [p[k] for p in chunk] for k in FIELDS}, list(range(start, start + len(chunk))))
        scored = [dict(p) for p in chunk]
        for view in VIEWS:
            ids_rows, targets = cols[f"{view}_input_ids"], cols[f"{view}_target_mask"]
            labels = [[t if m else IGNORE_INDEX for t, m in zip(ids[1:], tm[1:])] for ids, tm in zip(ids_rows, targets)]
            batch = {k: v.to(device) for k, v in pad_rows([ids[:-1] for ids in ids_rows], labels,
                                                          tok.pad_id).items()}
            s = contrastive_token_scores(  # [B, T]
                backbone_hidden(pos, batch), backbone_hidden(neg, batch), pos.output_weight, neg.output_weight,
                batch["labels"], b=b, bias_pos=pos.output_bias, bias_neg=neg.output_bias,
            ).cpu()
            ref = batch_logprobs(reference, batch).logp.float().cpu() if reference is not None else None  # [B, T]
            for i, rec in enumerate(scored):
                n_full = len(tok.encode(rec[view])) + 1  # the response's tokens and the end token, untruncated
                row = s[i][batch["labels"][i].cpu() != IGNORE_INDEX].tolist()
                row += [1.0] * (n_full - len(row))  # tokens cut by seq_len never reach the loss
                rec[f"{view}_scores"] = row
                if ref is not None:  # tokens cut by seq_len never reach the loss: 0
                    lp = ref[i][batch["labels"][i].cpu() != IGNORE_INDEX].tolist()
                    rec[f"{view}_ref_logp"] = lp + [0.0] * (n_full - len(lp))
                if view == "rejected":
                    rec["rejected_weights"] = [1.0 - x for x in row[:-1]] + [1.0]  # the end token: weight 1
                    n_trained = int((batch["labels"][i] != IGNORE_INDEX).sum())  # response tokens (+ end) in range
                    rng = random.Random(seed * 1_000_003 + start + i)
                    for mode in CONTROLS:
                        rec[f"rejected_weights_{mode}"] = control_weights(rec["rejected_weights"], n_trained, mode,
                                                                          rng)
                elif chosen_weights:
                    rec["chosen_weights"] = row[:-1] + [1.0]
        out += scored
    pos.train(was[0])
    neg.train(was[1])
    if reference is not None:
        reference.train(was[2])
    return out


def token_spans(tok: Any, text: str) -> list[tuple[int, int]]:
    """Character span of each token of `tok.encode(text)` in `text` (the response alone, as the format encodes
    it), by decoding growing prefixes: exact for any byte-level BPE."""
    ids = tok.encode(text)
    spans, prev = [], 0
    for i in range(len(ids)):
        end = len(tok.decode(ids[: i + 1]))
        spans.append((prev, end))
        prev = end
    return spans


def first_wrong_step_analysis(
    tok: Any, scored: Sequence[dict[str, Any]], grade: Callable[[str, str], Any], seed: int = 0,
) -> dict[str, float]:
    """Where the lowest-scored token of each rejected (wrong) response falls relative to its first wrong step.

    hit_rate: share of responses whose lowest-score token overlaps the first wrong step's characters;
    random_rate: the same for a token drawn uniformly (its expectation, averaged): the baseline the hit rate must
    beat; before/after: the lowest token lies in an earlier / a later step. Only responses whose first wrong step
    is a written step count (`n`). End token excluded.
    """
    rng = random.Random(seed)
    hits = rand = before = after = 0.0
    offsets: list[int] = []
    n = 0
    for rec in scored:
        g = grade(rec.get("question", rec["prompt"]), rec["rejected"])  # the question as graded (task.chat)
        if g.first_wrong_step is None or g.first_wrong_step >= len(g.step_spans):
            continue
        spans = token_spans(tok, rec["rejected"])
        scores = rec["rejected_scores"][: len(spans)]
        if not spans:
            continue
        lo, hi = g.step_spans[g.first_wrong_step]
        inside = [s < hi and e > lo for s, e in spans]
        low = min(range(len(scores)), key=lambda i: (scores[i], rng.random()))
        step_of = _step_index(spans[low], g.step_spans)
        n += 1
        hits += inside[low]
        rand += sum(inside) / len(inside)
        before += step_of is not None and step_of < g.first_wrong_step
        after += step_of is not None and step_of > g.first_wrong_step
        if step_of is not None:
            offsets.append(step_of - g.first_wrong_step)
    if n == 0:
        return {"n": 0}
    return {"n": n, "hit_rate": hits / n, "random_rate": rand / n, "before_rate": before / n,
            "after_rate": after / n, "offsets": offsets}


def _step_index(span: tuple[int, int], steps: Sequence[tuple[int, int]]) -> int | None:
    """The step whose characters the token overlaps most (None: it lies in the spaces between steps)."""
    best, best_overlap = None, 0
    for i, (lo, hi) in enumerate(steps):
        overlap = min(hi, span[1]) - max(lo, span[0])
        if overlap > best_overlap:
            best, best_overlap = i, overlap
    return best
