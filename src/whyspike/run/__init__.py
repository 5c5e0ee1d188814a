"""The run model: series, events and setup that every importer returns."""

from .eval_size import infer_eval_size
from .model import Event, Run, Series, Setup, Source, make_series
from .roles import Role, classify

__all__ = ["Event", "Role", "Run", "Series", "Setup", "Source", "classify", "infer_eval_size", "make_series"]
