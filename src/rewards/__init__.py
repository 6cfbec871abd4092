"""Rewards for reinforcement learning on verifiable tasks (`reward=` config group, docs/grpo.md).

A reward is any callable `(prompts, completions, **metadata) -> list[float]` (one score per rollout; metadata are
the prompt records' columns, e.g. `answer`, repeated per rollout). `RewardSet` (combine.py) weights several of them
and isolates failures so that a bad score never ends a run. Built-ins: the arithmetic answer checker (arith.py)
and a format reward (format.py). This room imports `src.data` task checkers only; objectives receive the built
reward object from the config and never import it.
"""
