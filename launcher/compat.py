"""Every use of another library's private API, in one place.

Each function names the versions it was written against and what it relies on; tests/unit/test_compat.py
checks each of those facts against the installed versions, so an upgrade that changes one fails
loudly there instead of quietly somewhere in a run. Everything is imported lazily: this module is
imported by the driver, the Train controller and the workers alike.

Written against: ray 2.60.0, lightning 2.6.6, torch 2.13.0, transformers 5.25, torchmetrics 1.9.0.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import tempfile
from typing import Any, Optional

# ---------------------------------------------------------------------- Lightning 2.6.6


def log_train_step_row(trainer) -> None:
    """Log the current step's metrics row now (`trainer._logger_connector.update_train_step_metrics`).

    Lightning logs a step's row only after the on_train_batch_end hooks; a step checkpoint taken in
    that hook must have its row on disk already, or a run resumed from it lacks that row.
    """
    trainer._logger_connector.update_train_step_metrics()


def attached_trainer(module):
    """The Trainer a LightningModule is attached to, or None (`module._trainer`: the public
    `module.trainer` raises when there is none)."""
    return getattr(module, "_trainer", None)


def cached_logger_experiment(logger):
    """A Lightning logger's experiment if it was created already (`logger._experiment`), else None."""
    return getattr(logger, "_experiment", None)


def loader_with_sampler(loader, sampler):
    """A copy of a user's DataLoader with `sampler` in place of its own
    (`lightning.pytorch.utilities.data._update_dataloader`, what Lightning does itself when it adds
    a DistributedSampler; it re-creates the loader from its recorded constructor arguments, so
    DataLoader subclasses keep working)."""
    from lightning.pytorch.utilities.data import _update_dataloader

    return _update_dataloader(loader, sampler)


# ---------------------------------------------------------------------- torch 2.13


def batches_yielded(iterator) -> int:
    """Batches a DataLoader iterator has handed out (`_BaseDataLoaderIter._num_yielded`): counts what
    the training loop received, not what DataLoader workers prefetched."""
    return int(getattr(iterator, "_num_yielded", 0)) if iterator is not None else 0


def set_last_lr(scheduler, lrs: list) -> None:
    """What `scheduler.get_last_lr()` returns (`LRScheduler._last_lr`), after setting the lrs by hand."""
    scheduler._last_lr = list(lrs)


def is_batch_norm(module) -> bool:
    """BatchNorm1d/2d/3d and SyncBatchNorm share only the private base `_BatchNorm`."""
    from torch import nn

    return isinstance(module, nn.modules.batchnorm._BatchNorm)


# ---------------------------------------------------------------------- torchmetrics 1.9


def disable_metric_sync(metric) -> None:
    """No cross-process sync in compute() (`sync_on_compute` and the private `_to_sync` it seeds)."""
    metric.sync_on_compute = False
    metric._to_sync = False


# ---------------------------------------------------------------------- transformers 5


def tied_weight_keys(model) -> set:
    """Parameter names a model ties to others (`_tied_weights_keys`: a list, or a dict in transformers 5),
    plus LM heads tied to the embeddings by `config.tie_word_embeddings`."""
    keys = set()
    tied = getattr(model, "_tied_weights_keys", None) or []
    keys.update(list(tied))
    if getattr(getattr(model, "config", None), "tie_word_embeddings", False):
        for name, _ in model.named_parameters(remove_duplicate=False):
            if name.endswith(("lm_head.weight", "decoder.weight")):
                keys.add(name)
    return keys


def no_split_modules(model) -> Optional[list]:
    """Class names of a transformers model's layers that must stay whole (`PreTrainedModel._no_split_modules`:
    its decoder/encoder blocks); None for modules that are not transformers models. FSDP2 shards one unit per such layer."""
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        return None
    return list(getattr(model, "_no_split_modules", None) or [])


# ---------------------------------------------------------------------- Ray 2.60


def trainer_without_dataset_manager():
    """TorchTrainer that starts no Ray Data DatasetManager actor when it is given no Ray datasets.

    Train V2 starts one (a process importing Ray Data) for every run; a Tune trial pays for it every
    time. Overrides `TorchTrainer._create_default_callbacks` and drops
    `ray.train.v2._internal.callbacks.datasets.DatasetsCallback`; a Ray without either keeps its defaults.
    """
    from ray.train.torch import TorchTrainer

    if not hasattr(TorchTrainer, "_create_default_callbacks"):
        return TorchTrainer
    try:
        from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    except ImportError:
        return TorchTrainer

    class LauncherTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self):
            callbacks = super()._create_default_callbacks()
            if self.datasets:
                return callbacks
            return [c for c in callbacks if not isinstance(c, DatasetsCallback)]

    return LauncherTorchTrainer


def set_function_trial_stop_timeout(seconds: float) -> None:
    """How long a reused Tune function actor waits for a stopped trial's training thread to end.

    `ray.tune.trainable.function_trainable.FunctionTrainable.reset_config` reads
    TUNE_FUNCTION_THREAD_TIMEOUT_S (default 2 s) from this process's environment each time it hands
    the actor a new trial; if the thread is still alive then, the actor is not reused (a fresh one
    starts). A trial's loop needs a moment to unwind from `tune.report` through Lightning's teardown.
    """
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", str(int(seconds)))


def autoscaler_node_groups() -> list[tuple[dict, int]]:
    """(resources, max_count) of every node type the cluster's autoscaler may start; [] without one.

    `ray._private.state.state.get_cluster_config()`: what Ray Train itself checks before placing workers.
    """
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - a Ray without it simply gets no autoscaler allowance
        return []
    return [(dict(g.resources), int(g.max_count)) for g in getattr(config, "node_group_configs", None) or []]


