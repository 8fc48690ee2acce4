"""launcher.search.trial: a failed trial's error line names the cause; which trials train in their own process."""

from __future__ import annotations



def test_error_line_finds_the_cause():
    from launcher.errors import NonFiniteLoss
    from launcher.search.trial import error_line

    assert error_line(NonFiniteLoss("loss is nan at step 3 (epoch 1, batch 4): lower optim.lr")).startswith(
        "NonFiniteLoss: loss is nan at step 3")
    wrapped = RuntimeError("Training failed.\nTraceback (most recent call last):\n  File x\nValueError: bad shape (3, 4)")
    assert error_line(wrapped) == "ValueError: bad shape (3, 4)"


def test_one_worker_trials_train_in_the_trial_process():
    from launcher.config import Config
    from launcher.search.trial import runs_in_trial

    cfg = Config()
    cfg.ray.num_workers = 1
    assert runs_in_trial(cfg, ["optim.lr", "train.batch_size"])
    assert not runs_in_trial(cfg, ["optim.lr", "ray.cpus_per_worker"])  # trials would ask for different resources
    cfg.ray.strategy = "fsdp2"
    assert not runs_in_trial(cfg, ["optim.lr"])  # Ray's environment plugin needs a Train worker
    cfg.ray.strategy, cfg.ray.num_workers = "ddp", 2
    assert not runs_in_trial(cfg, ["optim.lr"])  # a process group: a Train run per trial
