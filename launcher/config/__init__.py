"""The config: schema (typed dataclasses), validation, YAML + command-line parsing, secrets.

    from launcher.config import Config, parse, validate
"""

from launcher.config.schema import (  # noqa: F401
    PRECISIONS, SECTIONS, CheckpointConfig, Config, DataConfig, LoggingConfig, ModelConfig, OptimConfig, PeftConfig, RayConfig,
    SchedulerConfig, TrainConfig, TuneConfig, default_mode, require,
)
from launcher.config.values import all_keys, from_dict, to_dict  # noqa: F401
from launcher.config.validate import validate  # noqa: F401
from launcher.errors import ConfigError  # noqa: F401
