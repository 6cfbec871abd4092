"""Files the code needs but does not make: pretrained weights and tokenizers fetched into the cache.

A leaf below `data` and `models` (both load from it), so it imports nothing from any other `src` package.
"""
