"""Submit a config to a Ray cluster as a job: launcher submit CONFIG.yaml --address http://HEAD:8265 [--follow] [-- overrides].

What it sends (Ray Jobs API, the same as `ray job submit`):

* working_dir: a staging folder with the config and the local files it references (data files,
  a local model folder), laid out as they are relative to the current directory, so relative
  paths in the config keep working on the cluster. Ray uploads at most 100 MiB per job.
* py_modules + pip: this launcher package and its requirements, installed into the job's own
  environment on every node (`--installed` skips both when the cluster has launcher already).
* env_vars: the variables named by `--env NAME`, with values taken from this shell. Values are
  never printed or written by launcher.

Before anything is sent, the config is validated here and checked against the cluster (via the
dashboard's API): files too big to upload or only on this machine, a local storage_path on a
multi-node cluster, workers asking for more CPUs/GPUs/TPUs than a fixed-size cluster has.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import shlex
import shutil
import sys
import tempfile
import time
import urllib.parse
from typing import Optional

from launcher import config as config_lib
from launcher.config import Config, ConfigError
from launcher.distributed import RUNTIME_ENV_KEYS

UPLOAD_LIMIT = 100 * 2**20  # the dashboard accepts working_dir packages up to 100 MiB
PATH_KEYS = ("data.train_file", "data.validation_file", "data.test_file", "model.name_or_path", "model.tokenizer")
MODEL_KEYS = ("model.name_or_path", "model.tokenizer")
# launcher's own Ray runtime_env sets these (launcher.distributed.init_ray); Ray refuses a job
# whose runtime_env sets them too.
RESERVED_ENV = RUNTIME_ENV_KEYS
STAGE_DIR = "_launcher_files"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="launcher submit",
        usage="launcher submit CONFIG.yaml [--address URL] [--follow] [--env NAME ...] [options] [-- --section.key value ...]",
        description="Submit `launcher train CONFIG.yaml` to a Ray cluster through the Ray Jobs API. "
                    "Config overrides go after `--`.")
    p.add_argument("config", help="The YAML config.")
    p.add_argument("--address", default=None,
                   help="Job API of the cluster: the dashboard URL, e.g. http://127.0.0.1:8265 through `ray dashboard CLUSTER.yaml` "
                        "(default: $RAY_API_SERVER_ADDRESS, $RAY_ADDRESS when it is an http URL, else http://127.0.0.1:8265).")
    p.add_argument("--follow", action="store_true", help="Stream the job's logs until it ends; the exit code is the job's (0: SUCCEEDED).")
    p.add_argument("--env", action="append", default=[], metavar="NAME",
                   help="Pass this environment variable (e.g. WANDB_API_KEY, HF_TOKEN) to the job; the value comes from this shell and is never printed.")
    p.add_argument("--installed", action="store_true",
                   help="The cluster has launcher and its requirements installed: ship neither this package nor pip requirements.")
    p.add_argument("--pip", action="append", default=[], metavar="SPEC", help="Another pip requirement for the job's environment (repeatable).")
    p.add_argument("--shared", action="append", default=[], metavar="PREFIX",
                   help="A path prefix that every node mounts (NFS): files under it are used in place, not uploaded, and a "
                        "ray.storage_path under it is accepted on multi-node clusters (repeatable).")
    p.add_argument("--submission-id", default=None, help="Job id to use (default: Ray picks raysubmit_...).")
    p.add_argument("--dry-run", action="store_true", help="Stage the files and print what would be submitted, without contacting the cluster.")
    p.add_argument("--debug", action="store_true", help="Show tracebacks.")
    return p


def main(argv: list[str]) -> int:
    """Submit a config to a Ray cluster as a Ray job (upload, checks, follow the logs)."""
    argv = list(argv)
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    head = argv[: argv.index("--")] if "--" in argv else argv
    args, unknown = parser().parse_known_args(head)
    # Overrides given before `--` are accepted too (anything that is not a submit option).
    overrides = unknown + overrides

    from launcher import cli

    cfg, _ = cli.parse([args.config] + overrides, "launcher submit", main.__doc__)
    config_lib.validate(cfg)
    address = api_address(args.address)
    env_vars = pass_env(args.env)
    staged = stage(cfg, args.config, overrides, args.shared)
    try:
        runtime_env = build_runtime_env(staged, env_vars, installed=args.installed, pip=args.pip)
        entrypoint = shlex.join(["python", "-m", "launcher", "train", *staged.argv])
        if args.dry_run:
            for note in staged.notes:
                print(f"[launcher] note: {note}", file=sys.stderr)
            describe(address, runtime_env, entrypoint, staged)
            return 0
        client = connect(address)
        info = cluster_info(client, address)
        for note in check_cluster(cfg, info, args.shared) + staged.notes:
            print(f"[launcher] note: {note}", file=sys.stderr)
        describe(address, runtime_env, entrypoint, staged, file=sys.stderr)
        job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=args.submission_id,
                                   metadata={"launcher_config": os.path.basename(args.config)})
    finally:
        # Ray zipped and uploaded the folder during submit_job; the copy is no longer needed.
        shutil.rmtree(staged.dir, ignore_errors=True)
    print(job_id)
    print(f"[launcher] submitted {job_id} to {address}\n"
          f"[launcher] logs:   ray job logs --address {address} --follow {job_id}\n"
          f"[launcher] status: ray job status --address {address} {job_id}\n"
          f"[launcher] stop:   ray job stop --address {address} {job_id}", file=sys.stderr)
    if not args.follow:
        return 0
    return follow(client, job_id, address)


# ---------------------------------------------------------------------- address and auth


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
        if "ray._raylet" in sys.modules:
            # Ray already read its config in this process (tests, notebooks): make it re-read the mode.
            from ray._raylet import Config as RayConfig

            RayConfig.initialize("")


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


def _api_error(e: BaseException, address: str) -> ConfigError:
    text = str(e)
    if "Authentication required" in text or "Missing authentication token" in text:
        return ConfigError("--address", f"the cluster at {address} requires Ray token auth and no token was sent",
                           "export RAY_AUTH_MODE=token and put the cluster's token in ~/.ray/auth_token or $RAY_AUTH_TOKEN "
                           "(`ray get-auth-token` on the head prints it)")
    if "Authentication failed" in text or "invalid or incorrect" in text:
        return ConfigError("--address", f"the cluster at {address} rejected the Ray auth token",
                           "use the token of that cluster (`ray get-auth-token` on the head) in ~/.ray/auth_token or $RAY_AUTH_TOKEN")
    if isinstance(e, ConnectionError) or "Failed to connect" in text or "Connection refused" in text:
        return ConfigError("--address", f"cannot reach the Ray job API at {address}",
                           "start the head and a tunnel to its dashboard (`ray dashboard CLUSTER.yaml`, "
                           "`kubectl port-forward svc/HEAD-svc 8265:8265`) or pass --address")
    if "Version check returned" in text or "Jobs API is not supported" in text:
        return ConfigError("--address", f"{address} does not answer as a Ray dashboard (no job API there)",
                           "give the dashboard port of the head (8265 by default)")
    return ConfigError("--address", f"{type(e).__name__}: {text.strip().splitlines()[0][:200] if text.strip() else ''}")


# ---------------------------------------------------------------------- environment variables


def pass_env(names: list[str]) -> dict[str, str]:
    """NAME → value from this shell, for runtime_env.env_vars (values are never printed)."""
    out = {}
    for name in names:
        if "=" in name:
            raise ConfigError("--env", f"expected a variable name, got {name.split('=')[0]}=...",
                              f"export {name.split('=')[0]} in your shell and pass --env {name.split('=')[0]} (values stay out of shell history and logs)")
        if name in RESERVED_ENV:
            raise ConfigError("--env", f"{name} is set by launcher itself on the cluster", "drop this --env")
        if name not in os.environ:
            raise ConfigError("--env", f"{name} is not set in this shell", f"export {name}=... before submitting")
        out[name] = os.environ[name]
    return out


# ---------------------------------------------------------------------- staging the working_dir


@dataclasses.dataclass
class Staged:
    dir: str
    argv: list  # config path inside the working_dir + overrides for the job
    files: dict  # config key → (local path, path in the working_dir)
    bytes: int
    notes: list
    model_packages: list  # PyPI packages that ship the model (pypi:NAME)


def stage(cfg: Config, config_path: str, overrides: list[str], shared: list[str]) -> Staged:
    """Copy the config and the small local files it references into a fresh working_dir.

    Files under the current directory keep their relative path (relative paths in the config and
    overrides then mean the same on the cluster); others go to _launcher_files/<key>/ and an
    override points the job at them. Raises ConfigError for files that cannot be uploaded.
    """
    cwd = os.getcwd()
    raw = raw_values(config_path, overrides)
    shared = [os.path.abspath(p) for p in shared]
    plan: dict[str, tuple[str, str]] = {}
    job_values: dict[str, str] = {}
    notes, packages = [], []
    for key in PATH_KEYS:
        section, field = key.split(".")
        value = getattr(getattr(cfg, section), field)
        original = raw.get(key)
        if not value:
            continue
        if key in MODEL_KEYS and original and original.startswith("pypi:"):
            packages.append(original[len("pypi:"):])
            job_values[key] = original
            continue
        if "://" in value:
            continue
        local = os.path.abspath(os.path.expanduser(value))
        if any(_under(local, s) for s in shared):
            job_values[key] = local
            continue
        if not os.path.exists(local):
            if key in MODEL_KEYS and _looks_like_hub_id(value):
                continue
            if os.path.isabs(os.path.expanduser(value)):
                notes.append(f"{key}: {value} does not exist here; the cluster nodes must have it")
                continue
            raise ConfigError(key, f"not found: {value}", "check the path (relative paths are from the current directory)")
        rel = os.path.relpath(local, cwd)
        if rel.startswith(".."):
            rel = os.path.join(STAGE_DIR, key, os.path.basename(local.rstrip("/")))
        plan[key] = (local, rel)
        job_values[key] = rel

    sizes = {key: _size(local) for key, (local, _) in plan.items()}
    config_rel = os.path.relpath(os.path.abspath(config_path), cwd)
    if config_rel.startswith(".."):
        config_rel = os.path.join(STAGE_DIR, "config", os.path.basename(config_path))
    total = sum(sizes.values()) + os.path.getsize(config_path)
    if total > UPLOAD_LIMIT:
        biggest = max(sizes, key=sizes.get)
        raise ConfigError(biggest, f"{_mib(total)} of local files to upload ({plan[biggest][0]}: {_mib(sizes[biggest])}); "
                                   f"a Ray job's working_dir is limited to {_mib(UPLOAD_LIMIT)}",
                          "put it where the cluster can read it: a shared path (pass --shared PREFIX) or a bucket URI "
                          "(s3://..., gs://...)" + (", or a hub id / pypi: package for models" if biggest in MODEL_KEYS else ""))

    tmp = tempfile.mkdtemp(prefix="launcher-submit-")
    try:
        _copy(config_path, os.path.join(tmp, config_rel))
        for key, (local, rel) in plan.items():
            _copy(local, os.path.join(tmp, rel))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    argv = [config_rel, *overrides]
    for key, value in job_values.items():
        if raw.get(key) != value:
            argv += [f"--{key}", value]
    if cfg.ray.address:
        # Inside a job the driver joins its own cluster (RAY_ADDRESS); an address meant for this
        # machine would point elsewhere there.
        notes.append(f"ray.address {cfg.ray.address} is not used by the job: it runs on the cluster it is submitted to")
        argv += ["--ray.address", "null"]
    return Staged(dir=tmp, argv=argv, files=plan, bytes=total, notes=notes, model_packages=packages)


def raw_values(config_path: str, overrides: list[str]) -> dict[str, str]:
    """The path keys as written in the YAML and the overrides (before launcher resolves pypi: models)."""
    import yaml

    with open(config_path) as f:
        data = yaml.safe_load(f) or {}
    out = {}
    for key in PATH_KEYS:
        section, field = key.split(".")
        value = (data.get(section) or {}).get(field) if isinstance(data.get(section), dict) else None
        if value is not None:
            out[key] = str(value)
    i = 0
    while i < len(overrides):
        name, eq, value = overrides[i].partition("=")
        if name.startswith("--") and name[2:] in PATH_KEYS:
            if not eq and i + 1 < len(overrides):
                value = overrides[i + 1]
                i += 1
            out[name[2:]] = value
        i += 1
    return out


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def _looks_like_hub_id(value: str) -> bool:
    parts = value.split("/")
    return not value.startswith((".", "/", "~")) and len(parts) <= 2 and all(parts)


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _copy(src: str, dst: str) -> None:
    os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
    if os.path.isdir(src):
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dst)


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


# ---------------------------------------------------------------------- runtime_env


def requirements() -> list[str]:
    """This package's own pip requirements (without extras), as installed here."""
    from importlib import metadata

    try:
        reqs = metadata.requires("launcher") or []
    except metadata.PackageNotFoundError:
        return []
    return [r.split(";")[0].strip() for r in reqs if "extra ==" not in r]


