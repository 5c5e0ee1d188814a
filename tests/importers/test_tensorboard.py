"""The TensorBoard importer against event files written by the tensorboard package's own protos and writers."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import google_crc32c
import numpy as np
import pytest
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.summary.writer.record_writer import RecordWriter

from whyspike.errors import CorruptLogError, EmptyLogError
from whyspike.importers import load_run
from whyspike.importers._registry import probe
from whyspike.importers.tensorboard import _fast, _records, load, sniff
from whyspike.importers.tensorboard._log import ScalarLog

T0 = 1_700_000_000.0


# --- writing fixtures with tensorboard's protos -------------------------------------------------------------------


def simple(tag: str, value: float, step: int, wall: float) -> event_pb2.Event:
    """What PyTorch's SummaryWriter.add_scalar writes."""
    return event_pb2.Event(wall_time=wall, step=step,
                           summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)]))


def tensor(tag: str, value: float, step: int, wall: float, *, content: bool = False, dtype=types_pb2.DT_FLOAT,
           metadata: bool = True) -> event_pb2.Event:
    """What tf.summary.scalar writes: a scalar tensor with the scalars plugin's metadata."""
    np_type = {types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64, types_pb2.DT_INT64: np.int64}[dtype]
    proto = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto())
    if content:
        proto.tensor_content = np_type(value).tobytes()
    elif dtype == types_pb2.DT_FLOAT:
        proto.float_val.append(value)
    elif dtype == types_pb2.DT_DOUBLE:
        proto.double_val.append(value)
    else:
        proto.int64_val.append(int(value))
    v = summary_pb2.Summary.Value(tag=tag, tensor=proto)
    if metadata:
        v.metadata.plugin_data.plugin_name = "scalars"
    return event_pb2.Event(wall_time=wall, step=step, summary=summary_pb2.Summary(value=[v]))


def start(wall: float = T0) -> event_pb2.Event:
    return event_pb2.Event(wall_time=wall, file_version="brain.Event:2")


def write(path: Path, events) -> list[int]:
    """Frame ``events`` with tensorboard's RecordWriter; returns each record's start offset."""
    path.parent.mkdir(parents=True, exist_ok=True)
    offsets, pos = [], 0
    with open(path, "wb") as fh:
        writer = RecordWriter(fh)
        for ev in events:
            data = ev.SerializeToString()
            writer.write(data)
            offsets.append(pos)
            pos += len(data) + 16
    return offsets


def f32(x: float) -> float:
    return float(np.float32(x))


def pytorch_run(n: int = 50) -> list[event_pb2.Event]:
    events = [start()]
    for i in range(n):
        events.append(simple("Loss/train", 2.0 / (i + 1), i, T0 + i))
        events.append(simple("Accuracy/val", i / n, i, T0 + i + 0.5))
    return events


# --- simple_value scalars -----------------------------------------------------------------------------------------


def test_pytorch_scalars_read_exactly(tmp_path):
    path = tmp_path / "events.out.tfevents.1700000000.host.1.0"
    write(path, pytorch_run())
    run = load_run(path)
    assert run.source.format == "tensorboard"
    loss, acc = run.series["Loss/train"], run.series["Accuracy/val"]
    assert loss.axis == acc.axis == "step"
    assert loss.x.tolist() == list(range(50))
    assert loss.y.tolist() == [f32(2.0 / (i + 1)) for i in range(50)]
    assert acc.y.tolist() == [f32(i / 50) for i in range(50)]
    assert acc.wall_time.tolist() == [T0 + i + 0.5 for i in range(50)]
    assert (loss.role.kind, loss.role.split) == ("loss", "train")
    assert (acc.role.kind, acc.role.split) == ("accuracy", "val")
    assert not run.warnings and not run.events


def test_the_real_event_file_writer(tmp_path):
    writer = EventFileWriter(str(tmp_path))
    for i in range(20):
        writer.add_event(simple("loss", 1.0 / (i + 1), i * 10, T0 + i))
    writer.close()
    assert sniff(probe(tmp_path)) == 0.9
    files = list(tmp_path.iterdir())
    assert sniff(probe(files[0])) == 1.0
    run = load_run(tmp_path)
    assert run.series["loss"].x.tolist() == [i * 10 for i in range(20)]
    assert run.series["loss"].y.tolist() == [f32(1.0 / (i + 1)) for i in range(20)]


