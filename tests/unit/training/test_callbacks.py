"""launcher.training.callbacks: NonFiniteGuard stops on a NaN/inf loss with the step and a fix, or skips the step."""

from __future__ import annotations

import warnings

import pytest
import torch



def _guarded_fit(skip: bool, bad_batches: set, accumulation: int = 2):
    import lightning.pytorch as pl

    from launcher.training.callbacks import NonFiniteGuard

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(1, 1)

        def training_step(self, batch, batch_idx):
            loss = self.lin(batch.float().unsqueeze(-1)).pow(2).mean()
            return loss * float("inf") if batch_idx in bad_batches else loss

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=0.01)

    warnings.filterwarnings("ignore")
    guard = NonFiniteGuard(skip)
    trainer = pl.Trainer(max_epochs=1, accumulate_grad_batches=accumulation, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[guard], accelerator="cpu")
    module = Module()
    trainer.fit(module, torch.utils.data.DataLoader(list(range(16)), batch_size=2))
    return trainer, module, guard


def test_nonfinite_loss_stops_with_the_step_and_a_fix():
    from launcher.errors import NonFiniteLoss

    with pytest.raises(NonFiniteLoss) as e:
        _guarded_fit(skip=False, bad_batches={5})
    message = str(e.value)
    assert "loss is inf at step 3 (epoch 1, batch 6)" in message
    assert "lower optim.lr" in message and "train.skip_nonfinite_batches" in message
    assert "\n" not in message


def test_nonfinite_steps_are_skipped_when_configured(capsys):
    trainer, module, guard = _guarded_fit(skip=True, bad_batches={2, 7})  # in optimizer steps 2 and 4 of 4
    assert trainer.global_step == 4  # the schedule's step count does not change
    assert guard.skipped == 2
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert "optimizer step skipped (2 so far)" in capsys.readouterr().err
