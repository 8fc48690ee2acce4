"""Driver side of one Ray Train run: ship the prepared data, run the workers, collect what they did.

Used by `launcher train` and by every Tune trial that needs a Train run of its own. The workers run
launcher.training.loop.train_loop; rank 0 tells the run log (a tiny actor on the driver's node) what
happened, so the history survives a lost worker group and the driver never parses Ray's logs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional

import ray

from launcher.config import Config, to_dict
from launcher.data.sampling import to_table
from launcher.distributed import trainer as trainer_lib
from launcher.errors import ConfigError, NonFiniteLoss
from launcher.storage import redact_uri, storage_errors
from launcher.training.loop import train_loop
from launcher.training.prepare import Prepared
from launcher.training.scoring import CHECKPOINT_SCORE, dedupe_by_epoch


@dataclass
class Outcome:
    """What one Ray Train run produced: Ray's Result plus the history rank 0 recorded."""

    result: Any
    history: list
    test: dict
    starts: int
    wall_s: float
    train_samples: int
    monitor: str
    mode: str
    storage: str
    name: str
    end: dict = field(default_factory=dict)
    #: everything rank 0 recorded, by kind (a loop may record kinds of its own)
    records: dict = field(default_factory=dict)

    @property
    def restarts(self) -> int:
        return max(self.starts - 1, 0)


@ray.remote
class RunLog:
    """A tiny actor that rank 0 tells what happened (reports, test metrics, starts, the end)."""

    def __init__(self):
        self.items: dict[str, list] = {}

    def record(self, kind: str, item: dict) -> None:
        self.items.setdefault(kind, []).append(item)

    def get(self) -> dict:
        return self.items


def ship(prepared: Prepared) -> dict:
    """The tokenizer and splits as object refs (put once; a Tune search hands in refs already).

    Object refs: the Train controller unpickles the loop config too, and need not import
    transformers for a tokenizer it never uses.
    """
    tokenizer = prepared.tokenizer if isinstance(prepared.tokenizer, ray.ObjectRef) else ray.put(prepared.tokenizer)
    data = {k: v if isinstance(v, ray.ObjectRef) else ray.put(to_table(v)) for k, v in prepared.splits.items()}
    return {"tokenizer": tokenizer, "data": data}


def fit(cfg: Config, prepared: Prepared, name: str = "train", callbacks=None, storage: Optional[str] = None,
        extra_loop_config: Optional[dict] = None) -> Outcome:
    """Run the Ray Train job for `cfg` and return what it did; raises the run's error."""
    monitor = prepared.task.monitor
    mode = cfg.checkpoint.mode_for(monitor)
    loop_config = {"cfg": to_dict(cfg), "meta": prepared.meta, **ship(prepared), "monitor": monitor, "mode": mode}
    loop_config.update(extra_loop_config or {})
    datasets = None
    if prepared.stream is not None:
        # data.streaming: Ray Data reads and tokenises on the cluster; each worker reads its equal shard.
        datasets = {"train": prepared.stream.dataset()}
        loop_config["stream"] = {"rows": prepared.stream.rows}
    return launch(cfg, train_loop, loop_config, name, monitor, mode, prepared.sizes["train"], callbacks, storage, datasets)


def launch(cfg: Config, loop, loop_config: dict, name: str, monitor: str, mode: str, train_size: int,
           callbacks=None, storage: Optional[str] = None, datasets: Optional[dict] = None) -> Outcome:
    """Run `loop(loop_config)` on the Ray Train workers of `cfg`, with a run log its rank 0 records to
    (`loop_config["run_log"]`), and return what it did; raises the run's error.

    The one driver of a Train run: `fit` (a task's loop) and launcher.lightning_base (a user's module).
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # Pinned to the driver's node: the run's record must outlive any worker node that fails.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    run_log = RunLog.options(num_cpus=0, scheduling_strategy=here).remote()
    loop_config = {**loop_config, "run_log": run_log}
    storage = storage or cfg.storage_path()
    trainer = trainer_lib.torch_trainer(loop, loop_config, cfg, name, (CHECKPOINT_SCORE, mode), callbacks, storage, datasets=datasets)
    start = time.time()
    with storage_errors(redact_uri(storage)):  # a full or read-only run storage: one line naming it
        try:
            result = trainer.fit()
        finally:
            log = ray.get(run_log.get.remote())
            ray.kill(run_log)
        bad_rows = [f for f in log.get("fatal", []) if f.get("bad_rows")]
        if bad_rows:  # a worker met a bad row in the stream (the others may have failed waiting for it)
            raise bad_rows_error(bad_rows[-1]["message"])
        if getattr(result, "error", None) is not None:
            raise result.error
    wall = time.time() - start
    if log.get("fatal"):
        fatal = log["fatal"][-1]
        if fatal.get("bad_rows"):
            raise bad_rows_error(fatal["message"])
        raise NonFiniteLoss(fatal["message"])
    history = dedupe_by_epoch(log.get("report", []))
    test = (log.get("test") or [{}])[-1]
    end = (log.get("end") or [{}])[-1]
    end["resumed_steps"] = [s["resumed_step"] for s in log.get("start", []) if s.get("resumed_step") is not None]
    samples = train_size * max(1, int(max((h.get("epoch", 0) for h in history), default=0)))
    return Outcome(result=result, history=history, test=test, starts=len(log.get("start", [])), wall_s=wall, end=end,
                   train_samples=samples, monitor=monitor, mode=mode, storage=storage, name=name, records=log)


def bad_rows_error(message: str) -> ConfigError:
    """A BadRows message ("key: what; fix: how") from a worker → the one-line ConfigError it stands for."""
    what, _, fix = message.partition("; fix: ")
    key, _, detail = what.partition(": ")
    return ConfigError(key, detail, fix)
