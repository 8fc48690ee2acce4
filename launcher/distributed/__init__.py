"""Ray: the cluster (cluster.py: start/join, resource checks), the Train run objects (trainer.py: the
one place that builds ScalingConfig/RunConfig/TorchTrainer), the Lightning strategy inside a worker
(strategy.py), memory per worker (memory.py), the Jobs API (jobs.py), and torch-xla on TPU hosts (xla/)."""
