"""Multi-stage recipes by name: `recipe.name` in the config picks one (e.g. conf/experiment/cdpo/arith.yaml)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

RECIPES = ("cdpo",)


def run_recipe(cfg: DictConfig) -> dict[str, Any]:
    name = cfg.recipe.get("name")
    if name == "cdpo":
        from src.recipes.cdpo import run_cdpo

        return run_cdpo(cfg)
    raise ValueError(f"recipe.name={name!r} is not a recipe; known: {list(RECIPES)}")
