"""Data formats as plug-ins: `data.format` names a `DataFormat` (base.py) found through the registry.

Built-in: `pretrain` (packed rows, pretrain.py), `sft` (prompt-masked, right-padded, sft.py), `preference`
(pairs, preference.py) and `canvas` (fixed response canvases for masked diffusion, canvas.py). The format
modules themselves are imported on first use (registry.py), not here, so that this package imports no format.
"""

from src.data.formats.base import DataFormat, Fields, FormatSettings, record_keys, require_str
from src.data.formats.registry import format_names, get_format, register_format, unregister_format

__all__ = [
    "DataFormat",
    "Fields",
    "FormatSettings",
    "format_names",
    "get_format",
    "record_keys",
    "register_format",
    "require_str",
    "unregister_format",
]