def test_edge_values_and_odd_events(tmp_path):
    events = [start(), simple("x", 0.0, 0, T0), simple("x", float("nan"), 1, T0 + 1),
              simple("x", float("inf"), 2, T0 + 2), simple("x", -3.5, 3, T0 + 3),
              simple("größe/λ", 7.0, 2**40, T0 + 4),
              # TF1 merge_all: several values in one event
              event_pb2.Event(wall_time=T0 + 5, step=9, summary=summary_pb2.Summary(value=[
                  summary_pb2.Summary.Value(tag="a", simple_value=1.0),
                  summary_pb2.Summary.Value(tag="b", simple_value=2.0)])),
              event_pb2.Event(wall_time=T0 + 6, step=9, graph_def=b"\x00" * 100),
              event_pb2.Event(wall_time=T0 + 7, step=-5, summary=summary_pb2.Summary(value=[
                  summary_pb2.Summary.Value(tag="neg", simple_value=1.5)]))]
    write(tmp_path / "x.tfevents", events)
    run = load_run(tmp_path / "x.tfevents")
    y = run.series["x"].y
    assert run.series["x"].x.tolist() == [0, 1, 2, 3]
    assert y[0] == 0.0 and np.isnan(y[1]) and y[2] == np.inf and y[3] == -3.5
    assert run.series["größe/λ"].x.tolist() == [2**40]
    assert run.series["a"].y.tolist() == [1.0] and run.series["b"].y.tolist() == [2.0]
    assert run.series["neg"].x.tolist() == [-5]


# --- TF2 / Keras tensor summaries ---------------------------------------------------------------------------------


def test_tf2_tensor_summaries_in_every_encoding(tmp_path):
    values = [0.25, 0.5, 0.125, 1.0 / 3.0]
    events = [start()]
    for i, v in enumerate(values):
        # tf.summary writes the metadata with the first value of a tag only
        events.append(tensor("float_val", v, i, T0 + i, metadata=i == 0))
        events.append(tensor("content", v, i, T0 + i, content=True, metadata=i == 0))
        events.append(tensor("double", v, i, T0 + i, dtype=types_pb2.DT_DOUBLE))
        events.append(tensor("double_content", v, i, T0 + i, dtype=types_pb2.DT_DOUBLE, content=True))
        events.append(tensor("int", i * 100, i, T0 + i, dtype=types_pb2.DT_INT64))
    write(tmp_path / "events.out.tfevents.1.h", events)
    run = load_run(tmp_path)
    assert run.series["float_val"].y.tolist() == [f32(v) for v in values]
    assert run.series["content"].y.tolist() == [f32(v) for v in values]
    assert run.series["double"].y.tolist() == values
    assert run.series["double_content"].y.tolist() == values
    assert run.series["int"].y.tolist() == [0.0, 100.0, 200.0, 300.0]
    assert all(s.x.tolist() == [0, 1, 2, 3] for s in run.series.values())


def test_non_scalar_summaries_are_ignored(tmp_path):
    hist = tensor_pb2.TensorProto(dtype=types_pb2.DT_DOUBLE, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=30), tensor_shape_pb2.TensorShapeProto.Dim(size=3)]),
        tensor_content=np.zeros((30, 3)).tobytes())
    text = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                                  string_val=[b"hello"])
    hparam = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                                    float_val=[0.0])

    def value(tag, plugin=None, **kw):
        v = summary_pb2.Summary.Value(tag=tag, **kw)
        if plugin:
            v.metadata.plugin_data.plugin_name = plugin
        return event_pb2.Event(wall_time=T0, step=1, summary=summary_pb2.Summary(value=[v]))

    events = [start(), simple("loss", 0.5, 1, T0),
              value("weights", "histograms", tensor=hist), value("weights", tensor=hist),
              value("notes", "text", tensor=text),
              value("_hparams_/session_start_info", "hparams", tensor=hparam),
              value("_hparams_/session_start_info", tensor=hparam),  # metadata only the first time
              value("old_histo", histo=summary_pb2.HistogramProto(min=0, max=1, num=3)),
              value("image", image=summary_pb2.Summary.Image(height=2, width=2, encoded_image_string=b"x" * 5000))]
    write(tmp_path / "e.tfevents", events)
    run = load_run(tmp_path / "e.tfevents")
    assert list(run.series) == ["loss"]
    assert not run.warnings


