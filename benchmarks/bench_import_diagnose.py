#!/usr/bin/env python
"""Import + diagnose a 1,000,000-step TensorBoard log and a 1,000,000-row CSV, timed against the standard readers.

    python benchmarks/bench_import_diagnose.py                 # full run, writes benchmarks/results.md
    python benchmarks/bench_import_diagnose.py --steps 50000   # a quick smoke run (writes nothing unless --out)

Readers timed side by side in one process, each after one warm-up call, best of ``--repeats`` (default 3), every
call a fresh parse of the file (new reader object; the OS page cache is warm after the warm-up, for every reader):

    CSV  pandas.read_csv (reference) | whyspike load_run | whyspike load_run + diagnose (target <= 2 s)
    TB   EventAccumulator(size_guidance={'scalars': 0}).Reload() (reference) | tbparse SummaryReader(...).scalars
         | whyspike load_run | whyspike load_run + diagnose (target <= 5 s)

Correctness is checked on every series: whyspike must read exactly the points the reference reader read, with equal
steps and values. The peak RSS of the whyspike diagnosis (TB then CSV, in a child process that runs nothing else) is
reported too. Test data are generated once into ``benchmarks/data/`` (git-ignored) and reused while their manifest
matches; ``--regen`` rebuilds them.
"""

from __future__ import annotations

import os
import sys

# ---- thread settings: must happen before numpy / pyarrow are imported -----------------------------------------------
# Default: leave the environment alone (what a user gets). None of the timed readers calls BLAS on these data (the
# profile shows no BLAS/LAPACK frame on the whyspike path; pandas' C parser, EventAccumulator and tbparse are
# single-threaded), so pinning BLAS to one thread does not change the comparison; `--blas-threads 1` does it anyway.
_BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
if "--blas-threads" in sys.argv:
    _n = sys.argv[sys.argv.index("--blas-threads") + 1]
    for _v in _BLAS_VARS:
        os.environ[_v] = _n

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RESULTS = HERE / "results.md"
GENERATOR_VERSION = 1  # bump when the synthetic data change: cached files are then rebuilt

CSV_TARGET_S = 2.0
TB_TARGET_S = 5.0

# the story the synthetic run tells (fractions of the run length, so that --steps N scales it)
SPIKE_AT = 0.35  # one real loss spike (grad-norm blow-up, recovers over ~0.3 % of the run)
LR_DECAY_AT = 0.60  # step decay of the learning rate, 0.1 -> 0.01


# ------------------------------------------------------------------------------------------------------ data


