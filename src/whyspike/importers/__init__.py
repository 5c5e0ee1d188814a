"""Importers: every log format whyspike reads, each returning the one Run model.

Use :func:`load_run`; the format is sniffed from name and content unless forced.
"""

from ._registry import Importer, Probe, formats, load_run, register

__all__ = ["Importer", "Probe", "formats", "load_run", "register"]
