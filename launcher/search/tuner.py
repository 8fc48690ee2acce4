"""The Tuner of `launcher tune`: scheduler, search algorithm, and the trial driver wrapped for Tune."""

from __future__ import annotations

import functools
import math
from typing import Optional

from ray import tune

from launcher.config import Config, to_dict
from launcher.data.sampling import optimizer_steps_per_epoch
from launcher.distributed.trainer import worker_resources
from launcher.search.callbacks import CheckpointHygiene, LiveTable
from launcher.search.trial import ship, trial_main
from launcher.search.trials import Settings


def trial_name(trial) -> str:
    """Trial folders and table rows are named by trial id (Tune's default names hold every value)."""
    return trial.trial_id


def clip_to_bounds(config: dict, bounds: dict) -> dict:
    """PBT multiplies values by 0.8/1.2: keep them inside the searched range (and integers integral)."""
    for key, (low, high) in bounds.items():
        if key in config and isinstance(config[key], (int, float)):
            value = min(max(config[key], low), high)
            config[key] = int(round(value)) if isinstance(low, int) and isinstance(high, int) else value
    return config


def build_scheduler(cfg: Config, dims: list, settings: Settings, prepared):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    t = cfg.tune
    if t.scheduler == "asha":
        # Rungs are in epochs (the reports carry them): a restored trial keeps its place.
        return ASHAScheduler(time_attr="epoch", max_t=max_epochs(cfg, prepared), grace_period=t.grace_period,
                             reduction_factor=t.reduction_factor, stop_last_trials=False)
    if t.scheduler == "pbt":
        return PopulationBasedTraining(time_attr="epoch", perturbation_interval=t.perturbation_interval,
                                       hyperparam_mutations={d.key: d.mutation() for d in dims},
                                       quantile_fraction=t.quantile_fraction, resample_probability=0.25,
                                       custom_explore_fn=functools.partial(clip_to_bounds, bounds=settings.bounds))
    return FIFOScheduler()


def max_epochs(cfg: Config, prepared) -> float:
    if cfg.train.max_steps < 0:
        return cfg.train.max_epochs

    per_epoch = optimizer_steps_per_epoch(prepared.sizes["train"], cfg.ray.num_workers, cfg.train.batch_size,
                                          cfg.train.accumulate_grad_batches)
    return max(1, math.ceil(cfg.train.max_steps / max(per_epoch, 1)))


def build_search_alg(cfg: Config, concurrency: Optional[int]):
    seed = cfg.tune.seed if cfg.tune.seed is not None else cfg.train.seed
    if cfg.tune.search_alg == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        search = OptunaSearch(seed=seed)
        return ConcurrencyLimiter(search, max_concurrent=concurrency) if concurrency else search
    from ray.tune.search import BasicVariantGenerator

    # The generator limits concurrency itself (TuneConfig.max_concurrent_trials only wraps Searchers).
    return BasicVariantGenerator(random_state=seed, max_concurrent=concurrency or 0)


def run_search(cfg: Config, dims: list, prepared, settings: Settings, storage: str, name: str, resume: bool,
               concurrency: Optional[int], callbacks: list, verbose: bool, trial_callbacks: Optional[list] = None):
    """Tuner.fit() (or Tuner.restore(...).fit()) → ResultGrid."""
    payload = ship(prepared, settings.metric, trial_callbacks or [])
    trainable = tune.with_parameters(trial_main, base=to_dict(cfg), payload=payload, settings=settings)
    if settings.in_trial:
        # The trial trains in its own process: it holds what one Train worker would.
        trainable = tune.with_resources(trainable, worker_resources(cfg))
    else:
        # The trial driver only waits on its Train job; the job's workers hold the CPUs. One byte of
        # memory is a request every cluster can grant ({"CPU": 0} alone is rejected).
        trainable = tune.with_resources(trainable, {"memory": 1})
    if resume:
        tuner = tune.Tuner.restore(settings.experiment, trainable=trainable, resume_unfinished=True, resume_errored=False)
        return tuner.fit()
    tuner = tune.Tuner(
        trainable,
        param_space={d.key: d.domain(grid=cfg.tune.search_alg == "grid") for d in dims},
        tune_config=tune.TuneConfig(metric=settings.metric, mode=settings.mode, num_samples=cfg.tune.num_samples,
                                    scheduler=build_scheduler(cfg, dims, settings, prepared), search_alg=build_search_alg(cfg, concurrency),
                                    time_budget_s=cfg.tune.time_budget_s,
                                    trial_name_creator=trial_name, trial_dirname_creator=trial_name,
                                    # In-trial training: one actor runs trial after trial (imports paid once).
                                    reuse_actors=settings.in_trial),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, verbose=0,
            callbacks=[LiveTable(settings, cfg.logging.progress_every_s if verbose else None), CheckpointHygiene(settings)] + callbacks,
            failure_config=tune.FailureConfig(max_failures=0),
            # PBT copies a trial's latest checkpoint into a poorer one, which may start a while later:
            # keep a few so the copy is still there when it does. All go when the search ends.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=3) if settings.tune_checkpoints else None,
        ),
    )
    return tuner.fit()
