"""A real run on a simulated 2-node cluster: SPREAD placement, the storage rule, metrics gathered across nodes.

The 2-node run uses `ray.cluster_utils.Cluster` (a head and a worker node as separate Ray node
processes on this machine) in a subprocess with its own RAY_TMPDIR, so neither this process's
`ray_session` nor any other Ray on the machine is involved.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.helpers.cluster import isolated_ray_env
from tests.helpers.paths import REPO


SCRIPT = textwrap.dedent("""
    import json, os, socket, sys
    sys.path.insert(0, {repo!r})
    import lightning.pytorch as pl
    import ray
    import yaml
    from ray.cluster_utils import Cluster

    from tests.helpers.config import base_config
    from tests.helpers.data import sentiment_rows, write_csv
    from tests.helpers.models import make_tiny_bert
    from launcher.distributed import cluster as cluster_lib
    from launcher import export as export_lib
    from launcher import storage
    from launcher.training import fit as fit_lib
    from launcher.training import prepare as prepare_lib
    from launcher.config import ConfigError, to_dict

    work = {work!r}


    class NodeOfRank(pl.Callback):
        # Runs in each Ray Train worker: which node holds which rank.
        def on_train_start(self, trainer, module):
            rank = ray.train.get_context().get_world_rank()
            with open(os.path.join(work, f"node-of-rank-{{rank}}"), "w") as f:
                f.write(ray.get_runtime_context().get_node_id())


    # A loaded machine can make Ray's 30 s node start-up checks time out: try again.
    for attempt in range(3):
        cluster = Cluster()
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                dash = sock.getsockname()[1]
            cluster.add_node(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=dash)
            cluster.add_node(num_cpus=2)
            cluster.wait_for_nodes()
            break
        except Exception:
            cluster.shutdown()
            if attempt == 2:
                raise
    files = {{"train": write_csv(os.path.join(work, "train.csv"), sentiment_rows(96, seed=1)),
              "validation": write_csv(os.path.join(work, "val.csv"), sentiment_rows(30, seed=2))}}
    cfg = base_config(make_tiny_bert(os.path.join(work, "model")), files, os.path.join(work, "out"),
                      ray={{"address": cluster.address, "placement_strategy": "SPREAD", "cpus_per_worker": 1}})
    with open(os.path.join(work, "cfg.yaml"), "w") as f:
        yaml.safe_dump({{k: v for k, v in to_dict(cfg).items() if k != "tune"}}, f)
    cluster_lib.init_ray(cfg)
    nodes = len([n for n in ray.nodes() if n["Alive"]])
    try:
        cluster_lib.check_resources(cfg, ray.cluster_resources())
        refused = None
    except ConfigError as e:
        refused = str(e)
    # One machine: a folder here is "shared" by both nodes, so an explicit path is accepted.
    cfg.ray.storage_path = os.path.join(work, "shared-storage")
    prepared = prepare_lib.prepare(cfg)
    cluster_lib.check_resources(cfg, ray.cluster_resources())
    outcome = fit_lib.fit(cfg, prepared, name=storage.run_name(cfg), extra_loop_config={{"callbacks": [NodeOfRank()]}})
    results = export_lib.finish_run(cfg, prepared, outcome)
    ranks = {{r: open(os.path.join(work, f"node-of-rank-{{r}}")).read() for r in (0, 1)}}
    t = cfg.train
    from launcher.commands import plan as plan_cmd
    from launcher.data.sampling import optimizer_steps
    expected = {{"formula": optimizer_steps(96, 2, t.batch_size, t.accumulate_grad_batches, t.max_epochs),
                 "plan": plan_cmd.build(cfg)["steps"]["optimizer_steps_total"]}}
    print("RESULT " + json.dumps({{"nodes": nodes, "refused": refused, "ranks": ranks, "results": results, "expected": expected}}))
    ray.shutdown()
    cluster.shutdown()
""")


@pytest.mark.ray
@pytest.mark.slow
def test_two_node_cluster_spread_placement(tmp_path):
    work = str(tmp_path)
    script = tmp_path / "two_nodes.py"
    script.write_text(SCRIPT.format(repo=str(REPO), work=work))
    with isolated_ray_env() as env:
        r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT "):])
    assert out["nodes"] == 2
    assert out["refused"] and "the cluster has 2 nodes but run storage is the local folder" in out["refused"]
    assert out["ranks"]["0"] != out["ranks"]["1"]  # SPREAD: one worker per node

    results = out["results"]
    # 96 rows over 2 workers: 48 per worker, batches and accumulation as configured (tests.helpers.config.base_config).
    assert results["global_step"] == out["expected"]["formula"] == out["expected"]["plan"]
    assert [e["epoch"] for e in results["epochs"]] == [1, 2]
    best = next(e for e in results["epochs"] if e["epoch"] == results["best_epoch"])
    assert results["best_value"] == best["val_accuracy"] == max(e["val_accuracy"] for e in results["epochs"])
    # Metrics gathered across the two nodes equal a single-process evaluation of the exported model.
    r = subprocess.run([sys.executable, "-m", "launcher", "evaluate", os.path.join(work, "cfg.yaml"), "--model",
                        os.path.join(work, "out", "best")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    single = json.loads(r.stdout[r.stdout.index("{"):])
    for key in ("val_accuracy", "val_f1", "val_loss"):
        assert single[key] == pytest.approx(best[key], abs=1e-5), key
