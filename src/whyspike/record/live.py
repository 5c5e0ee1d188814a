"""Live explanation: one line in the training output when a significant jump appears, the verdict at the end."""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

from ..diagnosis import Diagnosis, diagnose
from ..explain.cause import fmt
from ..run import Run, Source
from ._budget import TimeBudget
from .store import RunWriter

MIN_EPOCHS = 8  # fewer points cannot show a significant change against their own noise
FIRST_GUESS = 0.01  # seconds a diagnosis of the epoch rows is assumed to take before one has been timed


class LiveExplainer:
    """Re-diagnoses the epoch-level series at each epoch end; prints only what is new.

    ``budget`` caps the share of wall-clock time spent here: with epochs of a few milliseconds (tiny models) a
    diagnosis every epoch would cost more than the training, so epochs are skipped until the time spent so far is
    back under budget; the next diagnosis still reports every jump that appeared meanwhile. ``sync`` is called
    before a diagnosis (a recorder hands over the epoch rows it still holds), within the budget.
    """

    def __init__(self, writer: RunWriter, out: TextIO | None = None, quiet: bool = False, budget: float = 0.005,
                 sync: Callable[[], None] | None = None):
        self.writer = writer
        self.out = out or sys.stdout
        self.quiet = quiet
        self.budget = TimeBudget(budget, first_guess=FIRST_GUESS)
        self.sync = sync
        self.reported: set[tuple[str, float]] = set()

    def _epoch_run(self) -> Run:
        import pyarrow as pa

        from ..importers.whyspike_run import add_table

        rows = self.writer.epoch_rows
        keys: dict[str, None] = {}
        for r in rows:
            keys.update(dict.fromkeys(r))
        table = pa.table({k: pa.array([r.get(k) for r in rows], type=pa.float64()) for k in keys})
        run = Run(Source(str(self.writer.path), "whyspike-run"))
        add_table(run, table, "epoch", "epoch", "")
        for k in ("steps_per_epoch", "batch_size", "eval_size", "has_batchnorm", "optimizer"):
            if self.writer.meta.get(k) is not None:
                setattr(run.setup, k, self.writer.meta[k])
        return run

    def epoch_end(self, force: bool = False) -> list[str]:
        """Lines for the jumps that became significant with this epoch (also printed unless quiet)."""
        if not force and not self.budget.allows():
            return []
        began = time.perf_counter()
        try:
            if self.sync is not None:
                self.sync()
            if len(self.writer.epoch_rows) < MIN_EPOCHS:
                return []
            return self._explain()
        finally:
            self.budget.charge(time.perf_counter() - began)

    def _explain(self) -> list[str]:
        try:
            d = diagnose(self._epoch_run())
        except Exception as exc:  # never break training; say why once
            return self._say([f"whyspike: live diagnosis skipped ({type(exc).__name__}: {exc})"], once=True)
        lines = []
        for s in d.spikes:
            key = (s.metric, float(s.at))
            if key in self.reported:
                continue
            self.reported.add(key)
            self.writer.pin(int(s.at))
            c = s.causes[0]
            lines.append(f"whyspike: {s.metric} {s.direction} {fmt(s.before)} -> {fmt(s.after)} at epoch "
                         f"{fmt(s.at)} ({s.significance:.1f}x noise) — likely {c.id} ({c.confidence:.0%})")
        return self._say(lines)

    def _say(self, lines: list[str], once: bool = False) -> list[str]:
        if once:
            if getattr(self, "_said_once", False):
                return []
            self._said_once = True
        if not self.quiet:
            for line in lines:
                print(line, file=self.out, flush=True)
        return lines

    def final(self, console=None) -> Diagnosis | None:
        """Flush, diagnose the whole run directory and print the verdict (None if nothing could be read)."""
        from ..errors import WhyspikeError
        from ..importers import load_run
        from ..outputs import render_text

        self.writer.close()
        try:
            d = diagnose(load_run(self.writer.path))
        except WhyspikeError as exc:
            print(f"whyspike: no diagnosis: {exc}", file=self.out)
            return None
        if not self.quiet:
            from rich.console import Console

            render_text(d, console or Console(file=self.out))
            print(f"whyspike: run recorded in {self.writer.path} — `whyspike diagnose {self.writer.path}` "
                  "to see it again", file=self.out)
        return d
