"""Skill curricula: per-skill evaluation and the callbacks that set the skill mixture from it (docs/skillit.md).

One unit each: `evaluation` (answer-token loss and greedy accuracy per skill, `SkillEvalCallback`, the random /
stratified baselines' instrumentation and the base of every curriculum), `skillit` (Skill-It online mixing),
`skill_curriculum` (skills added easiest or hardest first), `difficulty` (examples ordered by a reference model's
loss). Their plots are in `src/plots/skills.py`.
"""
