"""Result plots: PNGs a run or a results script writes next to its numbers.

Matplotlib is imported inside each function (Agg backend), so importing a plot module costs nothing to a run that
never plots; `save.save_png` writes every figure atomically.
"""
