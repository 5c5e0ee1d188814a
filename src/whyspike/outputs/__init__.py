"""Outputs: the terminal verdict (rich) and the JSON document (DESIGN.md contract 2)."""

from .json_out import to_json
from .text import render_text

__all__ = ["render_text", "to_json"]
