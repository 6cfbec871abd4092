"""The one error type of the exporter: its message names the path and the fix; the CLI prints it alone."""

from __future__ import annotations


class ExportError(Exception):
    """A user-fixable export problem (missing checkpoint, unknown architecture, occupied output, ...)."""
