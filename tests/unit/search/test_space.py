"""launcher.search.space: search-space checks, typed samples, the metric to rank by."""

from __future__ import annotations

import pytest

from launcher.search import space as space_lib
from launcher.config import ConfigError
from tests.helpers.search import space_config


def test_default_space_is_lr_warmup_and_schedule():
    dims = space_lib.parse_space(space_config())
    assert [(d.key, d.kind) for d in dims] == [("optim.lr", "loguniform"), ("scheduler.warmup_ratio", "uniform"),
                                               ("scheduler.name", "choice")]
    space_lib.validate_search(space_config(), dims)  # the default space itself is valid


@pytest.mark.parametrize("space, message", [
    ({"optim.lrr": {"uniform": [1e-5, 1e-4]}}, "tune.search_space.optim.lrr: unknown config key — did you mean optim.lr?"),
    ({"batch_size": {"choice": [8, 16]}}, "tune.search_space.batch_size: unknown config key — did you mean train.batch_size?"),
    ({"optim": {"choice": [1]}}, "tune.search_space.optim: is a section, not a key — search one of its keys, e.g. optim.name"),
    ({"data.max_length": {"choice": [64, 128]}}, "cannot be searched: the data is tokenised once for all trials"),
    ({"model.name_or_path": {"choice": ["a", "b"]}}, "cannot be searched: every trial fine-tunes the same model"),
    ({"optim.lr": {"logunifrm": [1e-5, 1e-4]}}, "unknown sampler 'logunifrm' — did you mean loguniform?"),
    ({"optim.lr": {"loguniform": [0, 1e-4]}}, "loguniform needs low > 0, got 0"),
    ({"optim.lr": {"uniform": [1e-4, 1e-5]}}, "uniform needs low < high"),
    ({"optim.lr": [1e-5, 1e-4]}, "expected one sampler, got [1e-05, 0.0001]"),
    ({"train.batch_size": {"randint": [8.5, 32]}}, "randint needs integers"),
    ({"scheduler.name": {"choice": ["linear", "cosin"]}}, "'cosin' is not a valid value — choose among: linear, cosine"),
    ({"train.batch_size": {"choice": [8, 16.5]}}, "train.batch_size: expected an integer, got 16.5"),
    ({"train.batch_size": {"randint": [0, 32]}}, "the sample train.batch_size=0 gives an invalid config: train.batch_size: must be >= 1"),
    ({"scheduler.warmup_ratio": {"uniform": [0.0, 1.5]}}, "scheduler.warmup_ratio: must be in [0, 1), got 1.5 — narrow the range"),
])
def test_search_space_errors_name_the_key_and_the_fix(space, message):
    cfg = space_config(**{})
    cfg.tune.search_space = space
    with pytest.raises(ConfigError) as e:
        space_lib.validate_search(cfg, space_lib.parse_space(cfg))
    assert message in str(e.value)


def test_joint_samples_are_validated_too():
    # Each value is fine alone; together polynomial's lr_end (1e-4) is not below every sampled lr.
    cfg = space_config(**{"optim.lr": {"loguniform": [1e-5, 1e-3]}, "scheduler.name": {"choice": ["polynomial"]}})
    cfg.scheduler.lr_end = 1e-4
    with pytest.raises(ConfigError, match=r"scheduler.lr_end: must be >= 0 and below optim.lr"):
        space_lib.validate_search(cfg, space_lib.parse_space(cfg))


def test_search_settings_are_checked():
    cfg = space_config(**{"optim.lr": {"loguniform": [1e-5, 1e-4]}})
    cfg.tune.search_alg = "grid"
    with pytest.raises(ConfigError, match="grid search needs listed values, but optim.lr is a range"):
        space_lib.validate_search(cfg, space_lib.parse_space(cfg))
    cfg.tune.search_space = {"optim.lr": {"grid": [1e-5, 1e-4]}, "scheduler.name": {"choice": ["linear", "cosine"]}}
    space_lib.validate_search(cfg, space_lib.parse_space(cfg))  # listed values (numbers or not) make a grid
    cfg.tune.search_space = {"optim.lr": {"loguniform": [1e-5, 1e-4]}}
    cfg.tune.search_alg, cfg.tune.scheduler, cfg.tune.num_samples = "random", "pbt", 1
    with pytest.raises(ConfigError, match="pbt needs at least 2 trials"):
        space_lib.validate_search(cfg, space_lib.parse_space(cfg))
    cfg.tune.num_samples, cfg.tune.quantile_fraction = 4, 0.7
    with pytest.raises(ConfigError, match=r"tune.quantile_fraction: must be in \(0, 0.5\]"):
        space_lib.validate_search(cfg, space_lib.parse_space(cfg))


def test_optuna_missing_names_the_extra():
    try:
        import optuna  # noqa: F401
    except ImportError:
        cfg = space_config()
        cfg.tune.search_alg = "optuna"
        with pytest.raises(ConfigError, match=r"pip install 'launcher\[optuna\]'"):
            space_lib.validate_search(cfg, space_lib.parse_space(cfg))
    else:
        pytest.skip("optuna is installed")


def test_apply_params_sets_typed_values_on_a_copy():
    cfg = space_config()
    out = space_lib.apply_params(cfg, {"optim.lr": 3e-5, "train.batch_size": 32.0, "scheduler.name": "cosine",
                                  "train.gradient_clip_val": None})
    assert (out.optim.lr, out.train.batch_size, out.scheduler.name, out.train.gradient_clip_val) == (3e-5, 32, "cosine", None)
    assert isinstance(out.train.batch_size, int) and cfg.optim.lr == 5e-5  # the base config is untouched


def test_metric_defaults_to_the_tasks_monitor():
    cfg = space_config()
    assert space_lib.resolve_metric(cfg) == ("val_accuracy", "max")
    cfg.checkpoint.monitor = "val_loss"
    assert space_lib.resolve_metric(cfg) == ("val_loss", "min")
    cfg.tune.metric, cfg.tune.mode = "val_f1", "max"
    assert space_lib.resolve_metric(cfg) == ("val_f1", "max")
