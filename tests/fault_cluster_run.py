"""Run `launcher train` on a simulated 2-node Ray cluster and remove one node mid-run.

Used by tests/test_faults.py in its own process (a `ray.cluster_utils.Cluster` cannot share a process
with the test session's Ray). Usage: fault_cluster_run.py CONFIG.yaml RUN_DIR; prints one JSON line:
{"results": ..., "fault": ...}.
"""

from __future__ import annotations

import json
import sys
import time

import faults


def main(config_path: str, run_dir: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from launcher import cli, train

    cfg, _ = cli.parse([config_path])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": True,
                                                            "dashboard_host": "127.0.0.1", "dashboard_port": _free_port()})
    worker_node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)

    def remove_then_replace() -> dict:
        cluster.remove_node(worker_node, allow_graceful=False)
        time.sleep(3)  # the worker group fails and waits for resources, as on a cloud until the autoscaler reacts
        cluster.add_node(num_cpus=1)
        return {"removed_node": worker_node.node_id}

    fault = faults.Fault(run_dir, after=2, action=remove_then_replace)
    fault.start()
    try:
        results = train.run(cfg)
        info = fault.result()
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
