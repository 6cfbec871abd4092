"""Recipes: multi-stage procedures built from the run primitives (`src/runtime/build.py`).

A recipe is a sequence of stages (pretrain → fine-tune today; reference model → preference pairs → DPO ... later),
each an ordinary run: components built from a config with `build_components`, trained with `fit`, each stage in
its own run dir under the first one's, each stage's metrics merged into the run's metrics.json with the stage's
prefix. Recipes import the runtime's primitives; the runtime's primitives never import a recipe
(`src/runtime/run.py`, the top, picks the recipe a config asks for).

Resume: a recipe keeps no state of its own. Each stage resumes from its own `checkpoints/last.ckpt` when the run
resumed and that stage had started; a finished stage restores its final weights and trains nothing, a stage that
never started begins fresh from the previous stage's weights. So a requeued job replays the recipe from the top
and every stage lands where the uninterrupted run would have been.
"""
