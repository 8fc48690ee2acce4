"""`launcher train`: check → tokenise once → Ray Train workers run Lightning → export the best epoch.

`run()` is the whole driver flow, top to bottom; the workers' loop is launcher.training.loop.
"""

from __future__ import annotations

import math
import os

from launcher import export, storage
from launcher.config import Config, to_dict
from launcher.config.parsing import parse, print_config
from launcher.console import say
from launcher.data.streaming import cpu_split, data_cpus
from launcher.distributed import cluster
from launcher.files import claim_dir, clear_dir, write_yaml
from launcher.storage import storage_errors
from launcher.training.prepare import check, check_output_dir, prepare


def main(argv: list[str]) -> int:
    """Train a task on Ray Train workers and export the best epoch to <output_dir>/best."""
    cfg, flags = parse(argv, "launcher train", main.__doc__)
    if flags["print_config"]:
        print_config(cfg)
        return 0
    results = run(cfg, overwrite=flags["overwrite"], resume=flags["resume"])
    print(f"[launcher] {summary_line(results)}; global_step {results['global_step']}; wall {results['train_wall_time_s']:.1f}s")
    if results.get("test"):
        print("[launcher] test: " + " ".join(f"{k} {v:.4f}" for k, v in results["test"].items() if isinstance(v, float)))
    print(f"[launcher] results: {os.path.join(cfg.output_dir, 'results.json')}")
    print(f"[launcher] exported model: {results['best_model']}")
    if results.get("best_model_uri"):
        print(f"[launcher] exported model (copy in run storage): {results['best_model_uri']}")
    return 0


def run(cfg: Config, overwrite: bool = False, resume: bool = False) -> dict:
    """The whole `launcher train` flow. Returns the results dict that is also written to results.json."""
    # lazy: Ray and the ML stack load only once the config has passed its checks
    from launcher.training.fit import fit

    check_output_dir(cfg, overwrite, resume)
    streams = check(cfg).stream  # data.streaming auto → true/false
    cluster.check_local_resources(cfg)  # before loading anything: the machine must fit the request
    if streams and not cluster.is_remote(cfg):
        stream_cpus(cfg, cluster.local_cpus(cfg)[0], quiet=True)  # before Ray starts: Ray Data must keep a CPU
    name = storage.run_name(cfg)  # unique in shared storage, where Ray would resume a same-named run
    storage.check_run_state(cfg, name, overwrite, resume)
    if streams:
        # Ray Data counts the rows and finds the label set on the cluster, so Ray starts first.
        cluster.init_ray(cfg)
    prepared = prepare(cfg)
    # Full or read-only: one line naming output_dir (fit names the run storage). Another run of the same
    # output_dir at the same time (jobs submitted together) is refused, not mixed with this one.
    with storage_errors(cfg.output_dir), claim_dir(cfg.output_dir):
        if overwrite and not resume:
            clear_dir(cfg.output_dir)
            storage.clear_run(cfg, name)
        write_yaml(os.path.join(cfg.output_dir, "config.yaml"), to_dict(cfg))

        cluster.init_ray(cfg)
        cfg = cluster.with_cpus(cfg)  # ray.cpus_per_worker auto → a number, from the CPUs Ray has
        cluster.check_resources(cfg, cluster.cluster_resources())
        if streams:
            stream_cpus(cfg, cluster.cluster_resources().get("CPU", 0))
        outcome = fit(cfg, prepared, name=name)
        return export.finish_run(cfg, prepared, outcome)


def stream_cpus(cfg: Config, total: float, quiet: bool = False) -> None:
    """data.streaming: the workers' CPUs must leave Ray Data `data.streaming_cpus` to read and tokenise."""
    per_worker = cluster.cpus_per_worker(cfg).cpus if cfg.ray.cpus_per_worker == "auto" else float(cfg.ray.cpus_per_worker)
    split = cpu_split(total, cfg.ray.num_workers, per_worker, data_cpus(cfg))
    if not quiet:
        say(f"[launcher] streaming: {cfg.ray.num_workers} workers x {split.worker_cpus:g} CPU, "
            f"Ray Data keeps {split.data_cpus:g} of {total:g} CPUs")


def summary_line(results: dict) -> str:
    best = results.get("best_value")
    return (f"best {results['monitor']} = {best:.4f} at epoch {results['best_epoch']:g}" if isinstance(best, float) and math.isfinite(best)
            else "no validation result")
