"""A study: what to run (arms × seeds) and how to judge it (metrics, pairs, rule), read from one yaml file.

    name: rainbow_lengths
    experiment: rainbow/lengths            # every arm's experiment unless the arm names its own
    seeds: [1, 2, 3]
    common: []                             # overrides of every arm
    arms:                                  # name -> overrides, or {overrides, experiment, prefix, from_arm, judged}
      eos: [data.padding=eos]
      k7: [data.padding=rainbow, data.n_pads=7]
    metrics: [eval/len@1x, eval/len@4x]    # the per-seed table's columns
    pairs: [[k7, eos, eval/len@4x]]        # paired differences a - b per seed
    rule: {_target_: src.reproduce.rules.rainbow_lengths, ...thresholds}
    curves: [train/docs_seen]              # logged columns the rule reads (csv/metrics.csv), if any
    plot: {x: [16, 32, 64], metrics: [eval/len@1x, ...], xlabel: ..., ylabel: ..., hline: eval/target_len}
    #  or {curve: <logged column>, curve_x: <logged column, default the step>, xlabel: ..., ylabel: ...}

An arm's `prefix` is put before every metric name it is read with (a two-stage run's `finetune/`); `from_arm`
starts each seed from that arm's final checkpoint of the same seed (`ckpt_path=<from>/seed_<s>/checkpoints/last.ckpt`);
`judged: false` reports an arm without handing it to the rule. `job: <arm>` trains nothing: the arm reads that
arm's runs under its own prefix (one recipe run that trains several arms, e.g. cDPO's `dpo/`, `cdpo/`,
`shuffled/`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

STUDIES = Path(__file__).parent / "studies"
KEYS = {"name", "description", "experiment", "seeds", "common", "arms", "metrics", "percent", "pairs", "rule", "plot",
        "curves"}
ARM_KEYS = {"overrides", "experiment", "prefix", "from_arm", "judged", "job"}


class StudyError(Exception):
    """A problem with a study file or the command line: one line, exit status 2."""


@dataclass
class Arm:
    name: str
    overrides: list[str]
    experiment: str
    prefix: str = ""
    from_arm: str | None = None
    judged: bool = True
    job: str | None = None  # another arm whose runs hold this arm's metrics too (under this arm's prefix)

    @property
    def runs(self) -> str:
        """The arm whose run dirs this arm reads."""
        return self.job or self.name


@dataclass
class Study:
    name: str
    path: Path
    seeds: list[int]
    arms: list[Arm]
    metrics: list[str]
    rule: dict[str, Any]
    description: str = ""
    common: list[str] = field(default_factory=list)
    percent: list[str] = field(default_factory=list)
    pairs: list[tuple[str, str, str]] = field(default_factory=list)
    plot: dict[str, Any] | None = None
    curves: list[str] = field(default_factory=list)

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise StudyError(f"study {self.name}: no arm named {name!r} (arms: {', '.join(a.name for a in self.arms)})")


def available() -> list[str]:
    return sorted(p.stem for p in STUDIES.glob("*.yaml"))


def _strings(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
        raise StudyError(f"{what} must be a list of strings, got {value!r}")
    return [str(v) for v in value]


def load_study(name_or_path: str) -> Study:
    """A study by name (src/reproduce/studies/<name>.yaml) or by path, checked: one StudyError naming the problem."""
    path = Path(name_or_path)
    if not path.suffix:
        path = STUDIES / f"{name_or_path}.yaml"
    if not path.is_file():
        raise StudyError(f"no study {name_or_path!r}: give a yaml path or one of {', '.join(available())}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise StudyError(f"{path}: a study file is a mapping ({', '.join(sorted(KEYS))})")
    unknown = set(raw) - KEYS
    if unknown:
        raise StudyError(f"{path}: unknown keys {sorted(unknown)}; a study has {sorted(KEYS)}")
    for key in ("seeds", "arms", "metrics", "rule"):
        if not raw.get(key):
            raise StudyError(f"{path}: `{key}` is missing or empty")
    arms = []
    for name, spec in dict(raw["arms"]).items():
        spec = {"overrides": spec} if isinstance(spec, list) else dict(spec or {})
        bad = set(spec) - ARM_KEYS
        if bad:
            raise StudyError(f"{path}: arm {name}: unknown keys {sorted(bad)}; an arm has {sorted(ARM_KEYS)}")
        experiment = spec.get("experiment", raw.get("experiment"))
        if not experiment:
            raise StudyError(f"{path}: arm {name} names no experiment (set `experiment:` in the study or the arm)")
        arms.append(Arm(str(name), _strings(spec.get("overrides"), f"arm {name}: overrides"), str(experiment),
                        str(spec.get("prefix", "")), spec.get("from_arm"), bool(spec.get("judged", True)),
                        spec.get("job")))
    names = {a.name for a in arms}
    trained = {a.name for a in arms if a.job is None}
    for a in arms:
        if a.from_arm is not None and a.from_arm not in names:
            raise StudyError(f"{path}: arm {a.name} starts from arm {a.from_arm!r}, which the study does not have")
        if a.job is not None and (a.job not in trained or a.overrides or a.from_arm):
            raise StudyError(f"{path}: arm {a.name} reads the runs of arm {a.job!r}: that must be an arm of the study "
                             "that trains its own runs, and a `job:` arm has no overrides or from_arm of its own")
    rule = dict(raw["rule"])
    if "_target_" not in rule:
        raise StudyError(f"{path}: `rule` needs `_target_` (a function in src/reproduce/rules.py)")
    pairs = []
    for p in raw.get("pairs") or []:
        if not (isinstance(p, list) and len(p) == 3 and p[0] in names and p[1] in names):
            raise StudyError(f"{path}: each pair is [arm_a, arm_b, metric] with known arms, got {p!r}")
        pairs.append((str(p[0]), str(p[1]), str(p[2])))
    try:
        seeds = [int(s) for s in raw["seeds"]]
    except (TypeError, ValueError):
        raise StudyError(f"{path}: seeds must be a list of integers, got {raw['seeds']!r}") from None
    return Study(name=str(raw.get("name", path.stem)), path=path, seeds=seeds, arms=arms,
                 metrics=_strings(raw["metrics"], "metrics"), rule=rule, description=str(raw.get("description", "")),
                 common=_strings(raw.get("common"), "common"), percent=_strings(raw.get("percent"), "percent"),
                 pairs=pairs, plot=raw.get("plot"), curves=_strings(raw.get("curves"), "curves"))


def parse_seeds(text: str) -> list[int]:
    """`[1,2,3]`, `1,2,3` or `4` -> a list of ints."""
    body = text.strip().strip("[]")
    try:
        seeds = [int(s) for s in body.split(",") if s.strip()]
    except ValueError:
        raise StudyError(f"seeds={text}: give integers, e.g. seeds=[1,2,3]") from None
    if not seeds:
        raise StudyError("seeds=[]: give at least one seed")
    return seeds
