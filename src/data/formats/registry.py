"""Data formats by name (`data.format`): the built-in ones, and those registered by `register_format`.

Built-in formats are named here and imported on first use, so importing this registry imports no format (and
`src/data/sources.py`, which the formats use, can import it without a cycle). A format outside src/ is added with
`@register_format` on its class (the module must be imported before the DataModule is built), or named directly
in the config as `data.format=my_pkg.my_module:MyFormat`.
"""

from __future__ import annotations

import importlib

from src.data.errors import DataError
from src.data.formats.base import DataFormat

_BUILTIN: dict[str, str] = {
    "pretrain": "src.data.formats.pretrain:PretrainFormat",
    "sft": "src.data.formats.sft:SFTFormat",
    "preference": "src.data.formats.preference:PreferenceFormat",
    "canvas": "src.data.formats.canvas:CanvasFormat",
    "prompt": "src.data.formats.prompt:PromptFormat",
}
_REGISTERED: dict[str, type[DataFormat]] = {}


def format_names() -> list[str]:
    """Every name `get_format` accepts (besides `module:Class` paths), sorted."""
    return sorted({*_BUILTIN, *_REGISTERED})


def _import(path: str) -> type[DataFormat]:
    module, _, attr = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise DataError(f"data.format={path!r} cannot be imported ({e}); give module:Class of a DataFormat") from None
    if not (isinstance(cls, type) and issubclass(cls, DataFormat)):
        raise DataError(f"data.format={path!r} is not a DataFormat subclass (src/data/formats/base.py)")
    return cls


def get_format(name: str) -> type[DataFormat]:
    """The format class called `name` (a registered name or `module:Class`); one DataError listing the valid
    names otherwise."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in _BUILTIN:
        return _import(_BUILTIN[name])
    if isinstance(name, str) and ":" in name:
        return _import(name)
    valid = ", ".join(repr(n) for n in format_names())
    raise DataError(
        f"data.format must be one of {valid}, got {name!r} (or module:Class of a DataFormat; docs/data.md, "
        "'Adding a data format')"
    )


def register_format(cls: type[DataFormat], *, replace: bool = False) -> type[DataFormat]:
    """Make `cls` available as `data.format=cls.name`; usable as a class decorator. Taking an existing name is
    an error unless `replace`."""
    if not (isinstance(cls, type) and issubclass(cls, DataFormat)):
        raise TypeError(f"register_format expects a DataFormat subclass, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"{cls.__name__}.name must be a non-empty string without ':', got {name!r}")
    if not replace and name in format_names() and _REGISTERED.get(name) is not cls:
        raise ValueError(f"data format {name!r} is already registered; pass replace=True to override it")
    _REGISTERED[name] = cls
    return cls


def unregister_format(name: str) -> None:
    """Remove a format added by `register_format` (tests); built-in formats stay."""
    _REGISTERED.pop(name, None)