def build_runtime_env(staged: Staged, env_vars: dict, installed: bool = False, pip: Optional[list] = None) -> dict:
    env: dict = {"working_dir": staged.dir}
    if not installed:
        # The local launcher code runs on the cluster, so what was checked here is what runs there.
        # (Located through a submodule: an editable install can make `launcher` a namespace package.)
        env["py_modules"] = [os.path.dirname(os.path.abspath(config_lib.__file__))]
    packages = ([] if installed else requirements()) + staged.model_packages + list(pip or [])
    if packages:
        env["pip"] = {"packages": packages, "pip_check": False}
    if env_vars:
        env["env_vars"] = dict(env_vars)
    return env


def describe(address: str, runtime_env: dict, entrypoint: str, staged: Staged, file=sys.stdout) -> None:
    """What is submitted, with environment variable values left out."""
    print(f"[launcher] job API:     {address}", file=file)
    print(f"[launcher] entrypoint:  {entrypoint}", file=file)
    print(f"[launcher] working_dir: {_mib(staged.bytes)} (config" + "".join(f", {k}" for k in staged.files) + ")", file=file)
    if "py_modules" in runtime_env:
        print(f"[launcher] py_modules:  {', '.join(runtime_env['py_modules'])}", file=file)
    if "pip" in runtime_env:
        print(f"[launcher] pip:         {' '.join(runtime_env['pip']['packages'])}", file=file)
    if runtime_env.get("env_vars"):
        print(f"[launcher] env_vars:    {', '.join(sorted(runtime_env['env_vars']))} (values not shown)", file=file)