def test_keras_train_and_validation_directories(tmp_path):
    epochs = 10
    train, val = tmp_path / "logs" / "train", tmp_path / "logs" / "validation"
    acc = [0.5 + 0.04 * e for e in range(epochs)]
    events = [start(), event_pb2.Event(wall_time=T0, step=0, graph_def=b"\x0a\x02\x08\x01")]
    for e in range(epochs):
        events.append(tensor("epoch_loss", 1.0 - acc[e], e, T0 + 60 * e, metadata=e == 0))
        events.append(tensor("epoch_accuracy", acc[e], e, T0 + 60 * e, metadata=e == 0))
        events.append(tensor("epoch_learning_rate", 0.1 if e < 5 else 0.01, e, T0 + 60 * e, metadata=e == 0))
    write(train / "events.out.tfevents.1700000000.host.7.0.v2", events)
    write(train / "events.out.tfevents.1700000003.host.profile-empty", [start(T0 + 3)])
    (train / "plugins" / "profile").mkdir(parents=True)
    (train / "plugins" / "profile" / "trace.json.gz").write_bytes(b"\x1f\x8b")
    events = [start()]
    for e in range(epochs):
        events.append(tensor("epoch_accuracy", acc[e] - 0.05, e, T0 + 60 * e + 50, metadata=e == 0))
        events.append(tensor("evaluation_accuracy_vs_iterations", acc[e] - 0.05, 100 * (e + 1), T0 + 60 * e + 50))
    write(val / "events.out.tfevents.1700000001.host.7.1.v2", events)

    assert sniff(probe(tmp_path)) > 0  # the event files are two levels down
    run = load_run(tmp_path / "logs")
    assert sorted(run.series) == ["train/epoch_accuracy", "train/epoch_learning_rate", "train/epoch_loss",
                                  "validation/epoch_accuracy", "validation/evaluation_accuracy_vs_iterations"]
    vacc = run.series["validation/epoch_accuracy"]
    assert vacc.axis == "epoch" and vacc.x.tolist() == list(range(epochs))
    assert vacc.y.tolist() == [f32(a - 0.05) for a in acc]
    assert (vacc.role.kind, vacc.role.split) == ("accuracy", "val")
    assert run.series["train/epoch_accuracy"].role.split == "train"
    assert run.series["validation/evaluation_accuracy_vs_iterations"].axis == "step"
    assert run.learning_rate().name == "train/epoch_learning_rate"
    assert not run.events and not run.warnings


def test_one_run_directory_keeps_plain_tags(tmp_path):
    write(tmp_path / "version_0" / "events.out.tfevents.1.h", pytorch_run(5))
    run = load_run(tmp_path)
    assert sorted(run.series) == ["Accuracy/val", "Loss/train"]


def test_axis_rule():
    from whyspike.importers.tensorboard._assemble import axis_of

    assert axis_of("epoch_accuracy") == axis_of("epoch/loss") == "epoch"
    assert axis_of("epoch") == axis_of("batch_loss") == axis_of("train/epoch_loss") == "step"


# --- resumes ------------------------------------------------------------------------------------------------------


def test_resume_in_a_second_file_rewinds_and_leaves_a_gap(tmp_path):
    first = [start()] + [simple("loss", 1.0, s, T0 + 10 * s) for s in range(100)]
    resumed_at = T0 + 10 * 99 + 3600
    second = [start(resumed_at)] + [simple("loss", 2.0, s, resumed_at + 10 * (s - 50)) for s in range(50, 150)]
    write(tmp_path / "events.out.tfevents.1700003000.host.2.0", second)  # written first, named later
    write(tmp_path / "events.out.tfevents.1700000000.host.1.0", first)
    run = load_run(tmp_path)
    loss = run.series["loss"]
    assert loss.x.tolist() == list(range(150))
    assert loss.y.tolist() == [1.0] * 50 + [2.0] * 100  # values logged after the resume win
    kinds = {(e.kind, e.axis, e.at) for e in run.events}
    assert ("step_rewind", "step", 50) in kinds
    assert ("wall_gap", "step", 50) in kinds
    assert ("run_start", "step", 50) in kinds
    gap = next(e for e in run.events if e.kind == "wall_gap")
    assert gap.data["seconds"] == pytest.approx(3600)