def _curves(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Step-level training curves: a decaying loss with noise, accuracy mirroring it, a step LR, a grad norm."""
    rng = np.random.default_rng(seed)
    step = np.arange(n, dtype=np.int64)
    t = step / n
    spike, decay = int(SPIKE_AT * n), int(LR_DECAY_AT * n)
    lr = np.where(step < decay, 0.1, 0.01)
    base = 0.35 + 2.0 * np.exp(-t / 0.08)  # ~2.35 -> ~0.35
    # after the LR drop the loss settles ~0.12 lower within ~0.1 % of the run (a sharp, real step)
    settle = max(n // 1000, 1)
    base = base - np.where(step >= decay, 0.12 * (1 - np.exp(-np.maximum(step - decay, 0) / settle)), 0.0)
    # the spike: loss jumps by ~+1.5 at one step, decays back with a time constant of ~0.05 % of the run
    width = max(n // 2000, 1)
    after = np.maximum(step - spike, 0)  # 0 before the spike: no overflow in exp
    bump = np.where(step >= spike, 1.5 * np.exp(-after / width), 0.0)
    loss = (base + bump) * (1 + 0.04 * rng.standard_normal(n))
    acc = np.clip(1.0 - 0.32 * (base + 0.8 * bump) + 0.01 * rng.standard_normal(n), 0.0, 1.0)
    grad = 1.0 + 0.5 * np.exp(-t / 0.05) + 0.1 * rng.standard_normal(n) ** 2
    grad = grad + np.where(step >= spike, 40.0 * np.exp(-after / max(width // 10, 1)), 0.0)
    return {"step": step, "loss": loss, "accuracy": acc, "learning_rate": lr, "grad_norm": grad}


def _manifest_ok(path: Path, want: dict) -> bool:
    try:
        return json.loads(path.read_text()) == want
    except (OSError, ValueError):
        return False


def make_csv(n: int, regen: bool) -> Path:
    """A step-level metrics CSV as CSVLogger-like callbacks write it: ``step,loss,accuracy,learning_rate,grad_norm``."""
    path = DATA / f"train_{n}.csv"
    manifest = DATA / f"train_{n}.csv.json"
    want = {"generator": GENERATOR_VERSION, "rows": n, "columns": ["step", "loss", "accuracy", "learning_rate",
                                                                    "grad_norm"]}
    if not regen and path.exists() and _manifest_ok(manifest, want):
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    print(f"[data] writing {n:,}-row CSV -> {path.relative_to(HERE.parent)}", flush=True)
    t0 = time.perf_counter()
    c = _curves(n)
    tmp = path.with_suffix(".csv.tmp")
    chunk = 100_000
    with open(tmp, "w", newline="") as fh:
        fh.write("step,loss,accuracy,learning_rate,grad_norm\n")
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            block = np.column_stack([c["step"][a:b], c["loss"][a:b], c["accuracy"][a:b], c["learning_rate"][a:b],
                                     c["grad_norm"][a:b]])
            np.savetxt(fh, block, fmt=["%d", "%.7g", "%.7g", "%.7g", "%.7g"], delimiter=",")
            print(f"[data]   csv {b:>9,}/{n:,} rows", flush=True)
    tmp.replace(path)
    manifest.write_text(json.dumps(want))
    print(f"[data] csv done in {time.perf_counter() - t0:.1f} s ({path.stat().st_size / 1e6:.1f} MB)", flush=True)
    return path


def _tb_events(n: int):
    """(step, wall_time, tag, value) in writing order: train/loss every step, train/lr and train/grad_norm every
    100 steps, val/accuracy every 5,000 steps."""
    c = _curves(n)
    wall0 = 1_700_000_000.0
    every_lr, every_val = 100, 5000
    for i in range(n):
        wall = wall0 + 0.05 * i
        yield i, wall, "train/loss", float(c["loss"][i])
        if i % every_lr == 0:
            yield i, wall, "train/lr", float(c["learning_rate"][i])
            yield i, wall, "train/grad_norm", float(c["grad_norm"][i])
        if i % every_val == every_val - 1:
            lo = max(0, i - every_val + 1)
            yield i, wall, "val/accuracy", float(np.round(c["accuracy"][lo:i + 1].mean() * 10000) / 10000)


def make_tb(n: int, regen: bool) -> Path:
    """A TensorBoard event file written by tensorboard's own EventFileWriter (one simple_value scalar per event)."""
    run_dir = DATA / f"tb_{n}"
    manifest = DATA / f"tb_{n}.json"
    want = {"generator": GENERATOR_VERSION, "steps": n,
            "tags": {"train/loss": 1, "train/lr": 100, "train/grad_norm": 100, "val/accuracy": 5000}}
    files = sorted(run_dir.glob("*tfevents*")) if run_dir.is_dir() else []
    if not regen and len(files) == 1 and _manifest_ok(manifest, want):
        return files[0]
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    DATA.mkdir(parents=True, exist_ok=True)
    tmp_dir = DATA / f"tb_{n}.tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    print(f"[data] writing {n:,}-step TensorBoard log -> {run_dir.relative_to(HERE.parent)} "
          "(tensorboard's pure-Python writer: about a minute per million events)", flush=True)
    t0 = time.perf_counter()
    writer = EventFileWriter(str(tmp_dir), max_queue_size=1000, flush_secs=30)
    written = 0
    report = max(n // 10, 1)
    for step, wall, tag, value in _tb_events(n):
        ev = Event(wall_time=wall, step=step, summary=Summary(value=[Summary.Value(tag=tag, simple_value=value)]))
        writer.add_event(ev)
        written += 1
        if tag == "train/loss" and (step + 1) % report == 0:
            print(f"[data]   tb {step + 1:>9,}/{n:,} steps ({written:,} events, "
                  f"{time.perf_counter() - t0:.0f} s)", flush=True)
    writer.close()
    shutil.rmtree(run_dir, ignore_errors=True)
    tmp_dir.replace(run_dir)
    manifest.write_text(json.dumps(want))
    (file,) = sorted(run_dir.glob("*tfevents*"))
    print(f"[data] tb done in {time.perf_counter() - t0:.1f} s ({written:,} events, "
          f"{file.stat().st_size / 1e6:.1f} MB)", flush=True)
    return file


# ------------------------------------------------------------------------------------------------------ readers


def whyspike_load(path: Path):
    import whyspike

    return whyspike.load_run(path)


def whyspike_diagnose(path: Path):
    import whyspike
    from whyspike.diagnosis import diagnose

    run = whyspike.load_run(path)
    return diagnose(run)


def pandas_read_csv(path: Path):
    import pandas as pd

    return pd.read_csv(path)


def event_accumulator(path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})  # 0 = keep every scalar
    acc.Reload()
    return acc


