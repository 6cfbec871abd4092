"""Your own skill-labelled records as a Skill-It pool: `{"prompt": ..., "response": ..., "skill": ...}` per record.

Why not the LM/SFT sources (src/data/sources.py): they keep only the fields their format trains on, and a skills
pool also needs each record's skill. The files are read with the same readers (.jsonl, a .json array, .parquet;
a directory or a glob of them), so a bad record is named by file and line the same way.

Skills are named (any string or integer in the record); `data.task.skills` fixes their order (skill i = the i-th
name, which is what graphs, `data.mixture` and `target_skills` index), else the names sorted (integers
numerically). Every skill needs records; a record whose skill is not listed is an error, not silently dropped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from src.data.errors import DataError
from src.data.formats.base import record_keys, require_str
from src.data.sources import _read_file, _resolve_files


@dataclass(frozen=True)
class SkillFields:
    """Field names of a skills record (config keys data.task.prompt_field / response_field / skill_field)."""

    prompt: str = "prompt"
    response: str = "response"
    skill: str = "skill"
    txt_field: str | None = None  # what the shared readers check (src/data/sources.py): .txt files hold no records
    record_kind: str = "skills"  # how their errors name these records

    @property
    def columns(self) -> list[str]:
        return [self.prompt, self.response, self.skill]

    def project(self, rec: Any, where: str) -> dict[str, Any]:
        """One record as {prompt, response, skill_name, where}; one DataError naming the fix otherwise."""
        keys = record_keys(rec, where)
        skill = rec.get(self.skill)
        if isinstance(skill, bool) or not isinstance(skill, (str, int)) or str(skill) == "":
            raise DataError(
                f'{where}: field "{self.skill}" must be a skill name (a non-empty string or an integer), got '
                f"{json.dumps(skill)[:40]} (found keys: {keys}); set data.task.skill_field=... or fix the record"
            )
        return {
            "prompt": require_str(rec, self.prompt, where, keys, "data.task.prompt_field"),
            "response": require_str(rec, self.response, where, keys, "data.task.response_field"),
            "skill_name": str(skill),
            "where": where,
        }


def read_skill_records(path: str, fields: SkillFields) -> list[dict[str, Any]]:
    """Every record of a file, directory or glob, in file order."""
    recs = [rec for f in _resolve_files(str(path)) for _, rec in _read_file(f, fields, "file")]
    if not recs:
        raise DataError(f"{path}: no records; a skills file holds one {{prompt, response, skill}} object per line")
    return recs


def _name_order(name: str) -> tuple[int, int, str]:
    """Integer names in numeric order (2 before 10), then the others alphabetically."""
    return (0, int(name), "") if name.lstrip("-").isdigit() else (1, 0, name)


def assign_skills(recs: list[dict[str, Any]], skills: Sequence[Any] | None, origin: str) -> list[str]:
    """Set each record's `skill` index; returns the skill names (index order). `skills` None = sorted names."""
    found = sorted({r["skill_name"] for r in recs}, key=_name_order)
    names = found if skills is None else [str(s) for s in skills]
    if len(set(names)) != len(names):
        raise DataError(f"data.task.skills={names} names a skill twice; list each skill once")
    index = {n: i for i, n in enumerate(names)}
    for rec in recs:
        if rec["skill_name"] not in index:
            raise DataError(
                f"{rec['where']}: skill {rec['skill_name']!r} is not in data.task.skills={names}; add it there "
                "or fix the record"
            )
        rec["skill"] = index[rec["skill_name"]]
    empty = [n for n in names if n not in set(found)]
    if empty:
        raise DataError(f"{origin}: no records for skill(s) {empty} of data.task.skills; every skill needs records")
    if len(names) < 2:
        raise DataError(f"{origin}: one skill ({names}); mixing over skills needs at least two")
    return names


def hold_out_val(recs: list[dict[str, Any]], k: int, n_val: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, val): `n_val` random records of every skill held out for its validation loss, the rest train."""
    rng = np.random.default_rng([seed, 0x5EED])
    train, val = [], []
    for s in range(k):
        idx = [i for i, r in enumerate(recs) if r["skill"] == s]
        if len(idx) <= n_val:
            raise DataError(
                f"skill {recs[idx[0]]['skill_name']!r} has {len(idx)} records, and data.n_val_per_skill={n_val} of "
                "them are held out for validation, leaving none to train on; lower data.n_val_per_skill or give "
                "a separate validation file (data.task.val_path)"
            )
        order = rng.permutation(len(idx))
        val += [recs[idx[j]] for j in order[:n_val]]
        train += [recs[idx[j]] for j in sorted(order[n_val:])]
    return train, val