def test_second_run_appended_to_the_same_file(tmp_path):
    events = [start()] + [simple("acc", 0.1 * s, s, T0 + s) for s in range(10)]
    events += [start(T0 + 20)] + [simple("acc", 0.5, s, T0 + 20 + s) for s in range(5, 12)]
    write(tmp_path / "events.out.tfevents.1.h", events)
    run = load_run(tmp_path / "events.out.tfevents.1.h")
    acc = run.series["acc"]
    assert acc.x.tolist() == list(range(12))
    assert acc.y.tolist() == [f32(0.1 * s) for s in range(5)] + [0.5] * 7
    assert [e.kind for e in run.events].count("run_start") == 1
    assert any(e.kind == "step_rewind" and e.at == 5 for e in run.events)
    assert not any(e.kind == "wall_gap" for e in run.events)  # 20 s is not a pause


# --- damaged input ------------------------------------------------------------------------------------------------


def test_truncated_last_record(tmp_path):
    path = tmp_path / "events.out.tfevents.1.h"
    write(path, pytorch_run(10))  # 21 records
    path.write_bytes(path.read_bytes()[:-7])
    run = load_run(path)
    assert run.series["Loss/train"].x.tolist() == list(range(10))
    assert run.series["Accuracy/val"].x.tolist() == list(range(9))
    assert run.warnings == [f"{path}: the last record is truncated after 20 valid events; read what is valid"]


def test_checksum_mismatch_stops_at_the_last_valid_record(tmp_path):
    path = tmp_path / "events.out.tfevents.1.h"
    offsets = write(path, pytorch_run(10))
    data = bytearray(path.read_bytes())
    data[offsets[7] + 14] ^= 0xFF  # a byte of record 7's payload
    path.write_bytes(bytes(data))
    run = load_run(path)
    assert run.series["Loss/train"].x.tolist() == [0, 1, 2]
    assert run.series["Accuracy/val"].x.tolist() == [0, 1, 2]
    assert len(run.warnings) == 1 and "fails its checksum" in run.warnings[0] and "7 valid events" in run.warnings[0]

    data = bytearray(write(path, pytorch_run(10)) and path.read_bytes())
    data[offsets[3] + 2] ^= 0x01  # a damaged length: the walk would go astray without its checksum
    path.write_bytes(bytes(data))
    run = load_run(path)
    assert run.series["Loss/train"].x.tolist() == [0]
    assert "3 valid events" in run.warnings[0]


def test_damaged_first_record_is_an_error(tmp_path):
    path = tmp_path / "events.out.tfevents.1.h"
    write(path, pytorch_run(3))
    data = bytearray(path.read_bytes())
    data[13] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError, match="checksum"):
        load_run(path)


def test_garbage(tmp_path):
    path = tmp_path / "garbage.bin"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert sniff(probe(path)) == 0
    with pytest.raises(CorruptLogError) as err:
        load_run(path, format="tensorboard")
    message = str(err.value)
    assert str(path) in message and "\n" not in message and "--input-format" in message
    short = tmp_path / "short.bin"
    short.write_bytes(b"hello")
    with pytest.raises(CorruptLogError, match="cut off"):
        load_run(short, format="tensorboard")


def test_directory_without_event_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "metrics.csv").write_text("epoch,loss\n0,1\n")
    assert sniff(probe(tmp_path)) == 0
    with pytest.raises(EmptyLogError, match="no TensorBoard event files"):
        load_run(tmp_path, format="tensorboard")


def test_a_corrupt_file_beside_good_ones_is_a_warning(tmp_path):
    write(tmp_path / "events.out.tfevents.1.h", pytorch_run(5))
    (tmp_path / "events.out.tfevents.2.h").write_bytes(b"\x01" * 64)
    run = load_run(tmp_path)
    assert run.series["Loss/train"].x.tolist() == list(range(5))
    assert any("events.out.tfevents.2.h" in w and "checksum" in w for w in run.warnings)


# --- reading mechanics --------------------------------------------------------------------------------------------


