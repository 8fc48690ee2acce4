"""Compile counts and replica agreement of XLA workers, logged per epoch (imported in workers only)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from launcher.console import say
from launcher.distributed.xla.strategy import torch_distributed_ready


def compile_stats() -> dict[str, float]:
    """Graphs compiled so far in this process and the seconds spent compiling them."""
    import torch_xla.debug.metrics as met

    data = met.metric_data("CompileTime")
    if not data:
        return {"compilations": 0, "compile_s": 0.0}
    return {"compilations": int(data[0]), "compile_s": float(data[1]) / 1e9}


def replica_spread(module) -> float:
    """Max - min over Ray workers of the sum of all parameters: 0.0 while the replicas are identical."""
    total = sum(p.detach().float().sum() for p in module.parameters())
    mine = torch.tensor([float(total)], dtype=torch.float64)
    world = torch.distributed.get_world_size()
    sums = [torch.zeros_like(mine) for _ in range(world)]
    torch.distributed.all_gather(sums, mine)
    values = torch.cat(sums)
    return float(values.max() - values.min())


class XLAStats(pl.Callback):
    """At the end of every epoch (after its validation): logs `xla_compilations` / `xla_compile_s`
    and prints them (rank 0); with several workers also logs `xla_replica_spread` (0.0 while the
    replicas hold the same weights).

    A compile count that keeps growing after the first epoch or two means shapes vary per step.
    """

    def __init__(self):
        self.at_epoch_start = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.at_epoch_start = compile_stats()["compilations"]

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.world_size > 1 and torch_distributed_ready():
            pl_module.log("xla_replica_spread", replica_spread(pl_module), on_step=False, on_epoch=True, batch_size=1)
        stats = compile_stats()
        pl_module.log("xla_compilations", float(stats["compilations"]), on_step=False, on_epoch=True, batch_size=1)
        pl_module.log("xla_compile_s", stats["compile_s"], on_step=False, on_epoch=True, batch_size=1)
        if trainer.global_rank == 0:
            new = stats["compilations"] - self.at_epoch_start
            say(f"[launcher] XLA after epoch {trainer.current_epoch + 1}: {stats['compilations']} graphs compiled "
                f"({new} this epoch), {stats['compile_s']:.1f} s compiling")


def worker_callbacks() -> list:
    """Callbacks every XLA worker adds: compile count and replica agreement, logged per validation."""
    return [XLAStats()]
