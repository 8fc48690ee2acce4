"""Lightning callbacks that run inside Ray workers: report to Ray, print progress, track the best epoch."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from typing import Optional

import lightning.pytorch as pl
import torch

from launcher import compat
from launcher.console import duration, say
from launcher.errors import NonFiniteLoss
from launcher.training.scoring import CHECKPOINT_NAME, CHECKPOINT_SCORE, at_least_as_good, checkpoint_score

def scalar_metrics(trainer: pl.Trainer) -> dict[str, float]:
    out = {}
    for k, v in trainer.callback_metrics.items():
        if k.endswith("_step"):
            continue
        try:
            out[k.removesuffix("_epoch")] = float(v)
        except (TypeError, ValueError):
            pass
    return out


class ReportCallback(pl.Callback):
    """After each validation (and every N steps if asked): checkpoint + metrics to the session
    (Ray Train or Tune, launcher.training.session).

    Every rank reports (Ray requires it); only rank 0 attaches the checkpoint, since all DDP ranks
    hold the same weights. Each rank also keeps its own copy of the best weights on local disk so
    the test split can be scored with the best epoch on any node.
    """

    def __init__(self, monitor: str, mode: str, every_n_steps: Optional[int], session, run_log=None):
        self.monitor, self.mode = monitor, mode
        self.every_n_steps = every_n_steps
        self.session = session
        self.run_log = run_log
        self.best: Optional[float] = None
        self.best_epoch: Optional[float] = None
        self.tmp = tempfile.mkdtemp(prefix="launcher-ckpt-")
        self.best_weights = os.path.join(self.tmp, "best_weights.pt")
        self._last_step_reported = -1
        #: the step at which train.max_steps ended training mid-epoch (validated there), or None
        self.stopped_at: Optional[int] = None
        # Every validation report so far; checkpoints carry it, so a run resumed by a new driver
        # (`--resume`) still has the epochs reported before the old driver was lost.
        self.history: list[dict] = []

    # Lightning persists this in checkpoints, so a restarted worker group knows the best so far
    # (and does not report the step it resumed at a second time).
    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "last_step_reported": self._last_step_reported,
                "history": self.history, "stopped_at": self.stopped_at}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")
        self._last_step_reported = state.get("last_step_reported", -1)
        self.history = list(state.get("history", []))
        self.stopped_at = state.get("stopped_at")

    def on_train_start(self, trainer, pl_module) -> None:
        # After a restore: the reports before the checkpoint, for a run log that may not have seen
        # them (the run's driver restarted); the driver keeps one report per epoch.
        if trainer.global_rank == 0 and self.run_log is not None:
            for item in self.history:
                self.run_log.record("report", dict(item))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = self.every_n_steps
        step = trainer.global_step
        if stops_mid_epoch(trainer, batch_idx):
            # Lightning validates only at epoch ends (and every val_check_interval): a run that
            # train.max_steps ends mid-epoch would have no validation, so no best checkpoint and no
            # best/. A stop request makes Lightning validate after this batch (as for early stopping);
            # that validation's report is the checkpoint, so no step report here.
            trainer.should_stop = True
            self.stopped_at = step
            return
        if n and step > 0 and step % n == 0 and step != self._last_step_reported and not validation_follows(trainer, batch_idx):
            self._report(trainer, pl_module, kind="step")

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self._report(trainer, pl_module, kind="val")

    def _epoch(self, trainer) -> float:
        # Completed epochs, fractional when validating mid-epoch.
        total = trainer.num_training_batches
        # `processed`, not `completed`: in on_train_batch_end the current batch is not yet completed.
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if not total or total == float("inf") or done >= total:
            return float(trainer.current_epoch + 1)
        return round(trainer.current_epoch + done / total, 4)

    def _report(self, trainer, pl_module, kind: str) -> None:
        self._last_step_reported = trainer.global_step
        metrics = scalar_metrics(trainer)
        metrics.update(epoch=self._epoch(trainer), step=trainer.global_step, kind=kind)
        value = metrics.get(self.monitor)
        if kind == "val" and value is not None and math.isfinite(value):
            if at_least_as_good(value, self.best, self.mode):  # ties: the later epoch (training.scoring)
                self.best, self.best_epoch = value, metrics["epoch"]
                torch.save({k: v.detach().cpu() for k, v in pl_module.state_dict().items()}, self.best_weights)
        if kind == "val" and self.stopped_at == trainer.global_step:
            metrics["stopped_by"] = "train.max_steps"  # results.json: final_validation
        if kind == "step":
            # Step checkpoints are for resuming, never for best selection: NaN ranks them last.
            metrics[self.monitor] = float("nan")
        metrics.update(best=self.best if self.best is not None else float("nan"), best_epoch=self.best_epoch or 0.0)
        metrics[CHECKPOINT_SCORE] = checkpoint_score(metrics.get(self.monitor), self.mode)
        if trainer.global_rank == 0:
            # Logs reach disk with every checkpoint, so a restart from it loses no logged history.
            if kind == "step":
                # Lightning logs a step's metrics only after its on_train_batch_end hooks: log this
                # step's row now, or a run resumed from this checkpoint would lack it. Lightning then
                # logs the same row again; `resume.dedupe_csv` keeps one (TensorBoard shows the last).
                compat.log_train_step_row(trainer)
            for logger in trainer.loggers:
                logger.save()
        if kind == "val":
            self.history.append(dict(metrics))
        ckpt_dir = os.path.join(self.tmp, f"report-{trainer.global_step}-{kind}")
        os.makedirs(ckpt_dir, exist_ok=True)
        trainer.save_checkpoint(os.path.join(ckpt_dir, CHECKPOINT_NAME), weights_only=False)
        rank0 = trainer.global_rank == 0
        if rank0 and self.run_log is not None:
            self.run_log.record("report", dict(metrics))
        self.session.report(metrics, ckpt_dir if rank0 else None)
        trainer.strategy.barrier()
        shutil.rmtree(ckpt_dir, ignore_errors=True)

    def load_best(self, pl_module) -> bool:
        if os.path.exists(self.best_weights):
            pl_module.load_state_dict(torch.load(self.best_weights, map_location="cpu", weights_only=True))
            return True
        if self.best is None:
            return False
        # A restarted worker group knows the best value (restored state) but not its weights, which
        # lived on the old workers' disks: read them from the checkpoint Ray kept for that epoch.
        for m, checkpoint in self.session.reported_checkpoints():
            if m.get("kind") == "val" and m.get("epoch") == self.best_epoch and m.get(self.monitor) == self.best:
                with checkpoint.as_directory() as d:
                    state = torch.load(os.path.join(d, CHECKPOINT_NAME), map_location="cpu", weights_only=False)
                pl_module.load_state_dict(state["state_dict"])
                return True
        return False

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            shutil.rmtree(self.tmp, ignore_errors=True)


def validates(trainer) -> bool:
    """Whether this run validates at all (a validation loader with batches, a validation_step)."""
    from lightning.pytorch.utilities.model_helpers import is_overridden

    return trainer.limit_val_batches != 0 and is_overridden("validation_step", trainer.lightning_module)


def validation_follows(trainer, batch_idx: int) -> bool:
    """Whether Lightning validates right after this training batch (epoch end or val_check_interval).

    A checkpoint taken before that validation must not exist: resuming from it, Lightning counts the
    validation of this batch as done and skips it. The checkpoint after validation covers the step.
    """
    if not validates(trainer):
        return False
    if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
        return True
    every = trainer.val_check_batch
    return bool(every) and every != float("inf") and (batch_idx + 1) % int(every) == 0


def stops_mid_epoch(trainer, batch_idx: int) -> bool:
    """Whether train.max_steps ends training at this batch, before the validation an epoch end or
    val_check_interval would bring."""
    return (trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps and validates(trainer)
            and not validation_follows(trainer, batch_idx))


class NonFiniteGuard(pl.Callback):
    """Stops the run on a NaN/inf loss, or skips optimizer steps whose gradients are not finite.

    Both decisions are taken by all ranks together (one tiny all-reduce), so every rank stops or
    skips at the same step: a rank that stopped alone would leave the others waiting in DDP.
    """

    def __init__(self, skip: bool = False):
        self.skip = skip
        self.skipped = 0

    def state_dict(self) -> dict:
        return {"skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.skipped = state.get("skipped", 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.skip:
            return  # on_before_optimizer_step drops such steps
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        local_bad = loss is not None and not bool(torch.isfinite(loss.detach()).all())
        if trainer.strategy.reduce_boolean_decision(local_bad, all=False):
            value = f"{float(loss.detach())}" if local_bad else "not finite (on another worker)"
            lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
            raise NonFiniteLoss(
                f"loss is {value} at step {trainer.global_step} (epoch {trainer.current_epoch + 1}, batch {batch_idx + 1}): "
                f"lower optim.lr (the lr was {lr:.3g}), or set train.skip_nonfinite_batches true to skip such steps")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not self.skip:
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        local_bad = bool(grads) and not bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))
        if trainer.strategy.reduce_boolean_decision(local_bad, all=False):
            # Parameters without gradients are left alone by the optimizer: this step changes nothing.
            optimizer.zero_grad(set_to_none=True)
            self.skipped += 1
            if trainer.global_rank == 0:
                say(f"[launcher] step {trainer.global_step + 1}: loss or gradients not finite, "
                    f"optimizer step skipped ({self.skipped} so far)")


class ProgressLog(pl.Callback):
    """One progress line from rank 0 every few seconds: epoch, step/total, loss, lr, speed, ETA.

    Lightning's bar redraws in place, which Ray's log forwarding turns into a flood of lines; these
    lines read well in `ray job logs` and in a terminal alike.
    """

    def __init__(self, every_s: float = 10.0):
        self.every_s = every_s
        self.start = self.last = 0.0
        self.first_step = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = self.last = time.time()
        self.first_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_rank != 0:
            return
        now = time.time()
        if now - self.last < self.every_s:
            return
        self.last = now
        total = int(trainer.estimated_stepping_batches)
        step = trainer.global_step
        done = max(step - self.first_step, 1)
        rate = done / (now - self.start)
        eta = (total - step) / rate if rate > 0 else float("inf")
        m = trainer.callback_metrics
        # train_loss_step: logged on step and epoch (launcher's tasks); train_loss: on step only (a user's module)
        key = "train_loss_step" if "train_loss_step" in m else "train_loss"
        loss = float(m[key]) if key in m else float("nan")
        lr = float(m["lr"]) if "lr" in m else float("nan")
        say(f"[launcher] epoch {trainer.current_epoch + 1}/{trainer.max_epochs} step {step}/{total} "
            f"({100 * step / max(total, 1):.0f}%) loss {loss:.4f} lr {lr:.3g} {rate:.2f} steps/s ETA {duration(eta)}")

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.global_rank != 0 or trainer.sanity_checking:
            return
        vals = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        text = " ".join(f"{k} {v:.4f}" for k, v in sorted(vals.items()))
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        where = (f"at step {trainer.global_step} (train.max_steps, mid-epoch {trainer.current_epoch + 1})"
                 if trainer.should_stop and done < trainer.num_training_batches else f"after epoch {trainer.current_epoch + 1}")
        say(f"[launcher] validation {where}: {text}")
