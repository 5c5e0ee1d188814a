"""PyTorch Lightning ``CSVLogger``: ``<save_dir>/<name>/version_N/metrics.csv`` (+ ``hparams.yaml``).

Rows are sparse: a training-step row carries the step metrics, an epoch-end row the epoch metrics, both with the
``epoch`` (0-based) and ``step`` columns. Per-step metrics (``*_step``, or anything logged more than once in an
epoch) go on the step axis, once-per-epoch metrics (``*_epoch``, ``val_*``, ``lr-SGD`` per epoch) on the epoch
axis, each numbered as logged.

    >>> run = load_run("lightning_logs/version_0")          # doctest: +SKIP
    >>> run.series["train_loss_step"].axis, run.series["val_acc"].axis   # doctest: +SKIP
    ('step', 'epoch')
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import InputError
from ..run import Run
from ._hparams import fill_setup, parse_simple_yaml
from ._registry import Importer, Probe, register
from ._tabular import add_table_series, epoch_boundaries, head_dialect, open_table, steps_per_epoch

_VERSION = re.compile(r"^version_\d+$")


def sniff(p: Probe) -> float:
    if p.is_dir:
        if "metrics.csv" in p.entries:
            return 0.95 if "hparams.yaml" in p.entries else 0.75
        return 0.0
    d = head_dialect(p)
    if d is None:
        return 0.0
    names = {n.strip() for n in d.names}
    if "step" not in names:
        return 0.0
    if "epoch" in names:
        return 0.95 if p.name == "metrics.csv" else 0.8
    return 0.7 if p.name == "metrics.csv" else 0.0


def _resolve(path: Path) -> Path:
    if not path.is_dir():
        return path
    if (path / "metrics.csv").is_file():
        return path / "metrics.csv"
    versions = sorted((d for d in path.iterdir() if _VERSION.match(d.name) and (d / "metrics.csv").is_file()),
                      key=lambda d: int(d.name.split("_")[1]))
    if len(versions) == 1:
        return versions[0] / "metrics.csv"
    if versions:
        names = ", ".join(v.name for v in versions[:6])
        raise InputError(path, f"holds {len(versions)} Lightning runs ({names})",
                         f"point at one version directory, e.g. {versions[-1]}")
    raise InputError(path, "holds no metrics.csv", "point at a Lightning CSVLogger version directory "
                     "(lightning_logs/version_0) or its metrics.csv")


def load(path: Path) -> Run:
    csv_path = _resolve(path)
    run, table = open_table(csv_path, "lightning-csv")
    epoch, step = table.find(("epoch",)), table.find(("step",))
    if epoch is None and step is None:
        raise InputError(csv_path, "has neither an 'epoch' nor a 'step' column, which Lightning's CSVLogger writes",
                         "read it with --input-format table")
    mode = "mixed" if epoch and step else ("epoch" if epoch else "step")
    add_table_series(run, table, mode=mode, epoch_col=epoch, step_col=step)
    if epoch and step:
        e, s = table.columns[epoch], table.columns[step]
        both = e.mask() & s.mask()
        run.setup.steps_per_epoch = steps_per_epoch(s.values[both], e.values[both])
        run.events.extend(epoch_boundaries(s.values[both], e.values[both], "epoch"))
    hparams = csv_path.parent / "hparams.yaml"
    if hparams.is_file():
        try:
            config = parse_simple_yaml(hparams.read_text(encoding="utf-8", errors="replace"))
        except OSError as exc:
            run.warnings.append(f"{hparams}: not read ({exc.strerror})")
        else:
            run.setup.config = config
            fill_setup(run.setup, config)
    return run


register(Importer("lightning-csv", "PyTorch Lightning CSVLogger metrics.csv (or its version directory)", sniff, load))
