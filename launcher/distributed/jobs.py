"""The Ray Jobs API of a cluster (its dashboard): address and token auth, what the cluster holds,
checks of a config against it, and following a job's logs."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import os
import sys
import time
import urllib.parse
from importlib import metadata
from typing import Optional

from launcher import compat, storage
from launcher.config import Config
from launcher.distributed import cluster
from launcher.errors import ConfigError


def api_address(given: Optional[str]) -> str:
    """The dashboard (job API) URL, with http:// added when no scheme is given."""
    address = given or os.environ.get("RAY_API_SERVER_ADDRESS") or ""
    if not address and os.environ.get("RAY_ADDRESS", "").startswith(("http://", "https://")):
        address = os.environ["RAY_ADDRESS"]
    address = address or "http://127.0.0.1:8265"
    if address.startswith("ray://") or address == "auto":
        raise ConfigError("--address", f"{address} is a Ray client / GCS address; jobs go to the dashboard's HTTP API",
                          "use http://HEAD:8265 (e.g. after `ray dashboard CLUSTER.yaml` or `kubectl port-forward ... 8265`)")
    if "://" not in address:
        address = "http://" + address
    return address.rstrip("/")


def _is_loopback(address: str) -> bool:
    host = urllib.parse.urlparse(address).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def wants_token(address: str, environ=os.environ) -> bool:
    """Whether to turn on Ray's token auth for this client.

    Ray's clients send the token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) only
    when RAY_AUTH_MODE=token. When the mode is unset and the address is this machine's loopback (a
    local head, or an SSH / kubectl tunnel to a cluster), launcher sends it too, as Ray does for
    clusters it finds locally; to any other address only when RAY_AUTH_MODE=token asks for it.
    """
    if environ.get("RAY_AUTH_MODE") is not None or not _is_loopback(address):
        return False
    path = environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    return bool(environ.get("RAY_AUTH_TOKEN")) or os.path.isfile(path)


def enable_token_auth(address: str) -> None:
    if wants_token(address):
        os.environ["RAY_AUTH_MODE"] = "token"
        compat.reload_ray_auth_mode()  # Ray may have read its config in this process already (tests, notebooks)


def connect(address: str):
    """A JobSubmissionClient, with connection and auth failures turned into one-line errors."""
    # Ray's clients let $RAY_API_SERVER_ADDRESS / $RAY_ADDRESS override the address they are given;
    # api_address() already took them into account, so --address must win here.
    os.environ.pop("RAY_API_SERVER_ADDRESS", None)
    os.environ.pop("RAY_ADDRESS", None)
    enable_token_auth(address)
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError / AuthenticationError / RuntimeError
        raise _api_error(e, address) from None


# What Ray's job client raises (its text is all it gives; a ConnectionError always means "cannot reach")
# → (message, fix), {address} filled in.
_API_ERRORS = [
    (("Authentication required", "Missing authentication token"),
     "the cluster at {address} requires Ray token auth and no token was sent",
     "export RAY_AUTH_MODE=token and put the cluster's token in ~/.ray/auth_token or $RAY_AUTH_TOKEN "
     "(`ray get-auth-token` on the head prints it)"),
    (("Authentication failed", "invalid or incorrect"),
     "the cluster at {address} rejected the Ray auth token",
     "use the token of that cluster (`ray get-auth-token` on the head) in ~/.ray/auth_token or $RAY_AUTH_TOKEN"),
    (("Failed to connect", "Connection refused", ConnectionError),
     "cannot reach the Ray job API at {address}",
     "start the head and a tunnel to its dashboard (`ray dashboard CLUSTER.yaml`, "
     "`kubectl port-forward svc/HEAD-svc 8265:8265`) or pass --address"),
    (("Version check returned", "Jobs API is not supported"),
     "{address} does not answer as a Ray dashboard (no job API there)",
     "give the dashboard port of the head (8265 by default)"),
]


def _api_error(e: BaseException, address: str) -> ConfigError:
    text = str(e)
    for needles, message, fix in _API_ERRORS:
        if any(isinstance(e, n) if isinstance(n, type) else n in text for n in needles):
            return ConfigError("--address", message.format(address=address), fix)
    return ConfigError("--address", f"{type(e).__name__}: {text.strip().splitlines()[0][:200] if text.strip() else ''}")


