"""Resuming mid-epoch trains the same batches in the same order as an uninterrupted run.

Plain Lightning (no Ray): a run is cut by an exception right after a checkpoint, then a new Trainer
resumes from that checkpoint, as a restarted Ray Train worker group does. Seconds, not minutes.
"""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from launcher.data.sampling import TrainBatchSampler
from launcher.training.resume import LoaderPosition, ResumableLoader

N, BATCH, ACCUM, EPOCHS = 27, 2, 2, 3  # 14 batches and 7 optimizer steps per epoch


class Recorder(pl.LightningModule):
    def __init__(self, seen: list):
        super().__init__()
        self.lin = torch.nn.Linear(1, 1)
        self.seen = seen

    def training_step(self, batch, batch_idx):
        self.seen.append((self.current_epoch, tuple(batch.tolist())))
        return self.lin(batch.float().unsqueeze(-1)).pow(2).mean()

    def configure_optimizers(self):
        # As every TaskModule does: this makes Lightning build the training iterator before it
        # restores the checkpoint, which is why the position travels as callback state.
        total = self.trainer.estimated_stepping_batches
        optimizer = torch.optim.SGD(self.parameters(), lr=0.01)
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.1, total)}


class Crash(RuntimeError):
    pass


class CheckpointThenCrash(pl.Callback):
    """Saves a checkpoint after optimizer step `at` and dies, like a worker killed right after a report."""

    def __init__(self, at: int, path: str):
        self.at, self.path = at, path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at:  # first batch end after optimizer step `at`
            trainer.save_checkpoint(self.path)
            raise Crash()


def _loader(cls, num_workers: int = 0):
    sampler = TrainBatchSampler([1] * N, BATCH, rank=0, world=1, seed=3, group_by_length=False)
    return cls(list(range(N)), batch_sampler=sampler, num_workers=num_workers)


def _trainer(loader, callbacks=()):
    if isinstance(loader, ResumableLoader):
        callbacks = [*callbacks, LoaderPosition(loader)]
    return pl.Trainer(max_epochs=EPOCHS, accumulate_grad_batches=ACCUM, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks), accelerator="cpu")


def _run(cls, at: int, tmp_path, num_workers: int = 0):
    """(uninterrupted batches, interrupted+resumed batches, final global_step of each)."""
    warnings.filterwarnings("ignore")
    ref: list = []
    loader = _loader(cls, num_workers)
    t = _trainer(loader)
    torch.manual_seed(0)
    ref_module = Recorder(ref)
    t.fit(ref_module, loader)
    path = str(tmp_path / f"cut-{at}.ckpt")
    seen: list = []
    loader = _loader(cls, num_workers)
    torch.manual_seed(0)
    with pytest.raises(Crash):
        _trainer(loader, [CheckpointThenCrash(at, path)]).fit(Recorder(seen), loader)
    loader = _loader(cls, num_workers)
    resumed = _trainer(loader)
    module = Recorder(seen)
    resumed.fit(module, loader, ckpt_path=path)
    if cls is ResumableLoader:
        assert torch.equal(module.lin.weight, ref_module.lin.weight)  # same batches, same updates
    return ref, seen, t.global_step, resumed.global_step


@pytest.mark.parametrize("at", [3, 7, 10, 14])  # mid-epoch 1, end of epoch 1, mid-epoch 2, end of epoch 2
def test_resume_repeats_and_skips_nothing(at, tmp_path):
    ref, seen, steps, resumed_steps = _run(ResumableLoader, at, tmp_path)
    assert resumed_steps == steps == EPOCHS * 7
    assert seen == ref  # same batches, same order, each once


def test_resume_with_dataloader_workers(tmp_path):
    ref, seen, steps, resumed_steps = _run(ResumableLoader, 10, tmp_path, num_workers=2)
    assert resumed_steps == steps and seen == ref