def tbparse_scalars(path: Path):
    from tbparse import SummaryReader

    return SummaryReader(str(path)).scalars


# ------------------------------------------------------------------------------------------------------ timing


@dataclass
class Timing:
    key: str
    reader: str
    task: str
    times: list[float] = field(default_factory=list)
    warmup: float = 0.0

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def time_it(key: str, reader: str, task: str, fn, path: Path, repeats: int) -> tuple[Timing, object]:
    """One warm-up call (its result is kept for the correctness checks), then ``repeats`` timed fresh calls."""
    t = Timing(key, reader, task)
    gc.collect()
    t0 = time.perf_counter()
    result = fn(path)
    t.warmup = time.perf_counter() - t0
    print(f"[time] {key:<22} warm-up {t.warmup:8.3f} s", flush=True)
    for i in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        r = fn(path)
        t.times.append(time.perf_counter() - t0)
        del r
        print(f"[time] {key:<22} run {i + 1}/{repeats} {t.times[-1]:8.3f} s", flush=True)
    gc.collect()
    return t, result


# ------------------------------------------------------------------------------------------------------ checks


def check_csv(run, df) -> list[str]:
    """whyspike's series vs pandas' columns: same number of points, same steps, same values."""
    notes, ok = [], True
    step = df["step"].to_numpy(dtype=np.float64)
    for name in ("loss", "accuracy", "learning_rate", "grad_norm"):
        s = run.series.get(name)
        if s is None:
            notes.append(f"FAIL `{name}`: whyspike has no such series (has {sorted(run.series)})")
            ok = False
            continue
        ref = df[name].to_numpy(dtype=np.float64)
        same_n = len(s.x) == len(ref)
        same_x = same_n and np.array_equal(np.asarray(s.x, dtype=np.float64), step)
        same_y = same_n and np.array_equal(np.asarray(s.y, dtype=np.float64), ref)
        if not (same_n and same_x and same_y):
            ok = False
            diff = (f", max |dy| = {np.max(np.abs(np.asarray(s.y, dtype=np.float64) - ref)):.3g}"
                    if same_n else "")
            notes.append(f"FAIL `{name}`: whyspike {len(s.x):,} points vs pandas {len(ref):,}; steps equal: {same_x}, "
                         f"values equal: {same_y}{diff}")
        else:
            notes.append(f"`{name}`: {len(ref):,} points, steps and values identical to pandas")
    return notes if not ok else [f"CSV: every column read identically by whyspike and pandas "
                                 f"({len(df):,} rows, 4 series; steps and float64 values bit-equal)"]