def test_chunk_boundaries_do_not_change_the_result(tmp_path):
    path = tmp_path / "events.out.tfevents.1.h"
    events = pytorch_run(40)
    big = summary_pb2.Summary.Image(height=1, width=1, encoded_image_string=b"i" * 3000)
    events.insert(20, event_pb2.Event(wall_time=T0, step=9, summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag="img", image=big)])))
    write(path, events)
    expect = load(path)
    for chunk in (1, 17, 100, 1000):
        got = load(path, chunk_size=chunk)
        assert got.series.keys() == expect.series.keys()
        for name, s in expect.series.items():
            assert got.series[name].x.tolist() == s.x.tolist() and got.series[name].y.tolist() == s.y.tolist()


def test_oversized_records_are_verified_but_not_held(tmp_path):
    path = tmp_path / "events.out.tfevents.1.h"
    events = pytorch_run(5)
    big = summary_pb2.Summary.Image(height=1, width=1, encoded_image_string=b"i" * 5000)
    events.insert(3, event_pb2.Event(wall_time=T0, step=9, summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag="img", image=big)])))
    write(path, events)
    for chunk in (64, 4096):
        reader = _records.RecordReader(path, chunk_size=chunk, max_decoded=1000)
        log = ScalarLog()
        for batch in reader:
            log.add_batch(batch, batch.first_index)
        assert reader.records == len(events) and reader.problem is None
        assert log.columns()["Loss/train"][1].tolist() == list(range(5))


def test_common_layouts_take_the_vectorized_path(tmp_path):
    path = tmp_path / "events.out.tfevents.1.h"
    events = [start()]
    for i in range(200):
        events.append(simple("Loss/train", 1.0 / (i + 1), i, T0 + i))
        events.append(tensor("epoch_accuracy", i / 200, i, T0 + i, metadata=i == 0))
        events.append(tensor("epoch_loss", i / 100, i, T0 + i, content=True))
        events.append(tensor("double", i / 7, i, T0 + i, dtype=types_pb2.DT_DOUBLE, metadata=False))
    write(path, events)
    batch = next(iter(_records.RecordReader(path)))
    fast = _fast.decode(batch.buf, batch.arr, batch.data_start, batch.data_len)
    assert len(fast.index) == len(events) - 1  # all but the file_version record
    assert sorted(fast.groups) == [("Loss/train", ""), ("double", ""), ("epoch_accuracy", ""),
                                   ("epoch_accuracy", "scalars"), ("epoch_loss", "scalars")]


def test_sniffing_by_name_and_by_content(tmp_path):
    named = tmp_path / "events.out.tfevents.1.h"
    write(named, pytorch_run(2))
    unnamed = tmp_path / "log.bin"
    unnamed.write_bytes(named.read_bytes())
    assert sniff(probe(named)) == 1.0
    assert sniff(probe(unnamed)) == 0.9
    deep = tmp_path / "a" / "b" / "c"
    write(deep / "events.out.tfevents.1.h", pytorch_run(2))
    assert sniff(probe(tmp_path / "a")) > 0


# --- against tensorboard's own reader -----------------------------------------------------------------------------


def random_events(rng: np.random.Generator, n: int) -> list[event_pb2.Event]:
    hist = tensor_pb2.TensorProto(dtype=types_pb2.DT_DOUBLE, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=4), tensor_shape_pb2.TensorShapeProto.Dim(size=3)]),
        tensor_content=np.arange(12.0).tobytes())
    events, step, wall = [start()], 0, T0
    for _ in range(n):
        step = int(step + rng.integers(1, 300)) if rng.random() > 0.03 else int(rng.integers(-10, step + 1))
        wall += float(rng.random() * 5)
        value = float(rng.normal() * 10.0 ** int(rng.integers(-6, 6)))
        kind = rng.integers(0, 9)
        if kind <= 2:
            events.append(simple(f"loss/{kind}", value, step, wall))
        elif kind == 3:
            events.append(tensor("tf/float", value, step, wall, metadata=rng.random() < 0.3))
        elif kind == 4:
            events.append(tensor("tf/content", value, step, wall, content=True))
        elif kind == 5:
            events.append(tensor("tf/double", value, step, wall, dtype=types_pb2.DT_DOUBLE, content=rng.random() < .5))
        elif kind == 6:
            v = summary_pb2.Summary.Value(tag="weights", tensor=hist)
            v.metadata.plugin_data.plugin_name = "histograms"
            events.append(event_pb2.Event(wall_time=wall, step=step, summary=summary_pb2.Summary(value=[v])))
        elif kind == 7:
            events.append(event_pb2.Event(wall_time=wall, step=step, summary=summary_pb2.Summary(value=[
                summary_pb2.Summary.Value(tag="multi/a", simple_value=value),
                summary_pb2.Summary.Value(tag="multi/b", simple_value=-value)])))
        elif rng.random() < 0.5:
            events.append(start(wall))
        else:
            events.append(event_pb2.Event(wall_time=wall, step=step, summary=summary_pb2.Summary(value=[
                summary_pb2.Summary.Value(tag="img", image=summary_pb2.Summary.Image(
                    encoded_image_string=bytes(rng.integers(0, 256, int(rng.integers(10, 3000)), dtype=np.uint8))))])))
    return events