def test_plain_dataloader_would_repeat_batches(tmp_path):
    """Why ResumableLoader exists: Lightning restarts a plain loader's epoch from its first batch."""
    ref, seen, steps, resumed_steps = _run(DataLoader, 3, tmp_path)
    assert resumed_steps == steps  # the step count alone does not reveal it
    assert seen != ref
    epoch0 = [b for e, b in seen if e == 0]
    assert len(epoch0) == len(set(epoch0)) + 6  # the 6 batches before the cut ran twice


def test_epochs_are_shuffled_differently():
    """Lightning reaches TrainBatchSampler.set_epoch (through `.sampler`), so epochs differ."""
    ref: list = []
    warnings.filterwarnings("ignore")
    loader = _loader(ResumableLoader)
    _trainer(loader).fit(Recorder(ref), loader)
    by_epoch = [[b for e, b in ref if e == k] for k in range(EPOCHS)]
    assert by_epoch[0] != by_epoch[1] != by_epoch[2]
    assert all(sorted(i for b in batches for i in b) == list(range(N)) for batches in by_epoch)


# ---------------------------------------------------------------------- checkpoints and validation


class ValRecorder(Recorder):
    def __init__(self, seen: list, vals: list):
        super().__init__(seen)
        self.vals = vals

    def validation_step(self, batch, batch_idx):
        return None

    def on_validation_epoch_end(self):
        self.vals.append((self.current_epoch, self.trainer.fit_loop.epoch_loop.batch_progress.current.processed))


class CrashAfterValidation(pl.Callback):
    """Checkpoints after the validation of epoch `epoch` (as ReportCallback does) and dies."""

    def __init__(self, epoch: int, path: str):
        self.epoch, self.path = epoch, path

    def on_validation_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            trainer.save_checkpoint(self.path)
            raise Crash()


def _val_trainer(loader, callbacks=(), val_check_interval=1.0):
    return pl.Trainer(max_epochs=EPOCHS, accumulate_grad_batches=ACCUM, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      val_check_interval=val_check_interval, accelerator="cpu",
                      callbacks=[*callbacks, LoaderPosition(loader)])


def test_resume_after_validation_checkpoint_validates_each_epoch_once(tmp_path):
    warnings.filterwarnings("ignore")
    val = DataLoader(list(range(4)), batch_size=2)
    ref, ref_vals = [], []
    loader = _loader(ResumableLoader)
    _val_trainer(loader).fit(ValRecorder(ref, ref_vals), loader, val)
    seen, vals = [], []
    path = str(tmp_path / "after-val.ckpt")
    loader = _loader(ResumableLoader)
    with pytest.raises(Crash):
        _val_trainer(loader, [CrashAfterValidation(0, path)]).fit(ValRecorder(seen, vals), loader, val)
    loader = _loader(ResumableLoader)
    _val_trainer(loader).fit(ValRecorder(seen, vals), loader, val, ckpt_path=path)
    assert seen == ref
    assert vals == ref_vals == [(0, 14), (1, 14), (2, 14)]


def test_validation_follows_marks_exactly_the_batches_before_validation():
    """ReportCallback takes no step checkpoint on such batches (resuming from one would skip that validation)."""
    from launcher.training.callbacks import validation_follows

    marked, validated_after = [], []

    class Probe(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            marked.append((trainer.current_epoch, batch_idx, validation_follows(trainer, batch_idx)))

        def on_validation_start(self, trainer, pl_module):
            validated_after.append((trainer.current_epoch, marked[-1][1]))

    warnings.filterwarnings("ignore")
    loader = _loader(ResumableLoader)
    _val_trainer(loader, [Probe()], val_check_interval=0.5).fit(ValRecorder([], []), loader, DataLoader(list(range(4)), batch_size=2))
    assert [(e, b) for e, b, follows in marked if follows] == validated_after
    assert validated_after == [(e, b) for e in range(EPOCHS) for b in (6, 13)]
