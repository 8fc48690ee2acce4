"""The search space: `tune.search_space` syntax, its checks before Ray starts, and a trial's config.

    tune:
      search_space:
        optim.lr: {loguniform: [1.0e-5, 2.0e-4]}
        scheduler.name: {choice: [linear, cosine]}

Every edge value of every dimension (and a few joint samples) is checked with the config's own
validation, so a range that would give a broken trial fails in about a second.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import random
from dataclasses import dataclass
from typing import Optional

from launcher.config import Config, all_keys, default_mode, require, validate
from launcher.config.values import BadValue, set_value
from launcher.console import value as fmt_value
from launcher.errors import ConfigError

#: searched when `tune.search_space` is empty: the three knobs that matter most when fine-tuning
DEFAULT_SPACE = {
    "optim.lr": {"loguniform": [1.0e-5, 2.0e-4]},
    "scheduler.warmup_ratio": {"uniform": [0.0, 0.2]},
    "scheduler.name": {"choice": ["linear", "cosine", "cosine_w_restarts", "polynomial"]},
}

#: sampler → (argument shape, example) for messages
SAMPLERS = {
    "loguniform": ("[low, high], 0 < low < high", "{loguniform: [1.0e-5, 2.0e-4]}"),
    "uniform": ("[low, high], low < high", "{uniform: [0.0, 0.2]}"),
    "quniform": ("[low, high, step]", "{quniform: [0.0, 0.3, 0.05]}"),
    "randint": ("[low, high) integers", "{randint: [1, 5]}"),
    "choice": ("[value, ...]", "{choice: [linear, cosine]}"),
    "grid": ("[value, ...], every value is tried", "{grid: [16, 32]}"),
}

# Keys fixed for the whole search: the data is tokenised once for all trials, the model is loaded
# from the same folder, and the tune section and storage describe the search itself.
_FIXED = {
    "task": "the task is fixed for a search",
    "task_options": "task options can change the tokenised data, which is prepared once for all trials",
    "output_dir": "the search writes one output_dir",
    "model": "every trial fine-tunes the same model (tokenised once)",
    "data": "the data is tokenised once for all trials",
    "tune": "the search settings are not searchable",
    "ray.address": "all trials run on one cluster",
    "ray.storage_path": "all trials share one storage",
    "ray.num_cpus": "all trials run on one cluster",
    "checkpoint.monitor": "trials are ranked by tune.metric",
    "checkpoint.mode": "trials are ranked by tune.mode",
}
_ALLOWED_DATA_KEYS = {"data.num_workers"}
#: keys that change which tensors a LoRA model has (a PBT copy between trials would not load)
_ADAPTER_SHAPE_KEYS = {"peft.method", "peft.r", "peft.target_modules", "peft.modules_to_save"}  # DataLoader processes: not part of the tokenised data

STATUSES = ("finished", "stopped early", "failed", "not started")


# ====================================================================== search space


@dataclass
class Dimension:
    """One searched config key and how Tune samples it."""

    key: str
    kind: str
    args: list

    def domain(self, grid: bool = False):
        """The Ray Tune sampler (grid=True turns a choice into a grid)."""
        from ray import tune

        a = self.args
        if self.kind == "grid" or (grid and self.kind == "choice"):
            return tune.grid_search(list(a))
        return {"loguniform": lambda: tune.loguniform(a[0], a[1]), "uniform": lambda: tune.uniform(a[0], a[1]),
                "quniform": lambda: tune.quniform(a[0], a[1], a[2]), "randint": lambda: tune.randint(a[0], a[1]),
                "choice": lambda: tune.choice(list(a))}[self.kind]()

    def mutation(self):
        """What PBT may perturb the key to: a list for categories, the sampler for ranges."""
        return list(self.args) if self.kind in ("choice", "grid") else self.domain()

    def bounds(self) -> Optional[tuple]:
        if self.kind in ("loguniform", "uniform", "quniform"):
            return (self.args[0], self.args[1])
        if self.kind == "randint":
            return (self.args[0], self.args[1] - 1)
        return None

    def edge_values(self) -> list:
        """Values that every sample lies between (or is one of): validated before Ray starts."""
        a = self.args
        if self.kind in ("choice", "grid"):
            return list(a)
        if self.kind == "loguniform":
            return [a[0], math.sqrt(a[0] * a[1]), a[1]]
        if self.kind == "randint":
            return [a[0], a[1] - 1]
        return [a[0], (a[0] + a[1]) / 2, a[1]]

    def sample(self, rng: random.Random):
        a = self.args
        if self.kind in ("choice", "grid"):
            return rng.choice(list(a))
        if self.kind == "loguniform":
            return math.exp(rng.uniform(math.log(a[0]), math.log(a[1])))
        if self.kind == "randint":
            return rng.randrange(a[0], a[1])
        value = rng.uniform(a[0], a[1])
        return round(value / a[2]) * a[2] if self.kind == "quniform" else value

    @property
    def numeric(self) -> bool:
        return all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in self.args)

    @property
    def categorical(self) -> bool:
        """Plotted as categories: choice/grid of strings (or booleans)."""
        return self.kind in ("choice", "grid") and not self.numeric

    @property
    def log_scale(self) -> bool:
        if self.kind == "loguniform":
            return True
        values = [a for a in self.args if isinstance(a, (int, float))] if self.kind in ("choice", "grid") and self.numeric else []
        return bool(values) and min(values) > 0 and max(values) / min(values) >= 100


def searchable_keys() -> list[str]:
    return [k for k in all_keys(Config) if "." in k and _fixed_reason(k) is None]


def _fixed_reason(key: str) -> Optional[str]:
    if key in _ALLOWED_DATA_KEYS:
        return None
    for prefix, reason in _FIXED.items():
        if key == prefix or key.startswith(prefix + "."):
            return reason
    return None


def _first_leaf(section: str) -> str:
    cls = type(getattr(Config(), section))
    return dataclasses.fields(cls)[0].name if dataclasses.is_dataclass(cls) else "key"


def parse_space(cfg: Config) -> list[Dimension]:
    """`tune.search_space` (or the default space) → Dimensions. Raises ConfigError naming the key."""
    space = cfg.tune.search_space or DEFAULT_SPACE
    if not isinstance(space, dict):
        raise ConfigError("tune.search_space", "must be a mapping of config keys to samplers", "e.g. optim.lr: {loguniform: [1.0e-5, 2.0e-4]}")
    known = set(all_keys(Config))
    dims = []
    for key, spec in space.items():
        where = f"tune.search_space.{key}"
        if key not in known:
            close = difflib.get_close_matches(str(key), searchable_keys(), n=1, cutoff=0.5)
            if not close:
                leaf = str(key).rsplit(".", 1)[-1]
                close = [k for k in searchable_keys() if k.rsplit(".", 1)[-1] == leaf][:1]
            raise ConfigError(where, "unknown config key", f"did you mean {close[0]}?" if close else "search keys like optim.lr, train.batch_size")
        reason = _fixed_reason(key)
        if reason:
            raise ConfigError(where, f"cannot be searched: {reason}", "search optimizer, scheduler, train or ray keys")
        if "." not in key:
            raise ConfigError(where, "is a section, not a key", f"search one of its keys, e.g. {key}.{_first_leaf(key)}")
        if not isinstance(spec, dict) or len(spec) != 1:
            raise ConfigError(where, f"expected one sampler, got {spec!r}",
                              "use one of " + ", ".join(f"{k}: {v[0]}" for k, v in SAMPLERS.items()))
        kind, args = next(iter(spec.items()))
        if kind not in SAMPLERS:
            close = difflib.get_close_matches(str(kind), list(SAMPLERS), n=1)
            raise ConfigError(where, f"unknown sampler {kind!r}",
                              f"did you mean {close[0]}?" if close else "choose one of: " + ", ".join(SAMPLERS))
        dims.append(Dimension(key, kind, _check_args(where, kind, args)))
    return dims


def trial_count(cfg: Config, dims: list[Dimension]) -> int:
    """Trials of the search, as Ray Tune's BasicVariantGenerator makes them: num_samples x every grid
    combination (with search_alg grid, choice values are a grid too)."""
    grid = 1
    for d in dims:
        if d.kind == "grid" or (cfg.tune.search_alg == "grid" and d.kind == "choice"):
            grid *= len(d.args)
    return cfg.tune.num_samples * grid


def _check_args(where: str, kind: str, args) -> list:
    shape, example = SAMPLERS[kind]
    fix = f"give {kind}: {shape}, e.g. {example}"
    if not isinstance(args, (list, tuple)) or not args:
        raise ConfigError(where, f"{kind} needs a list, got {args!r}", fix)
    args = list(args)
    if kind in ("choice", "grid"):
        return args
    numeric = all(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in args)
    size = 3 if kind == "quniform" else 2
    if len(args) != size or not numeric:
        raise ConfigError(where, f"{kind} needs {size} numbers, got {args!r}", fix)
    low, high = args[0], args[1]
    if low >= high:
        raise ConfigError(where, f"{kind} needs low < high, got {args!r}", fix)
    if kind == "loguniform" and low <= 0:
        raise ConfigError(where, f"loguniform needs low > 0, got {low}", fix)
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        raise ConfigError(where, f"randint needs integers, got {args!r}", fix)
    if kind == "quniform" and not args[2] > 0:
        raise ConfigError(where, f"quniform needs a step > 0, got {args[2]}", fix)
    return args


def apply_params(cfg: Config, params: dict) -> Config:
    """A copy of `cfg` with dotted keys set, each value checked against its field's type (config.values.coerce)."""
    out = copy.deepcopy(cfg)
    for key, value in params.items():
        where = f"tune.search_space.{key}"
        try:
            set_value(out, key, value)
        except KeyError:
            raise ConfigError(where, "unknown config key") from None
        except BadValue as e:
            raise _bad_sample(where, e) from None
    return out