# ---------------------------------------------------------------------- cluster checks


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
        response = client._do_request("GET", "/api/cluster_status")
    except Exception as e:  # noqa: BLE001
        raise _api_error(e, address) from None
    resources: dict[str, float] = {}
    for n in nodes:
        for k, v in (n.resources_total or {}).items():
            if not k.startswith("node:"):
                resources[k] = resources.get(k, 0) + v
    autoscaling = None
    if response.status_code == 200:
        status = (response.json().get("data") or {}).get("clusterStatus")
        # The v1 monitor always reports load metrics; it adds an autoscaler report only when the
        # cluster has an autoscaler (cluster launcher, KubeRay with autoscaling).
        autoscaling = bool(status.get("autoscalerReport")) if isinstance(status, dict) else None
    return ClusterInfo(nodes=len(nodes), resources=resources, autoscaling=autoscaling)


def check_cluster(cfg: Config, info: ClusterInfo, shared: list[str]) -> list[str]:
    """Raise ConfigError for what would fail on this cluster; return notes for what may."""
    from launcher import distributed, storage

    notes = []
    try:
        # Without node:* keys check_resources skips its storage rule, which needs the head's
        # $LAUNCHER_STORAGE that this machine cannot see; storage is checked below instead.
        distributed.check_resources(cfg, info.resources)
    except ConfigError as e:
        if info.autoscaling is False:
            raise
        notes.append(f"{e} — now; the cluster's autoscaler must add nodes (the run fails after "
                     f"$RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S if it cannot)")
    multi = info.nodes > 1 or bool(info.autoscaling)
    explicit = cfg.ray.storage_path
    if explicit and not storage.is_uri(explicit) and multi:
        if not any(_under(os.path.abspath(explicit), os.path.abspath(s)) for s in shared):
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
    import asyncio

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