def check_tb(run, acc, tb_df) -> list[str]:
    """whyspike's series vs EventAccumulator's (and tbparse's) scalars, tag by tag."""
    notes, ok, total = [], True, 0
    tags = sorted(acc.Tags()["scalars"])
    if sorted(run.series) != tags:
        ok = False
        notes.append(f"FAIL tags: whyspike {sorted(run.series)} vs EventAccumulator {tags}")
    for tag in tags:
        ev = acc.Scalars(tag)
        ref_x = np.fromiter((e.step for e in ev), dtype=np.float64, count=len(ev))
        ref_y = np.fromiter((e.value for e in ev), dtype=np.float64, count=len(ev))
        total += len(ev)
        s = run.series.get(tag)
        if s is None:
            continue
        same_n = len(s.x) == len(ev)
        same_x = same_n and np.array_equal(np.asarray(s.x, dtype=np.float64), ref_x)
        same_y = same_n and np.array_equal(np.asarray(s.y, dtype=np.float64), ref_y)
        sub = tb_df[tb_df["tag"] == tag]
        same_tbparse = (len(sub) == len(ev) and np.array_equal(sub["step"].to_numpy(dtype=np.float64), ref_x)
                        and np.array_equal(sub["value"].to_numpy(dtype=np.float64), ref_y))
        if not (same_n and same_x and same_y and same_tbparse):
            ok = False
            notes.append(f"FAIL `{tag}`: whyspike {len(s.x):,} points vs EventAccumulator {len(ev):,} vs tbparse "
                         f"{len(sub):,}; steps equal: {same_x}, values equal: {same_y}, tbparse equal: {same_tbparse}")
        else:
            notes.append(f"`{tag}`: {len(ev):,} points")
    if ok:
        return [f"TB: every tag read identically by whyspike, EventAccumulator and tbparse ({total:,} scalar events: "
                + ", ".join(notes) + "; steps and values bit-equal)"]
    return notes


def describe(diag) -> str:
    """The diagnosis in one line: the top jumps and their leading cause."""
    parts = []
    for s in diag.spikes[:4]:
        cause = s.causes[0].id if s.causes else "no cause"
        parts.append(f"{s.metric} {s.direction} {s.shape} at {s.axis} {float(s.at):,.0f} "
                     f"(significance {s.significance:.1f}, cause: {cause})")
    more = f" (+{len(diag.spikes) - 4} more)" if len(diag.spikes) > 4 else ""
    return "; ".join(parts) + more if parts else "no jump found"


def planted(diag, n: int) -> str:
    """What the diagnosis made of the two planted events: the nearest jump to each and the causes it was given."""
    out = []
    for what, at, want in (("loss spike", int(SPIKE_AT * n), "optimization_instability"),
                           ("LR decay 0.1 -> 0.01", int(LR_DECAY_AT * n), "lr_schedule")):
        near = [s for s in diag.spikes if abs(float(s.at) - at) <= 0.01 * n]
        if not near:
            out.append(f"{what} at step {at:,}: no jump found within 1 % of the run")
            continue
        got = sorted({c.id for s in near for c in s.causes[:1]})
        offs = sorted({int(float(s.at)) - at for s in near})
        verdict = "attributed as expected" if want in got else f"NOT attributed to `{want}`"
        out.append(f"{what} at step {at:,}: {len(near)} jump(s) found at offset(s) {offs} steps, leading cause(s) "
                   f"{got} — {verdict}")
    return "; ".join(out)


# ------------------------------------------------------------------------------------------------------ rss / cli


