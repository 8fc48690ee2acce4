"""data.streaming without Ray: the auto decision, the CPU split, row checks and the stream loader."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from launcher.config import Config
from launcher.data import streaming
from launcher.data.stream_loader import StreamLoader
from launcher.errors import ConfigError


@pytest.mark.parametrize("setting, remote, files, mb, valid, streams, why", [
    ("auto", False, 1, 10.0, True, False, "streams above data.streaming_min_mb"),
    ("auto", False, 1, 2000.0, True, True, "2000 MiB > data.streaming_min_mb 1024"),
    ("auto", False, 3, 1.0, True, True, "3 files"),
    ("auto", True, 1, 0.0, True, True, "a remote URI"),
    ("auto", True, 1, 0.0, False, False, "data.validation_file is not set"),
    (True, False, 1, 0.1, True, True, "data.streaming true"),
    (False, True, 5, 9e9, True, False, "data.streaming false"),
])
def test_decide(setting, remote, files, mb, valid, streams, why):
    got, reason = streaming.decide(setting, remote, files, mb, 1024, valid)
    assert got is streams and why in reason


def test_cpu_split_keeps_cpus_for_ray_data():
    assert streaming.cpu_split(2, 2, 0.5) == streaming.CpuSplit(0.5, 1.0)
    assert streaming.cpu_split(16, 2, 4.0, 2.0) == streaming.CpuSplit(4.0, 8.0)
    with pytest.raises(ConfigError, match=r"^ray.cpus_per_worker: 2 workers x 1 CPUs leave Ray Data 0 of 2 CPUs; a stream needs 1 "
                                          r".* set --ray.cpus_per_worker auto \(here 0.5\)"):
        streaming.cpu_split(2, 2, 1.0)


def test_auto_cpus_per_worker_leave_ray_data_a_cpu():
    """The 2-core default (ray.cpus_per_worker auto, 2 workers) streams: 0.5 CPU each, 1 for Ray Data."""
    from launcher.distributed import cluster

    cfg = Config()
    cfg.ray.num_cpus, cfg.ray.num_workers = 2, 2
    cfg.data.streaming = True
    per_worker = cluster.cpus_per_worker(cfg).cpus
    assert per_worker == 0.5 and streaming.cpu_split(2, 2, per_worker, streaming.data_cpus(cfg)).data_cpus == 1.0
    cfg.data.streaming = False
    assert cluster.cpus_per_worker(cfg).cpus == 1.0


def test_config_keys_and_auto_decision(tmp_path):
    from launcher.config.parsing import bad_value
    from launcher.config.values import BadValue, coerce, field_type

    tp = field_type("data.streaming")
    assert coerce(tp, "auto") == "auto" and coerce(tp, "true") is True and coerce(tp, False) is False
    with pytest.raises(BadValue) as e:
        coerce(tp, "sometimes")
    assert str(bad_value("data.streaming", e.value)).startswith("data.streaming: expected 'auto' or bool, got 'sometimes'")

    folder = tmp_path / "train"
    folder.mkdir()
    for i in range(2):
        pq.write_table(pa.table({"text": ["a b", "c"], "label": ["x", "y"]}), folder / f"p{i}.parquet")
    cfg = Config()
    cfg.data.train_file = str(folder)
    with pytest.raises(ConfigError, match="^data.validation_file: is required when streaming"):
        cfg.data.streaming = True
        streaming.decision(cfg)
    cfg.data.streaming = "auto"
    with pytest.raises(ConfigError, match="^data.train_file: .* names several files"):
        streaming.decision(cfg)  # auto would stream a folder, but there is no validation file
    cfg.data.validation_file = str(folder / "p0.parquet")
    d = streaming.decision(cfg)
    assert d.stream and d.reason == "auto: 2 files" and d.source.format == "parquet"
    assert streaming.parquet_rows(d.source.files) == 4
    (folder / "notes.csv").write_text("text,label\na,b\n")
    with pytest.raises(ConfigError, match="must share one format"):
        streaming.decision(cfg)


def test_row_check_names_the_file_and_row(tmp_path):
    path = str(tmp_path / "t.parquet")
    pq.write_table(pa.table({"text": ["ok", "fine", " ", "x"], "label": ["a", "b", "a", None]}), path)
    batch = pq.read_table(path).append_column("path", pa.array([path] * 4))
    required = {"data.text_column": "text", "data.label_column": "label"}
    with pytest.raises(streaming.BadRows, match=rf"^data.text_column: {path} row 3: empty 'text'; fix: "):
        streaming.RowCheck(required)(batch)
    assert streaming.RowCheck(required, skip=True)(batch).column("text").to_pylist() == ["ok", "fine"]
    assert streaming.RowCheck(required, count_only=True)(batch).to_pylist() == [{"ok": 2, "bad": 2}]
    with pytest.raises(streaming.BadRows, match="column 'label' not in"):
        streaming.RowCheck(required)(batch.drop_columns(["label"]))


class FakeShard:
    def __init__(self, rows):
        self.rows = rows

    def iter_batches(self, batch_size, batch_format, prefetch_batches):
        for i in range(0, len(self.rows), batch_size):
            yield pa.Table.from_pylist(self.rows[i : i + batch_size])


def test_stream_loader_counts_exactly_and_resumes():
    rows = [{"input_ids": list(range(1 + i % 5)), "labels": i} for i in range(23)]  # 23 // 2 = 11 rows for this worker
    loader = StreamLoader(FakeShard(rows[:11]), rows=23, world=2, batch_size=4, collate=lambda b: [r["labels"] for r in b],
                          seed=0, group_by_length=True)
    assert len(loader) == 3
    first = list(loader)
    assert sorted(x for b in first for x in b) == list(range(11)) and [len(b) for b in first] == [4, 4, 3]
    second = list(loader)
    assert loader.epoch == 1 and sorted(x for b in second for x in b) == list(range(11))
    loader.load_state_dict({"epoch": 1, "batches_done": 2})  # resumed after 2 batches of epoch 1
    assert list(loader) == second[2:]
    loader.shard = FakeShard(rows[:5])
    with pytest.raises(RuntimeError, match="gave 2 batches in epoch 2, 3 were counted"):
        list(loader)


def test_a_bad_row_wrapped_by_ray_keeps_its_one_line():
    """Ray re-raises a task's error as a class deriving from RayTaskError and the cause, whose text is
    the remote traceback; the loader hands Lightning the one line BadRows said."""
    from launcher.data.stream_loader import _bad_rows

    class Wrapped(RuntimeError, streaming.BadRows):
        pass

    line = "data.text_column: /d/t.parquet row 7: empty 'text'; fix: fill or drop that row"
    e = Wrapped(f"ray::MapBatches(RowCheck)() (pid=1)\n  File \"x.py\", line 3\nlauncher.data.streaming.BadRows: {line}")
    assert str(_bad_rows(e)) == line
    outer = RuntimeError("stream failed")
    outer.__cause__ = e
    assert str(_bad_rows(outer)) == line
    assert _bad_rows(ValueError("other")) is None
