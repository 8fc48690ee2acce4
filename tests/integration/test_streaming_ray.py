"""data.streaming end to end: Ray Data reads and tokenises a parquet folder on the cluster, two
workers with accumulation train on equal shards; the same rows in memory give the same run."""

from __future__ import annotations

import json
import os

import pytest

from tests.helpers.config import base_config
from tests.helpers.data import sentiment_rows, write_csv

pytestmark = pytest.mark.ray


def write_parquet(path: str, rows: list[dict]) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _weights(out: str) -> dict:
    from safetensors.torch import load_file

    return load_file(os.path.join(out, "best", "model.safetensors"))


def _config(model, files, out, streaming, **data):
    # One optimizer step per epoch (16 rows per worker = 4 batches x accumulation 4): each step sums
    # the same gradients whichever worker and batch a row lands in, so the order of the stream and of
    # the in-memory sampler cannot change the parameters. adam_epsilon 1: updates continuous in the
    # gradient (no sign flips of near-zero gradients from float summation order).
    return base_config(model, files, out, data={"streaming": streaming, **data},
                       train={"max_epochs": 2, "batch_size": 4, "accumulate_grad_batches": 4},
                       optim={"lr": 5e-2, "adam_epsilon": 1.0})


@pytest.mark.slow  # two Train runs: ~2 minutes on 2 cores
def test_parquet_folder_streams_like_in_memory(ray_session, tiny_bert, tmp_path):
    from launcher.commands import train as train_cmd

    rows = sentiment_rows(32, seed=11)
    folder = tmp_path / "train"
    folder.mkdir()
    write_parquet(str(folder / "part-0.parquet"), rows[:20])
    write_parquet(str(folder / "part-1.parquet"), rows[20:])
    validation = write_csv(str(tmp_path / "val.csv"), sentiment_rows(10, seed=12))
    one_file = write_parquet(str(tmp_path / "all.parquet"), rows)

    streamed = train_cmd.run(_config(tiny_bert, {"train": str(folder), "validation": validation}, str(tmp_path / "s"), "auto"))
    memory = train_cmd.run(_config(tiny_bert, {"train": one_file, "validation": validation}, str(tmp_path / "m"), False))

    assert streamed["streaming"] == {"rows": 32, "rows_from": "parquet metadata", "skipped_rows": 0, "worker_cpus": 0.5}
    assert "streaming" not in memory
    assert streamed["global_step"] == memory["global_step"] == 2
    for got, want in zip(streamed["epochs"], memory["epochs"], strict=True):
        assert got["step"] == want["step"]
        assert got["val_loss"] == pytest.approx(want["val_loss"], abs=1e-5)  # every validation row scored once
        assert got["val_accuracy"] == pytest.approx(want["val_accuracy"], abs=1e-6)
    a, b = _weights(str(tmp_path / "s")), _weights(str(tmp_path / "m"))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5
    with open(os.path.join(tmp_path, "s", "results.json")) as f:
        assert json.load(f)["streaming"]["rows"] == 32

    # `launcher evaluate` of a streaming run's config reads only the scored split.
    from tests.helpers.cli import run_cli

    proc = run_cli("evaluate", os.path.join(tmp_path, "s", "config.yaml"), "--split", "validation")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["val_accuracy"] == pytest.approx(streamed["best_value"], abs=1e-6)


def _bad_files(tmp_path):
    rows = sentiment_rows(24, seed=3)
    rows[6]["text"] = ""
    train = write_parquet(str(tmp_path / "train.parquet"), rows)
    return {"train": train, "validation": write_csv(str(tmp_path / "val.csv"), sentiment_rows(8, seed=4))}


@pytest.mark.slow
@pytest.mark.xfail(reason="open (2026-12-04): fails on the message; Ray Data retries the failing map task "
                          "(DataContext max_map_retries) before the error reaches the worker — not yet diagnosed", strict=False)
def test_a_bad_row_stops_the_stream_naming_file_and_row(ray_session, tiny_bert, tmp_path):
    """Also the 2-core default: ray.cpus_per_worker auto leaves Ray Data a CPU (2 workers x 0.5)."""
    from launcher.commands import train as train_cmd
    from launcher.errors import ConfigError

    files = _bad_files(tmp_path)
    cfg = _config(tiny_bert, files, str(tmp_path / "e"), True)
    cfg.ray.cpus_per_worker = "auto"
    with pytest.raises(ConfigError) as e:
        train_cmd.run(cfg)
    assert str(e.value).startswith(f"data.text_column: {files['train']} row 7: empty 'text' — fill or drop that row")
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_bad_rows_skip_counts_them(ray_session, tiny_bert, tmp_path):
    from launcher.commands import train as train_cmd

    results = train_cmd.run(_config(tiny_bert, _bad_files(tmp_path), str(tmp_path / "k"), True, on_bad_rows="skip"))
    assert results["streaming"]["rows"] == 23 and results["streaming"]["skipped_rows"] == 1
    assert results["streaming"]["rows_from"] == "Ray Data count of the valid rows (data.on_bad_rows skip)"
    assert results["global_step"] == 2  # 23 // 2 = 11 rows per worker: 3 batches, 1 step per epoch
