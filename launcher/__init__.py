"""launcher: fine-tune Hugging Face models with Lightning on Ray Train, search with Ray Tune.

The Python API (each name is imported on first use, so `import launcher` stays cheap):

    import launcher
    cfg, _ = launcher.parse_config(["examples/configs/reviews.yaml", "--train.max_epochs", "1"])
    results = launcher.train(cfg)            # what `launcher train` does; returns results.json's dict
    search = launcher.tune(cfg)              # what `launcher tune` does; returns a TuneResult

Users' own Lightning task modules: `launcher.lightning_base` (BaseTransformer, generic_train).
"""

__version__ = "0.1.0"

_API = {
    "Config": "launcher.config.schema:Config",
    "ConfigError": "launcher.errors:ConfigError",
    "parse_config": "launcher.config.parsing:parse",
    "train": "launcher.commands.train:run",
    "tune": "launcher.commands.tune:run",
}


def __getattr__(name: str):
    if name in _API:
        import importlib

        module, attr = _API[name].split(":")
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'launcher' has no attribute {name!r}")
