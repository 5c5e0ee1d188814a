"""A share of wall-clock time for the optional work a recorder does between epochs (checkpoints, live diagnosis).

With epochs of a few milliseconds (tiny models) that work would cost more than the training itself, so it runs
only while the time spent on it, *including the run about to start*, stays within ``share`` of the time elapsed
since recording began. Counting the coming run (its cost guessed from the last one, or from ``first_guess``
before any) keeps the share from being overshot by one expensive first run in a short training:

>>> b = TimeBudget(0.02, first_guess=0.001, clock=iter([0.0, 0.01, 0.05, 0.2]).__next__)
>>> b.allows()          # 10 ms elapsed: a 1 ms run would be 10% of it
False
>>> b.allows()          # 50 ms elapsed: 1 ms is exactly 2%
True
>>> b.charge(0.002)     # it took 2 ms; the next run is expected to take as long
>>> b.allows()          # 200 ms elapsed: 2 ms spent + 2 ms expected = 2%
True
"""

from __future__ import annotations

import time
from typing import Callable


class TimeBudget:
    """``allows()`` before the optional work, ``charge(seconds)`` after it; ``share >= 1`` allows everything."""

    __slots__ = ("share", "spent", "expected", "_clock", "_started")

    def __init__(self, share: float, first_guess: float, clock: Callable[[], float] = time.perf_counter):
        self.share = float(share)
        self.spent = 0.0
        self.expected = float(first_guess)
        self._clock = clock
        self._started = clock()

    def allows(self) -> bool:
        if self.share >= 1:
            return True
        return self.spent + self.expected <= self.share * (self._clock() - self._started)

    def charge(self, seconds: float) -> None:
        self.spent += seconds
        self.expected = seconds
