"""Where the training loop reports: the one seam between launcher's loop and the Ray API it runs under.

The loop (launcher.training.loop.run) and its callbacks never call `ray.train` or `ray.tune` directly;
they talk to a Session:

* `TrainSession`: inside a Ray Train worker (`launcher train`, and trials with several workers):
  `ray.train.report` / `get_checkpoint`, ranks from the Train context.
* `TuneSession`: a Tune trial that trains in its own process (one worker, launcher.search.trial):
  `ray.tune.report` / `tune.get_checkpoint` (Ray refuses `ray.train.report` inside a Tune function,
  Ray issue 49454), its checkpoints kept by a `CheckpointStore` laid out as Ray Train lays out a run's.

and tell the driver what happened through a run log (`RunLogClient` over the driver's RunLog actor,
or `LocalRunLog` when the driver is this process).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional

from launcher import storage as storage_lib
from launcher.training.scoring import CHECKPOINT_SCORE


class Session:
    """The API a training loop needs from the process it runs in. Subclasses fill in the methods."""

    rank: int = 0
    world: int = 1

    def report(self, metrics: dict, checkpoint_dir: Optional[str]) -> None:
        """Report `metrics` (every rank) and, from rank 0, the checkpoint folder; returns once the
        checkpoint is registered (a restart resumes it), so the caller may delete the folder."""
        raise NotImplementedError

    def get_checkpoint(self):
        """The checkpoint (an object with `as_directory()`) this run resumes, or None for a fresh run."""
        raise NotImplementedError

    def reported_checkpoints(self) -> list[tuple[dict, Any]]:
        """(metrics, checkpoint) of every checkpoint this run reported that is still kept."""
        raise NotImplementedError

    def device(self):
        """The torch device this process trains on."""
        raise NotImplementedError


class TrainSession(Session):
    """Inside a Ray Train worker."""

    def __init__(self):
        import ray.train

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()

    def report(self, metrics: dict, checkpoint_dir: Optional[str]) -> None:
        import ray.train
        from ray.train import Checkpoint

        checkpoint = Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir and self.rank == 0 else None
        ray.train.report(metrics=metrics, checkpoint=checkpoint)
        if checkpoint is not None:
            # Ray registers a reported checkpoint when its controller next polls the workers (every
            # ~2 s). Until then a worker lost would resume an older checkpoint (and this one stays
            # in storage, unknown to Ray): wait, so every report that returned is the one resumed.
            ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)

    def get_checkpoint(self):
        import ray.train

        return ray.train.get_checkpoint()

    def reported_checkpoints(self) -> list[tuple[dict, Any]]:
        import ray.train

        return [(r.metrics, r.checkpoint) for r in ray.train.get_all_reported_checkpoints()]

    def dataset_shard(self, name: str):
        """This worker's share of a Ray Data dataset handed to TorchTrainer(datasets=...)."""
        import ray.train

        return ray.train.get_dataset_shard(name)

    def device(self):
        from ray.train.torch import get_device

        return get_device()


class TuneSession(Session):
    """Inside a Tune trial that runs the loop itself (a one-worker trial, launcher.search.trial).

    Checkpoints go to a `CheckpointStore` (the layout and top-k rule of a Ray Train run, so a search's
    checkpoint bookkeeping is the same for both kinds of trial); validation reports go on to Tune with
    the stored checkpoint's path, and with the checkpoint itself when `tune_checkpoints` (PBT copies
    it into other trials). Step checkpoints only serve a resume and are not reported to Tune, whose
    schedulers rank every report. `check(metrics)` may refuse a report (raise) before Tune sees it.
    """

    def __init__(self, store: "CheckpointStore", use_gpu: bool = False, tune_checkpoints: bool = False,
                 check: Optional[Callable[[dict], None]] = None):
        self.store, self.use_gpu, self.tune_checkpoints, self.check = store, use_gpu, tune_checkpoints, check

    def report(self, metrics: dict, checkpoint_dir: Optional[str]) -> None:
        from ray import tune

        path = self.store.save(checkpoint_dir, metrics) if checkpoint_dir else None
        if metrics.get("kind") != "val":
            return
        metrics = dict(metrics, checkpoint_path=path)
        if self.check is not None:
            self.check(metrics)
        # Returns when Tune asks for the next result; a scheduler that stops the trial (ASHA) makes
        # it raise SystemExit(0) here instead, which ends the loop before the actor runs another trial.
        tune.report(metrics, checkpoint=self.store.checkpoint(path) if path and self.tune_checkpoints else None)

    def get_checkpoint(self):
        # This run's own latest checkpoint: a trial restored by `launcher tune --resume` continues it
        # (as a Train run of the same name does); a PBT copy comes in as the loop's init_checkpoint.
        return self.store.latest()

    def reported_checkpoints(self) -> list[tuple[dict, Any]]:
        return self.store.kept()

    def device(self):
        import torch

        if self.use_gpu and torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


