"""Where the training loop reports: the one seam between launcher's loop and the Ray API it runs under.

The loop (launcher.training.loop.run) and its callbacks never call `ray.train` or `ray.tune` directly;
they talk to a Session:

* `TrainSession`: inside a Ray Train worker (`launcher train`, and trials with several workers):
  `ray.train.report` / `get_checkpoint`, ranks from the Train context.
* A Tune trial that trains in its own process (one worker) gets a session of launcher.search with the
  same methods over `ray.tune`.

and tell the driver what happened through a run log (`RunLogClient` over the driver's RunLog actor,
or `LocalRunLog` when the driver is this process).
"""

from __future__ import annotations

from typing import Any, Optional


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

    def device(self):
        from ray.train.torch import get_device

        return get_device()


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