# How a searched value that does not fit its key is explained: (message, fix) by what the key expects.
_SAMPLE_HINTS = {
    "bool": ("expected true/false", "use choice: [true, false]"),
    "int": ("expected an integer", "use randint, or choice/grid of integers"),
    "float": ("expected a number", "use loguniform/uniform, or choice/grid of numbers"),
    "str": ("expected a string", "quote the values"),
}


def _bad_sample(where: str, e: BadValue) -> ConfigError:
    if e.expected == "choice":
        return ConfigError(where, f"{e.value!r} is not a valid value", "choose among: " + ", ".join(map(str, e.choices)))
    message, fix = _SAMPLE_HINTS[e.expected]
    return ConfigError(where, f"{message}, got {e.value!r}", fix)


def resolve_metric(cfg: Config) -> tuple[str, str]:
    """tune.metric / tune.mode, defaulting to checkpoint.monitor and the task's main metric."""
    from launcher.tasks import TASKS, get_task, is_user_task  # lazy: only when neither metric is set (imports the task)

    metric = cfg.tune.metric or cfg.checkpoint.monitor
    if not metric:
        metric = get_task(cfg.task).default_monitor if cfg.task in TASKS or is_user_task(cfg.task) else "val_loss"
    return metric, cfg.tune.mode or cfg.checkpoint.mode or default_mode(metric)