def reference_series(path: Path) -> dict[str, dict[int, float]]:
    """What tensorboard's own loader reads: the last value logged at each step of every scalar tag."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    from tensorboard.util import tensor_util

    out: dict[str, dict[int, float]] = {}
    for ev in LegacyEventFileLoader(str(path)).Load():
        for v in ev.summary.value:
            kind = v.WhichOneof("value")
            if kind == "simple_value":
                out.setdefault(v.tag, {})[ev.step] = float(np.float32(v.simple_value))
            elif kind == "tensor" and v.tag != "weights":
                out.setdefault(v.tag, {})[ev.step] = float(tensor_util.make_ndarray(v.tensor).item())
    return out


@pytest.mark.parametrize("seed", range(6))
def test_matches_tensorboards_own_reader(tmp_path, seed):
    rng = np.random.default_rng(seed)
    path = tmp_path / "events.out.tfevents.1.h"
    offsets = write(path, random_events(rng, 400))
    cut = seed % 2 == 1
    if cut:  # somewhere in the second half, most likely inside a record
        data = path.read_bytes()
        path.write_bytes(data[: int(rng.integers(offsets[len(offsets) // 2], len(data)))])
    expect = reference_series(path)
    run = load(path, chunk_size=int(rng.choice([7, 64, 333, 4096, 1 << 20])))
    assert set(run.series) == set(expect)
    for tag, by_step in expect.items():
        steps = sorted(by_step)
        assert run.series[tag].x.tolist() == steps, tag
        assert run.series[tag].y.tolist() == [by_step[s] for s in steps], tag
    truncated = cut and path.stat().st_size not in offsets
    assert [w for w in run.warnings if "truncated" in w] == ([run.warnings[0]] if truncated else [])


# --- speed --------------------------------------------------------------------------------------------------------


def _fast_frames(events) -> bytes:
    """TFRecord framing with the C checksum: the tensorboard package's pure-Python one is too slow for 10^6."""
    def mask(crc):
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    out = []
    for ev in events:
        data = ev.SerializeToString()
        head = struct.pack("<Q", len(data))
        out.append(head + struct.pack("<I", mask(google_crc32c.value(head))) + data
                   + struct.pack("<I", mask(google_crc32c.value(data))))
    return b"".join(out)


@pytest.mark.skipif(not os.environ.get("WHYSPIKE_BENCH"), reason="benchmark: set WHYSPIKE_BENCH=1 (writes ~50 MB)")
def test_reads_a_million_steps_quickly(tmp_path):
    n = 1_000_000
    path = tmp_path / "events.out.tfevents.1.h"
    values = np.random.default_rng(0).random(n).astype(np.float32)
    with open(path, "wb") as fh:
        fh.write(_fast_frames([start()]))
        for lo in range(0, n, 100_000):
            fh.write(_fast_frames(simple("train/loss", float(values[i]), i, T0 + 0.01 * i)
                                  for i in range(lo, lo + 100_000)))
    t = time.perf_counter()
    run = load_run(path)
    elapsed = time.perf_counter() - t
    print(f"read {n} steps in {elapsed:.2f} s")
    assert run.series["train/loss"].x.tolist() == list(range(n))
    assert np.array_equal(run.series["train/loss"].y, values.astype(np.float64))
    assert elapsed < 2.0
