"""`launcher train`: what reaches the user when a run fails."""

from __future__ import annotations



def test_nonfinite_error_reaches_the_user_as_one_line(monkeypatch, capsys):
    """What the driver raises after train_loop ended the run on NonFiniteLoss (the Ray run itself,
    with no restarts, is tested in test_faults.py)."""
    from launcher.__main__ import main
    from launcher.commands import train as train_cmd
    from launcher.errors import NonFiniteLoss

    def diverged(cfg, overwrite=False, resume=False):
        raise NonFiniteLoss("loss is nan at step 7 (epoch 1, batch 14): lower optim.lr (the lr was 0.5), or set "
                            "train.skip_nonfinite_batches true to skip such steps")

    monkeypatch.setattr(train_cmd, "run", diverged)
    assert main(["train", "--model.name_or_path", "m", "--data.train_file", "x.csv"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("launcher train: failed: NonFiniteLoss: loss is nan at step 7")


def test_full_storage_reaches_the_user_as_one_line(monkeypatch, capsys):
    """A checkpoint upload that the run storage refused, as Ray Train hands it to the driver (one
    WorkerGroupError holding each rank's wrapped OSError): one line with the path, the cause and --resume."""
    import errno

    from ray.train import WorkerGroupError
    from ray.train.v2._internal.exceptions import UserExceptionWithTraceback

    from launcher.__main__ import main
    from launcher.commands import train as train_cmd
    from launcher.storage import storage_errors

    refused = OSError(errno.ENOSPC, "No space left on device", "/mnt/small/run/ray/train/checkpoint_000002/checkpoint.ckpt")

    def full(cfg, overwrite=False, resume=False):
        with storage_errors("/mnt/small/run/ray"):
            raise WorkerGroupError("rank 0 failed", {0: UserExceptionWithTraceback(refused, "Traceback ...")})

    monkeypatch.setattr(train_cmd, "run", full)
    assert main(["train", "--model.name_or_path", "m", "--data.train_file", "x.csv"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["launcher train: error: cannot write /mnt/small/run/ray: no space left on the device (ENOSPC writing "
                     "/mnt/small/run/ray/train/checkpoint_000002/checkpoint.ckpt) — free space (or make it writable), "
                     "then rerun the same command with --resume to continue from the last complete checkpoint"]
