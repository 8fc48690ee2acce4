"""A Config for a tiny, fast run."""

from __future__ import annotations


def base_config(model: str, files: dict, output_dir: str, task: str = "sequence-classification", **sections):
    """A Config for a tiny, fast run: 2 workers x 0.5 CPU, small batches, no TensorBoard."""
    from launcher.config import Config

    cfg = Config(task=task, output_dir=output_dir)
    cfg.model.name_or_path = model
    cfg.data.train_file = files["train"]
    cfg.data.validation_file = files.get("validation")
    cfg.data.test_file = files.get("test")
    cfg.data.max_length = 32
    cfg.optim.lr = 5e-3
    cfg.train.max_epochs = 2
    cfg.train.batch_size = 4
    cfg.train.accumulate_grad_batches = 2
    cfg.ray.num_workers = 2
    cfg.ray.cpus_per_worker = 0.5
    cfg.ray.max_failures = 0
    cfg.logging.tensorboard = False
    cfg.logging.progress_every_s = 30
    for section, values in sections.items():
        target = getattr(cfg, section)
        if isinstance(values, dict) and not isinstance(target, dict):
            for k, v in values.items():
                setattr(target, k, v)
        else:
            setattr(cfg, section, values)
    return cfg
