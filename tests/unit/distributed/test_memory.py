"""launcher.distributed.memory: bytes per worker by precision, optimizer and strategy."""

from __future__ import annotations

from launcher.distributed import memory


def test_memory_by_precision_optimizer_and_strategy():
    params = memory.Params(count=1000 * 10 + 10, shapes=[[1000, 10], [10]], source="test")
    n = params.count
    full = memory.memory_estimate(params, "32-true", "adamw", "ddp", 4)
    assert full["total_bytes_per_worker"] == 16 * n
    assert memory.memory_estimate(params, "bf16-mixed", "adamw", "ddp", 4)["total_bytes_per_worker"] == 16 * n
    assert memory.memory_estimate(params, "bf16-true", "adamw", "ddp", 4)["total_bytes_per_worker"] == 8 * n
    assert memory.memory_estimate(params, "32-true", "adamw", "fsdp", 4)["total_bytes_per_worker"] == 4 * n
    assert memory.memory_estimate(params, "32-true", "adamw", "deepspeed", 4)["bytes_per_worker"] == {
        "weights": 4 * n, "gradients": n, "optimizer_state": 2 * n}
    # Adafactor: row (1000) + column (10) second moments for the matrix, a full one for the vector.
    ada = memory.memory_estimate(params, "32-true", "adafactor", "ddp", 1)
    assert ada["bytes_per_worker"]["optimizer_state"] == 4 * (1000 + 10 + 10)
    assert memory.memory_estimate(memory.Params(None, [], "why"), "32-true", "adamw", "ddp", 1) == {"parameters": None, "source": "why"}