def requirements() -> list[str]:
    """This package's own pip requirements (without extras), as installed here."""
    try:
        reqs = metadata.requires("launcher") or []
    except metadata.PackageNotFoundError:
        return []
    return [r.split(";")[0].strip() for r in reqs if "extra ==" not in r]



# ---------------------------------------------------------------------- cluster checks


def under(path: str, prefix: str) -> bool:
    """`path` is `prefix` or inside it."""
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


@dataclasses.dataclass
class ClusterInfo:
    nodes: int  # alive nodes
    resources: dict  # summed resources_total of alive nodes
    autoscaling: Optional[bool]  # True: an autoscaler can add nodes; False: fixed; None: unknown


def cluster_info(client, address: str) -> ClusterInfo:
    """Alive nodes and their resources, and whether an autoscaler runs (dashboard API)."""
    from ray.util.state import list_nodes

    try:
        nodes = [n for n in list_nodes(address=address, detail=True, raise_on_missing_output=False) if n.state == "ALIVE"]
        status = compat.cluster_status(client)
    except Exception as e:  # noqa: BLE001
        raise _api_error(e, address) from None
    resources: dict[str, float] = {}
    for n in nodes:
        for k, v in (n.resources_total or {}).items():
            if not k.startswith("node:"):
                resources[k] = resources.get(k, 0) + v
    # The v1 monitor always reports load metrics; it adds an autoscaler report only when the
    # cluster has an autoscaler (cluster launcher, KubeRay with autoscaling).
    autoscaling = bool(status.get("autoscalerReport")) if status is not None else None
    return ClusterInfo(nodes=len(nodes), resources=resources, autoscaling=autoscaling)


def check_cluster(cfg: Config, info: ClusterInfo, shared: list[str]) -> list[str]:
    """Raise ConfigError for what would fail on this cluster; return notes for what may."""
    notes = []
    try:
        # Without node:* keys check_resources skips its storage rule, which needs the head's
        # $LAUNCHER_STORAGE that this machine cannot see; storage is checked below instead.
        cluster.check_resources(cfg, info.resources)
    except ConfigError as e:
        if info.autoscaling is False:
            raise
        notes.append(f"{e} — now; the cluster's autoscaler must add nodes (the run fails after "
                     f"$RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S if it cannot)")
    multi = info.nodes > 1 or bool(info.autoscaling)
    explicit = cfg.ray.storage_path
    if explicit and not storage.is_uri(explicit) and multi:
        if not any(under(os.path.abspath(explicit), os.path.abspath(s)) for s in shared):
            what = f"{info.nodes} nodes" if info.nodes > 1 else "an autoscaler that adds nodes"
            raise ConfigError("ray.storage_path", f"{explicit} is a local folder and the cluster has {what}: every node writes checkpoints there",
                              "use a bucket URI (s3://..., gs://...) or, when every node mounts it, pass --shared " + explicit)
    if not explicit and multi:
        notes.append("ray.storage_path is unset: the run uses the head's $LAUNCHER_STORAGE (the cluster YAMLs set it); "
                     "without it a multi-node run is refused")
    if not os.path.isabs(cfg.output_dir) and not storage.is_uri(explicit or ""):
        notes.append(f"output_dir {cfg.output_dir} is relative: results and best/ land in the job's working directory on the head; "
                     "set --output_dir to an absolute path there, or a bucket ray.storage_path (best/ is copied next to the run)")
    return notes


# ---------------------------------------------------------------------- following a job


def follow(client, job_id: str, address: str) -> int:
    """Stream the job's logs; 0 when it SUCCEEDED, 1 when it FAILED or was STOPPED."""
    from ray.job_submission import JobStatus

    async def tail():
        async for lines in client.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    try:
        asyncio.run(tail())
        status = client.get_job_status(job_id)
        while not status.is_terminal():
            time.sleep(1)
            status = client.get_job_status(job_id)
    except KeyboardInterrupt:
        print(f"\n[launcher] stopped following; the job keeps running (ray job stop --address {address} {job_id})", file=sys.stderr)
        return 130
    info = client.get_job_info(job_id)
    print(f"[launcher] job {job_id}: {status.value}" + (f" ({info.message})" if status != JobStatus.SUCCEEDED and info.message else ""),
          file=sys.stderr)
    return 0 if status == JobStatus.SUCCEEDED else 1
