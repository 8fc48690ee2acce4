"""Run `launcher train` on a simulated 2-node Ray cluster and remove one node mid-run.

Used by tests/faults/test_faults.py in its own process (a `ray.cluster_utils.Cluster` cannot share a process
with the test session's Ray). Usage: fault_cluster_run.py CONFIG.yaml RUN_DIR; prints one JSON line:
{"results": ..., "fault": ...}. Needs the checkout's root on PYTHONPATH (for tests.helpers).
"""

from __future__ import annotations

import json
import sys
import threading
import time

from tests.helpers import faults


def main(config_path: str, run_dir: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from launcher.config import parsing
    from launcher.commands import train as train_cmd

    cfg, _ = parsing.parse([config_path])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": True,
                                                            "dashboard_host": "127.0.0.1", "dashboard_port": _free_port()})
    worker_node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)

    # Ray's Node registers a SIGTERM handler, which Python allows only in the main thread: the fault
    # (remove a node, add another) runs here and the training in a thread.
    box: dict = {}

    def train_run() -> None:
        try:
            box["results"] = train_cmd.run(cfg)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            box["error"] = e

    runner = threading.Thread(target=train_run, daemon=True)
    runner.start()
    try:
        step = faults.wait_for_registered(run_dir, 2)
        cluster.remove_node(worker_node, allow_graceful=False)
        time.sleep(3)  # the worker group fails and waits for resources, as on a cloud until the autoscaler reacts
        cluster.add_node(num_cpus=1)
        info = {"removed_node": worker_node.node_id, "registered_step": step}
        runner.join()
        if "error" in box:
            raise box["error"]
        results = box["results"]
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(json.dumps({"results": results, "fault": info}, default=str))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