def validate_search(cfg: Config, dims: list[Dimension], samples: int = 8) -> None:
    """Every edge value of every dimension, and a few joint samples, must give a valid config."""
    t = cfg.tune
    t.check()
    if t.search_alg == "grid":
        ranges = [d.key for d in dims if d.kind not in ("choice", "grid")]
        require(not ranges, "tune.search_alg", f"grid search needs listed values, but {', '.join(ranges)} is a range",
                "give those keys {grid: [...]} or {choice: [...]} values, or use search_alg random")
    if t.search_alg == "optuna":
        grids = [d.key for d in dims if d.kind == "grid"]
        require(not grids, "tune.search_alg", f"optuna does not take grid values ({', '.join(grids)})", "use choice instead of grid")
        try:
            import optuna  # noqa: F401 - lazy: an optional extra, checked only when asked for
        except ImportError:
            raise ConfigError("tune.search_alg", "optuna is not installed", "pip install 'launcher[optuna]', or use search_alg random") from None
    if t.scheduler == "pbt":
        require(not any(d.kind == "grid" for d in dims), "tune.scheduler", "pbt perturbs values, it does not take grid values",
                "use choice instead of grid")
        # PBT loads one trial's checkpoint into another: the adapters must have the same shapes.
        shaped = [d.key for d in dims if d.key in _ADAPTER_SHAPE_KEYS]
        require(not shaped, f"tune.search_space.{shaped[0] if shaped else ''}",
                "pbt copies weights between trials, so it cannot search keys that change the adapters' shapes",
                "search it with asha or fifo, or search peft.alpha/peft.dropout instead")
    for d in dims:
        for value in d.edge_values():
            _validate_sample(cfg, {d.key: value}, f"tune.search_space.{d.key}")
    rng = random.Random(t.seed if t.seed is not None else cfg.train.seed)
    joint = [{d.key: d.edge_values()[0] for d in dims}, {d.key: d.edge_values()[-1] for d in dims}]
    joint += [{d.key: d.sample(rng) for d in dims} for _ in range(samples)]
    for params in joint:
        _validate_sample(cfg, params, "tune.search_space")


def _validate_sample(cfg: Config, params: dict, where: str) -> None:
    trial = apply_params(cfg, params)
    try:
        validate(trial)
    except ConfigError as e:
        shown = ", ".join(f"{k}={fmt_value(v)}" for k, v in params.items())
        text = str(e)
        if e.fix and text.endswith(f" — {e.fix}"):
            text = text[: -len(e.fix) - 3]  # its fix is about the flag; here the range is what to change
        raise ConfigError(where, f"the sample {shown} gives an invalid config: {text}", "narrow the range") from None
