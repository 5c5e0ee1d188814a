"""Detection: significant steps and transient spikes relative to the local trend and noise."""

from .spikes import EVENT_THRESHOLD, Spike, default_threshold, detect_spikes

__all__ = ["EVENT_THRESHOLD", "Spike", "default_threshold", "detect_spikes"]