class CheckpointStore:
    """One run's checkpoints in storage: <storage>/<name>/checkpoint_<n>/ (what Ray Train writes).

    Keeps the best `num_to_keep` by CHECKPOINT_SCORE (ties: the later one) and always the latest,
    as Ray Train's checkpoint manager does. Each folder holds the Lightning checkpoint and the report
    (REPORT_FILE), written last: a folder without it is an unfinished copy and is ignored.
    """

    REPORT_FILE = "launcher_report.json"

    def __init__(self, storage: str, name: str, num_to_keep: Optional[int], mode: str):
        self.fs, root = storage_lib.filesystem(storage)
        self.run_dir = f"{root.rstrip('/')}/{name}"
        self.num_to_keep, self.mode = num_to_keep, mode

    def _entries(self) -> list[tuple[int, str, dict]]:
        """(index, path, report) of every complete checkpoint, oldest first."""
        import pyarrow.fs

        try:
            infos = self.fs.get_file_info(pyarrow.fs.FileSelector(self.run_dir, allow_not_found=True))
        except OSError:
            return []
        out = []
        for info in infos:
            if info.type != pyarrow.fs.FileType.Directory or not info.base_name.startswith("checkpoint_"):
                continue
            try:
                with self.fs.open_input_stream(f"{info.path}/{self.REPORT_FILE}") as f:
                    report = json.loads(f.read().decode())
                out.append((int(info.base_name.removeprefix("checkpoint_")), info.path, report))
            except (OSError, ValueError):
                continue  # cut short by a crash, or not one of ours
        return sorted(out)

    def save(self, local_dir: str, metrics: dict) -> str:
        import pyarrow.fs

        entries = self._entries()
        path = f"{self.run_dir}/checkpoint_{(entries[-1][0] + 1) if entries else 0:06d}"
        self.fs.create_dir(path, recursive=True)
        pyarrow.fs.copy_files(local_dir, path, source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=self.fs)
        with self.fs.open_output_stream(f"{path}/{self.REPORT_FILE}") as f:
            f.write(json.dumps(metrics, default=str).encode())
        entries.append((entries[-1][0] + 1 if entries else 0, path, metrics))
        if self.num_to_keep:
            sign = 1 if self.mode == "max" else -1
            ranked = sorted(entries, key=lambda e: (sign * float(e[2].get(CHECKPOINT_SCORE, -sign * 1e30)), e[0]), reverse=True)
            keep = {e[1] for e in ranked[: self.num_to_keep]} | {path}
            for _, doomed, _ in entries:
                if doomed not in keep:
                    try:
                        self.fs.delete_dir(doomed)
                    except OSError:
                        pass
        return path

    def checkpoint(self, path: str):
        from ray.tune import Checkpoint

        return Checkpoint(path, filesystem=self.fs)

    def latest(self):
        entries = self._entries()
        return self.checkpoint(entries[-1][1]) if entries else None

    def kept(self) -> list[tuple[dict, Any]]:
        return [(report, self.checkpoint(path)) for _, path, report in self._entries()]


# ---------------------------------------------------------------------- the run log


class RunLogClient:
    """Rank 0's side of the driver's RunLog actor (launcher.training.fit.RunLog)."""

    def __init__(self, actor):
        self.actor = actor

    def record(self, kind: str, item: dict, wait: bool = False) -> None:
        ref = self.actor.record.remote(kind, item)
        if wait:
            import ray

            ray.get(ref)


class LocalRunLog:
    """A run log in this process (the driver runs the loop itself: a one-worker Tune trial, tests)."""

    def __init__(self):
        self.items: dict[str, list] = {}

    def record(self, kind: str, item: dict, wait: bool = False) -> None:
        self.items.setdefault(kind, []).append(item)

    def get(self) -> dict:
        return self.items


def run_log_client(run_log):
    """The loop's view of the run log it was handed (an actor handle or a local log)."""
    return run_log if isinstance(run_log, (LocalRunLog, RunLogClient)) else RunLogClient(run_log)
