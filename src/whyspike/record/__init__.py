"""Recording: the run directory (``store``), live explanation (``live``) and the framework recorders.

Framework recorders are imported lazily from their own modules (``whyspike.record.keras``,
``whyspike.record.torch``, ``whyspike.record.lightning``, ``whyspike.record.huggingface``) so that importing
whyspike never imports a framework.
"""

from .live import LiveExplainer
from .store import SCHEMA, RunWriter

__all__ = ["SCHEMA", "LiveExplainer", "RunWriter"]
