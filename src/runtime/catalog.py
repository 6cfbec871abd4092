"""`python train.py --list`: every experiment and config group option, with the one-line description each yaml
file starts with, so a user finds what to type without reading conf/.

A description is the file's first comment sentence (Hydra's `# @package` header lines are skipped). The option a
plain `python train.py` uses is marked with `*` (the defaults list of conf/train.yaml).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

# Groups a user picks from, in the order train.yaml applies them; paths/hydra/local are plumbing.
GROUPS = ("experiment", "data", "model", "method", "reward", "downsample", "curriculum", "trainer", "strategy",
          "logger", "callbacks", "debug", "hydra/launcher")


def describe(path: Path, width: int = 100) -> str:
    """The first sentence of the file's leading comment block (its head before a colon when long; at most
    `width` characters)."""
    lines: list[str] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith("@package"):
            continue
        lines.append(text)
    text = " ".join(lines).strip()
    if not text:
        return "(no description)"
    first = re.split(r"(?<!i\.e)(?<!e\.g)(?<=\.)\s", text, maxsplit=1)[0]
    if len(first) > 72 and ": " in first:  # a long sentence: its head, before the colon
        first = first.split(": ", 1)[0]
    return first if len(first) <= width else first[: width - 1].rstrip() + "…"


def defaults(conf_dir: Path) -> dict[str, str]:
    """group -> the option conf/train.yaml picks by default."""
    doc = yaml.safe_load((conf_dir / "train.yaml").read_text())
    out: dict[str, str] = {}
    for item in doc.get("defaults", []):
        if isinstance(item, dict):
            for k, v in item.items():
                if v is not None and not k.startswith("optional "):
                    out[k] = str(v)
    return out


def catalog(conf_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """group -> [(option, description)], options sorted; nested experiment names keep their folder."""
    out: dict[str, list[tuple[str, str]]] = {}
    for group in GROUPS:
        folder = conf_dir / group
        if not folder.is_dir():
            continue
        files = sorted(folder.rglob("*.yaml")) if group == "experiment" else sorted(folder.glob("*.yaml"))
        # `_base.yaml` and other `_`-files are shared parts pulled in through defaults, not options to pick
        out[group] = [(f.relative_to(folder).with_suffix("").as_posix(), describe(f)) for f in files
                      if not f.name.startswith("_")]
    return out


def format_catalog(conf_dir: Path) -> str:
    chosen = defaults(conf_dir)
    parts = ["Pick with `python train.py <group>=<option>` (experiments overlay several groups; `*` = default).\n"]
    for group, options in catalog(conf_dir).items():
        parts.append(f"{group}:")
        width = max(len(name) for name, _ in options)
        for name, text in options:
            mark = "*" if chosen.get(group) == name else " "
            parts.append(f"  {mark} {name:<{width}}  {text}")
        parts.append("")
    parts.append("More: `python train.py --cfg job` prints the composed config; docs/ explains each group.")
    return "\n".join(parts)


def unknown_choice(argv: list[str], conf_dir: Path) -> str | None:
    """A message for the first `group=option` override naming an option that does not exist (all options listed,
    nested experiments included, which Hydra's own message leaves out); None when every choice exists."""
    options = {g: [name for name, _ in opts] for g, opts in catalog(conf_dir).items()}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key.lstrip("+") not in options or "@" in key or value in ("", "null"):
            continue
        group = key.lstrip("+")
        for choice in value.split(","):  # a multirun sweep lists several
            if choice not in options[group]:
                return (f"{group}={choice} is not an option of '{group}'; the options are: "
                        f"{', '.join(options[group])} (python train.py --list describes each)")
    return None