def _vm_hwm_kb() -> int:
    """Peak resident set of this process' current address space (reset by exec, unlike ru_maxrss), in KiB."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(ln.split()[1]) for ln in fh if ln.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return -1


def rss_child(paths: list[str]) -> None:
    """Run in a child process: whyspike load_run + diagnose on each path; print peak RSS as JSON (KiB)."""
    import whyspike  # noqa: F401  (counted in the baseline: the import itself)
    from whyspike.diagnosis import diagnose

    base = {"baseline_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "baseline_hwm_kb": _vm_hwm_kb()}
    for p in paths:
        diagnose(whyspike.load_run(p))
    print(json.dumps({**base, "peak_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "peak_hwm_kb": _vm_hwm_kb()}))


def measure_rss(paths: list[Path]) -> dict:
    """Linux carries ru_maxrss across fork + exec (the parent's high-water mark leaks into the child's), so this
    runs before the parent has read anything big, and VmHWM (per address space) is reported beside it."""
    out = subprocess.run([sys.executable, __file__, "--rss-child", *map(str, paths)], capture_output=True, text=True,
                         check=True, env=os.environ.copy())
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_cli(path: Path, repeats: int) -> list[float]:
    """``whyspike diagnose PATH --format json`` end to end: interpreter start, imports, read, diagnose, JSON out."""
    exe = Path(sys.executable).with_name("whyspike")
    cmd = [str(exe), "diagnose", str(path), "--format", "json"] if exe.exists() else \
        [sys.executable, "-m", "whyspike", "diagnose", str(path), "--format", "json"]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if r.returncode not in (0, 3):
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr[-2000:]}")
    return times


# ------------------------------------------------------------------------------------------------------ report


def _version(mod: str) -> str:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:  # noqa: BLE001
        return "not installed"


def machine_info() -> list[str]:
    import pyarrow as pa

    try:
        load = "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = "?"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    blas = {v: os.environ[v] for v in _BLAS_VARS if v in os.environ}
    return [
        f"- date: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, "
        f"load average at start {load}",
        f"- python {platform.python_version()}; whyspike {_version('whyspike')}, numpy {np.__version__}, "
        f"pyarrow {pa.__version__}, pandas {_version('pandas')}, tensorboard {_version('tensorboard')}, "
        f"tbparse {_version('tbparse')}, protobuf {_version('protobuf')}",
        f"- threads: BLAS env {blas or 'untouched (library defaults)'}; pyarrow cpu_count {pa.cpu_count()}, "
        f"io_thread_count {pa.io_thread_count()} (whyspike's CSV reader asks pyarrow for use_threads=False)",
    ]


def ratio_text(t: float, ref: float, ref_name: str) -> str:
    r = t / ref
    return f"{r:.3f}× {ref_name} ({ref / t:.1f}× faster)" if r < 1 else f"{r:.2f}× {ref_name}"


def render(args, csv_path: Path, tb_path: Path, timings: dict[str, Timing], checks: list[str], diag_notes: list[str],
           rss: dict, cli: dict[str, list[float]], info: list[str]) -> str:
    T = timings
    rows = []

    def row(key: str, ratio: str, target: float | None):
        t = T[key]
        verdict = "" if target is None else ("**pass**" if t.best <= target else "**FAIL**")
        rows.append(f"| {t.reader} | {t.task} | {t.best:.3f} | {t.median:.3f} | {ratio} | "
                    f"{'' if target is None else f'≤ {target:g} s'} | {verdict} |")

    pd_t, ea_t, tbp_t = T["pandas"].best, T["ea"].best, T["tbparse"].best
    row("pandas", "reference", None)
    row("ws_csv_load", ratio_text(T["ws_csv_load"].best, pd_t, "pandas"), None)
    row("ws_csv_diag", ratio_text(T["ws_csv_diag"].best, pd_t, "pandas"), CSV_TARGET_S)
    row("ea", "reference", None)
    row("tbparse", ratio_text(tbp_t, ea_t, "EventAccumulator"), None)
    row("ws_tb_load", ratio_text(T["ws_tb_load"].best, ea_t, "EventAccumulator") + "; "
        + ratio_text(T["ws_tb_load"].best, tbp_t, "tbparse"), None)
    row("ws_tb_diag", ratio_text(T["ws_tb_diag"].best, ea_t, "EventAccumulator") + "; "
        + ratio_text(T["ws_tb_diag"].best, tbp_t, "tbparse"), TB_TARGET_S)

    n = args.steps
    csv_mb, tb_mb = csv_path.stat().st_size / 1e6, tb_path.stat().st_size / 1e6
    lines = [
        "# whyspike import + diagnose benchmark",
        "",
        f"Generated by `python benchmarks/bench_import_diagnose.py` (see `benchmarks/README.md`). "
        f"Best of {args.repeats} fresh parses after one warm-up, all readers in one process run.",
        "",
        *info,
        f"- data: `{csv_path.relative_to(HERE.parent)}` ({n:,} rows × 5 columns, {csv_mb:.1f} MB); "
        f"`{tb_path.relative_to(HERE.parent)}` ({n:,} steps of `train/loss`, plus `train/lr` and `train/grad_norm` "
        f"every 100 steps and `val/accuracy` every 5,000: {tb_mb:.1f} MB, written by tensorboard's EventFileWriter)",
        "",
        "| reader | task | best s | median s | ratio (time vs reference) | target | result |",
        "|---|---|---:|---:|---|---|---|",
        *rows,
        "",
        "Notes:",
        "",
        "- *ratio* = reader time / reference time on the same file (< 1: faster than the reference). The machine is "
        "shared and noisy, so the ratios, measured in the same run, are the comparable numbers; absolute seconds vary "
        "from run to run.",
        *[f"- **thin margin**: {T[k].reader} on the {what} passes on the best of {len(T[k].times)} "
          f"({T[k].best:.3f} s) but its median ({T[k].median:.3f} s) is over the {target:g} s target."
          for k, what, target in (("ws_csv_diag", "CSV", CSV_TARGET_S), ("ws_tb_diag", "TB log", TB_TARGET_S))
          if T[k].best <= target < T[k].median],
        "- *load_run* = `whyspike.load_run(path)` (sniff the format, read every numeric series into a Run); "
        "*load_run + diagnose* = that plus `whyspike.diagnosis.diagnose(run)` (detect and explain the jumps) — the "
        "whole job the targets are about. pandas / EventAccumulator / tbparse only parse; they do not diagnose.",
        f"- `whyspike diagnose PATH --format json` end to end (a new process: interpreter start, imports, read, "
        f"diagnose, JSON out), best of {len(cli['csv'])}: CSV {min(cli['csv']):.3f} s, TB {min(cli['tb']):.3f} s.",
        f"- peak RSS of the whyspike diagnosis, TB then CSV, in a child process that runs nothing else: "
        f"`resource.getrusage(RUSAGE_SELF).ru_maxrss` {rss['peak_maxrss_kb'] / 1024:.0f} MiB, "
        f"`VmHWM` {rss['peak_hwm_kb'] / 1024:.0f} MiB (after `import whyspike`, before reading: "
        f"{rss['baseline_maxrss_kb'] / 1024:.0f} / {rss['baseline_hwm_kb'] / 1024:.0f} MiB); each alone (VmHWM): "
        f"TB {rss['tb_only_kb'] / 1024:.0f} MiB, CSV {rss['csv_only_kb'] / 1024:.0f} MiB. {rss['parent_note']}",
        f"- share of `diagnose` in the whole job (best of load + diagnose − best of load): CSV "
        f"{T['ws_csv_diag'].best - T['ws_csv_load'].best:.3f} s, TB {T['ws_tb_diag'].best - T['ws_tb_load'].best:.3f} s "
        f"(the CSV run has two {n:,}-point metric series to scan, loss and accuracy; the TB log has one, train/loss, "
        f"plus the {n // 5000:,}-point val/accuracy).",
        "- warm-up (first call: lazy imports, page cache): "
        + ", ".join(f"{T[k].reader} {T[k].task} {T[k].warmup:.3f} s" for k in
                    ("pandas", "ws_csv_load", "ws_csv_diag", "ea", "tbparse", "ws_tb_load", "ws_tb_diag")) + ".",
        "- all timed runs (s): " + "; ".join(f"{T[k].key} " + ", ".join(f"{x:.3f}" for x in T[k].times) for k in T)
        + ".",
        *[f"- correctness: {c}" for c in checks],
        *[f"- diagnosis: {d}" for d in diag_notes],
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1_000_000, help="rows of the CSV and steps of the TB log")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per reader after one warm-up (best is kept)")
    ap.add_argument("--regen", action="store_true", help="rebuild the data in benchmarks/data/")
    ap.add_argument("--out", type=Path, default=None,
                    help="where to write the Markdown (default: benchmarks/results.md for the full 1M run, "
                         "nowhere for other sizes)")
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="set OMP/OpenBLAS/MKL thread counts before numpy is imported (default: untouched)")
    ap.add_argument("--cli-repeats", type=int, default=2, help="runs of the end-to-end CLI (best is kept)")
    ap.add_argument("--rss-child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.rss_child)
        return 0

    info = machine_info()  # the load average before we add ours
    csv_path = make_csv(args.steps, args.regen)
    tb_path = make_tb(args.steps, args.regen)
    parent_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("[rss] whyspike diagnosis of TB + CSV in a child process", flush=True)
    rss = measure_rss([tb_path, csv_path])
    rss["tb_only_kb"] = measure_rss([tb_path])["peak_hwm_kb"]
    rss["csv_only_kb"] = measure_rss([csv_path])["peak_hwm_kb"]
    rss["parent_note"] = (f"The child was started before anything was timed, when this process' own ru_maxrss was "
                          f"{parent_kb / 1024:.0f} MiB: ru_maxrss of the child cannot be below that on Linux, so "
                          "VmHWM is the exact figure when the two differ.")

    timings: dict[str, Timing] = {}

    def run(key, reader, task, fn, path):
        t, result = time_it(key, reader, task, fn, path, args.repeats)
        timings[key] = t
        return result

    rows = f"{args.steps:,}-row CSV"
    steps = f"{args.steps:,}-step TB log"
    df = run("pandas", "`pandas.read_csv`", f"parse {rows}", pandas_read_csv, csv_path)
    csv_run = run("ws_csv_load", "whyspike `load_run`", f"read {rows}", whyspike_load, csv_path)
    csv_diag = run("ws_csv_diag", "whyspike `load_run` + `diagnose`", f"read + diagnose {rows}", whyspike_diagnose,
                   csv_path)
    acc = run("ea", "`EventAccumulator(size_guidance={'scalars': 0}).Reload()`", f"parse {steps}", event_accumulator,
              tb_path)
    tb_df = run("tbparse", "`tbparse.SummaryReader(path).scalars`", f"parse {steps}", tbparse_scalars, tb_path)
    tb_run = run("ws_tb_load", "whyspike `load_run`", f"read {steps}", whyspike_load, tb_path)
    tb_diag = run("ws_tb_diag", "whyspike `load_run` + `diagnose`", f"read + diagnose {steps}", whyspike_diagnose,
                  tb_path)

    checks = check_csv(csv_run, df) + check_tb(tb_run, acc, tb_df)
    diag_notes = [f"planted in both files: a loss spike (grad-norm blow-up) at step {int(SPIKE_AT * args.steps):,} "
                  f"and an LR step decay 0.1 → 0.01 at step {int(LR_DECAY_AT * args.steps):,}",
                  f"CSV found: {describe(csv_diag)}", f"CSV vs planted: {planted(csv_diag, args.steps)}",
                  f"TB found: {describe(tb_diag)}", f"TB vs planted: {planted(tb_diag, args.steps)}"]
    del df, csv_run, csv_diag, acc, tb_df, tb_run, tb_diag
    gc.collect()

    print(f"[cli] whyspike diagnose --format json, {args.cli_repeats} runs per file", flush=True)
    cli = {"csv": time_cli(csv_path, args.cli_repeats), "tb": time_cli(tb_path, args.cli_repeats)}

    md = render(args, csv_path, tb_path, timings, checks, diag_notes, rss, cli, info)
    print()
    print(md)
    out = args.out if args.out is not None else (RESULTS if args.steps == 1_000_000 else None)
    if out is not None:
        out.write_text(md)
        print(f"[out] wrote {out}")
    failed = any(c.startswith("FAIL") for c in checks)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