def start_train_autoscaling_coordinator() -> None:
    """Start Ray Train's cluster-wide autoscaling coordinator actor now
    (`ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator`).

    Every Train controller registers its resource request with this detached actor and waits up to
    5 s for the answer; the first one would otherwise also wait for the actor's process to start.
    """
    try:
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator,
        )
    except ImportError:  # moved in another Ray version: only the first trial starts slower
        return
    get_or_create_autoscaling_coordinator()


def cluster_status(client) -> Optional[dict]:
    """The dashboard's /api/cluster_status through a JobSubmissionClient (`client._do_request`),
    or None when the dashboard does not answer it."""
    response = client._do_request("GET", "/api/cluster_status")
    if response.status_code != 200:
        return None
    status = (response.json().get("data") or {}).get("clusterStatus")
    return status if isinstance(status, dict) else None


def reload_ray_auth_mode() -> None:
    """Make a Ray already imported in this process re-read RAY_AUTH_MODE (`ray._raylet.Config.initialize`)."""
    if "ray._raylet" in sys.modules:
        from ray._raylet import Config as RayConfig

        RayConfig.initialize("")


def train_user_exception(e: BaseException) -> Optional[BaseException]:
    """The worker's own exception inside Ray Train's `UserExceptionWithTraceback` (`._base_exc`), which
    `WorkerGroupError.worker_failures` holds per rank; None for any other exception."""
    return getattr(e, "_base_exc", None) if type(e).__name__ == "UserExceptionWithTraceback" else None


def quiet_train_reports(level: int) -> None:
    """Ray 2.60 logs "Reporting training result N: TrainingReport(...) from rank R" at INFO for every
    `ray.train.report`, in the worker, on a logger named by the file path of
    `ray.train.v2._internal.execution.context` (`logging.getLogger(__file__)`): outside "ray.train",
    so `RunConfig(logging_config=LoggingConfig(log_level=...))` does not filter it, and Train's worker
    logging sends root-logger INFO to the console. Sets that logger's level; a Ray without it: no-op."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:
        return
    logger = getattr(context, "logger", None)
    if isinstance(logger, logging.Logger):
        logger.setLevel(level)


def checks() -> dict[str, Any]:
    """name → a zero-argument callable that raises when the private API it guards is gone (the compat test)."""

    def lightning_logger_connector():
        from lightning.pytorch.trainer.connectors.logger_connector.logger_connector import _LoggerConnector

        assert callable(_LoggerConnector.update_train_step_metrics)

    def lightning_module_trainer():
        import lightning.pytorch as pl

        assert pl.LightningModule()._trainer is None

    def csv_logger_experiment():
        from lightning.pytorch.loggers import CSVLogger

        assert CSVLogger(tempfile.mkdtemp())._experiment is None

    def lightning_update_dataloader():
        from torch.utils.data import DataLoader, SequentialSampler

        data = list(range(6))
        copy = loader_with_sampler(DataLoader(data, batch_size=4, shuffle=True), SequentialSampler(data))
        assert isinstance(copy.sampler, SequentialSampler) and copy.batch_size == 4

    def dataloader_yielded():
        from torch.utils.data import DataLoader

        it = iter(DataLoader(list(range(4)), batch_size=2))
        next(it)
        assert batches_yielded(it) == 1

    def lr_scheduler_last_lr():
        import torch

        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        s = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
        set_last_lr(s, [0.5])
        assert s.get_last_lr() == [0.5]

    def batch_norm_base():
        from torch import nn

        assert is_batch_norm(nn.BatchNorm1d(2)) and is_batch_norm(nn.SyncBatchNorm(2)) and not is_batch_norm(nn.LayerNorm(2))

    def metric_sync():
        import torchmetrics

        m = torchmetrics.MeanMetric()
        assert hasattr(m, "_to_sync") and hasattr(m, "sync_on_compute")

    def tied_weights():
        from transformers import BertConfig, BertForMaskedLM

        model = BertForMaskedLM(BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                                            intermediate_size=8))
        assert "cls.predictions.decoder.weight" in tied_weight_keys(model)

    def transformers_no_split_modules():
        from transformers import BertConfig, BertModel

        model = BertModel(BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8))
        assert "BertLayer" in no_split_modules(model)

    def ray_trainer_callbacks():
        from ray.train.torch import TorchTrainer
        from ray.train.v2._internal.callbacks.datasets import DatasetsCallback  # noqa: F401

        assert hasattr(TorchTrainer, "_create_default_callbacks")
        assert trainer_without_dataset_manager() is not TorchTrainer

    def ray_function_thread_timeout():
        from ray.tune.trainable.function_trainable import FunctionTrainable

        assert "TUNE_FUNCTION_THREAD_TIMEOUT_S" in inspect.getsource(FunctionTrainable.reset_config)

    def ray_cluster_config():
        from ray._private.state import state

        assert callable(state.get_cluster_config)

    def ray_autoscaling_coordinator():
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (  # noqa: F401
            get_or_create_autoscaling_coordinator,
        )

    def ray_job_client_request():
        from ray.job_submission import JobSubmissionClient

        assert callable(JobSubmissionClient._do_request)

    def ray_train_report_logger():
        from ray.train.v2._internal.execution import context

        assert isinstance(context.logger, logging.Logger) and context.logger.name == context.__file__
        assert "Reporting training result" in open(context.__file__).read()

    def ray_raylet_config():
        from ray._raylet import Config as RayConfig

        assert callable(RayConfig.initialize)

    def ray_train_user_exception():
        from ray.train.v2._internal.exceptions import UserExceptionWithTraceback

        inner = OSError(28, "No space left on device")
        assert train_user_exception(UserExceptionWithTraceback(inner, "traceback")) is inner

    return {name: fn for name, fn in locals().items() if callable(fn)}
