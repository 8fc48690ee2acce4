"""launcher.training.session: the in-trial session's checkpoint store and what it reports to Tune (no Ray)."""

from __future__ import annotations

import os

from launcher.training.scoring import CHECKPOINT_NAME, CHECKPOINT_SCORE, checkpoint_score
from launcher.training.session import CheckpointStore, TuneSession


def _report(tmp_path, step: int, value) -> tuple[str, dict]:
    folder = tmp_path / f"local-{step}"
    folder.mkdir()
    (folder / CHECKPOINT_NAME).write_text(f"weights at {step}")
    return str(folder), {"kind": "val", "step": step, "val_loss": value, CHECKPOINT_SCORE: checkpoint_score(value, "min")}


def test_store_keeps_the_top_k_and_the_latest_as_ray_train_does(tmp_path):
    store = CheckpointStore(str(tmp_path / "storage"), "trial1", num_to_keep=1, mode="min")
    paths = [store.save(*_report(tmp_path, step, v)) for step, v in [(1, 0.5), (2, 0.3), (3, 0.3), (4, 0.9)]]
    kept = {os.path.basename(p) for _, c in store.kept() for p in [c.path]}
    # 0.3 twice: the later one wins the tie (training.scoring); the latest (0.9) is kept for a resume.
    assert kept == {os.path.basename(paths[2]), os.path.basename(paths[3])}
    assert store.latest().path == paths[3]
    assert os.listdir(paths[3]) and sorted(os.listdir(paths[3])) == sorted([CHECKPOINT_NAME, CheckpointStore.REPORT_FILE])
    # The layout of a Ray Train run: <storage>/<name>/checkpoint_<n> (launcher.search.trials lists it).
    assert os.path.dirname(paths[0]) == str(tmp_path / "storage" / "trial1")
    assert [m["step"] for m, _ in store.kept()] == [3, 4]


def test_store_ignores_a_folder_cut_short_and_numbers_on(tmp_path):
    store = CheckpointStore(str(tmp_path / "s"), "t", num_to_keep=2, mode="max")
    first = store.save(*_report(tmp_path, 1, 0.5))
    half = tmp_path / "s" / "t" / "checkpoint_000001"
    half.mkdir()
    (half / CHECKPOINT_NAME).write_text("no report file: a crash mid-copy")
    assert store.latest().path == first
    # A new store over the same folder (a restored trial) goes on after the last complete one.
    again = CheckpointStore(str(tmp_path / "s"), "t", num_to_keep=2, mode="max")
    assert again.latest().path == first
    nxt = again.save(*_report(tmp_path, 2, 0.7))
    assert os.path.basename(nxt) == "checkpoint_000001" and again.latest().path == nxt
    assert CheckpointStore(str(tmp_path / "s"), "other", 1, "max").latest() is None


def test_tune_session_reports_validation_with_the_stored_path(tmp_path, monkeypatch):
    from ray import tune

    sent = []
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: sent.append((metrics, checkpoint)))
    checked = []
    store = CheckpointStore(str(tmp_path / "s"), "t", num_to_keep=2, mode="min")
    session = TuneSession(store, tune_checkpoints=True, check=checked.append)
    step_dir, step_metrics = _report(tmp_path, 5, float("nan"))
    session.report(dict(step_metrics, kind="step"), step_dir)
    assert sent == [] and len(store.kept()) == 1  # step checkpoints: stored for a resume, not ranked by Tune
    val_dir, val_metrics = _report(tmp_path, 10, 0.2)
    session.report(val_metrics, val_dir)
    (metrics, checkpoint), = sent
    assert metrics["checkpoint_path"] == store.latest().path == checkpoint.path and checked == [metrics]
    assert session.get_checkpoint().path == checkpoint.path
    assert (session.rank, session.world, str(session.device())) == (0, 1, "cpu")

    plain = TuneSession(store)  # not PBT: metrics only, Tune keeps no copy
    folder, metrics = _report(tmp_path, 12, 0.1)
    plain.report(metrics, folder)
    assert sent[-1][1] is None and sent[-1][0]["checkpoint_path"] == store.latest().path
