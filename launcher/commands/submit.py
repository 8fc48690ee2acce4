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

import dataclasses
import os
import shlex
import shutil
import sys
import tempfile
from typing import Optional

from launcher import config as config_lib
from launcher import errors, tasks
from launcher.config import Config
from launcher.config.parsing import Flag, parse_command, print_config, raw_values
from launcher.console import size
from launcher.distributed import jobs
from launcher.distributed.cluster import RUNTIME_ENV_KEYS
from launcher.errors import ConfigError
from launcher.model_files import looks_like_hub_id
from launcher.search.space import parse_space, validate_search

UPLOAD_LIMIT = 100 * 2**20  # the dashboard accepts working_dir packages up to 100 MiB
PATH_KEYS = ("data.train_file", "data.validation_file", "data.test_file", "model.name_or_path", "model.tokenizer")
MODEL_KEYS = ("model.name_or_path", "model.tokenizer")
STAGE_DIR = "_launcher_files"
COMMANDS = ("train", "tune")
#: flags of `launcher train/tune` that the job's command line gets when they are given here
FORWARDED = ("overwrite", "resume", "verbose")

FLAGS = {
    "--address": Flag("Job API of the cluster: the dashboard URL, e.g. http://127.0.0.1:8265 through `ray dashboard CLUSTER.yaml` "
                      "(default: $RAY_API_SERVER_ADDRESS, $RAY_ADDRESS when it is an http URL, else http://127.0.0.1:8265).",
                      takes=str, metavar="URL"),
    "--command": Flag("What the job runs: train or tune (default: tune when the config has a tune: section, else train).",
                      takes=str, metavar="train|tune"),
    "--follow": Flag("Stream the job's logs until it ends; the exit code is the job's (0: SUCCEEDED)."),
    "--env": Flag("Pass this environment variable (e.g. WANDB_API_KEY, HF_TOKEN) to the job; the value comes from this shell "
                  "and is never printed (repeatable).", takes=str, repeat=True, metavar="NAME"),
    "--installed": Flag("The cluster has launcher and its requirements installed: ship neither this package nor pip requirements."),
    "--pip": Flag("Another pip requirement for the job's environment (repeatable).", takes=str, repeat=True, metavar="SPEC"),
    "--shared": Flag("A path prefix that every node mounts (NFS): files under it are used in place, not uploaded, and a "
                     "ray.storage_path under it is accepted on multi-node clusters (repeatable).", takes=str, repeat=True, metavar="PREFIX"),
    "--submission-id": Flag("Job id to use (default: Ray picks raysubmit_...).", takes=str, metavar="ID"),
    "--dry-run": Flag("Stage the files and print what would be submitted, without contacting the cluster."),
}


def main(argv: list[str]) -> int:
    """Submit a config to a Ray cluster as a Ray job (launcher train or tune: upload, checks, follow the logs)."""
    parsed = parse_command(argv, "launcher submit", __doc__.splitlines()[0], FLAGS)
    cfg, args = parsed.cfg, parsed.flags
    if args["print_config"]:
        print_config(cfg)
        return 0
    if parsed.config_path is None:
        raise ConfigError("CONFIG", "launcher submit needs a config file", "launcher submit CONFIG.yaml [options]")
    command = command_of(args["command"], parsed)
    check(cfg, command)
    address = jobs.api_address(args["address"])
    env_vars = pass_env(args["env"])
    staged = stage(cfg, parsed.config_path, parsed.overrides, args["shared"], parsed.raw)
    try:
        runtime_env = build_runtime_env(staged, env_vars, installed=args["installed"], pip=args["pip"])
        forwarded = [f"--{name}" for name in FORWARDED if args[name]]
        entrypoint = shlex.join(["python", "-m", "launcher", command, *staged.argv, *forwarded])
        if args["dry_run"]:
            for note in staged.notes:
                print(f"[launcher] note: {note}", file=sys.stderr)
            describe(address, runtime_env, entrypoint, staged)
            return 0
        client = jobs.connect(address)
        info = jobs.cluster_info(client, address)
        for note in jobs.check_cluster(cfg, info, args["shared"]) + staged.notes:
            print(f"[launcher] note: {note}", file=sys.stderr)
        describe(address, runtime_env, entrypoint, staged, file=sys.stderr)
        job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=args["submission_id"],
                                   metadata={"launcher_config": os.path.basename(parsed.config_path or "")})
    finally:
        # Ray zipped and uploaded the folder during submit_job; the copy is no longer needed.
        shutil.rmtree(staged.dir, ignore_errors=True)
    print(job_id)
    print(f"[launcher] submitted {job_id} ({command}) to {address}\n"
          f"[launcher] logs:   ray job logs --address {address} --follow {job_id}\n"
          f"[launcher] status: ray job status --address {address} {job_id}\n"
          f"[launcher] stop:   ray job stop --address {address} {job_id}", file=sys.stderr)
    if not args["follow"]:
        return 0
    return jobs.follow(client, job_id, address)


def command_of(given: Optional[str], parsed) -> str:
    """--command, else tune for a config with a search (a tune: section or --tune.* overrides), else train."""
    if given is not None:
        if given not in COMMANDS:
            raise ConfigError("--command", f"invalid choice {given!r}", "choose one of: " + ", ".join(COMMANDS))
        return given
    return "tune" if parsed.is_search else "train"


def check(cfg: Config, command: str) -> None:
    """What the job would refuse at its start, refused here before anything is sent."""
    config_lib.validate(cfg)
    tasks.check_name(cfg.task)
    if command == "tune":
        validate_search(cfg, parse_space(cfg))


# ---------------------------------------------------------------------- environment variables


def pass_env(names: list[str]) -> dict[str, str]:
    """NAME → value from this shell, for runtime_env.env_vars (values are never printed)."""
    out = {}
    for name in names:
        if "=" in name:
            raise ConfigError("--env", f"expected a variable name, got {name.split('=')[0]}=...",
                              f"export {name.split('=')[0]} in your shell and pass --env {name.split('=')[0]} (values stay out of shell history and logs)")
        if name in RUNTIME_ENV_KEYS:  # launcher's own runtime_env sets them; Ray refuses a job that sets them too
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


def stage(cfg: Config, config_path: str, overrides: list[str], shared: list[str], raw: Optional[dict] = None) -> Staged:
    """Copy the config and the small local files it references into a fresh working_dir.

    Files under the current directory keep their relative path (relative paths in the config and
    overrides then mean the same on the cluster); others go to _launcher_files/<key>/ and an
    override points the job at them. Raises ConfigError for files that cannot be uploaded.
    """
    cwd = os.getcwd()
    if raw is None:
        raw = raw_values(config_path, overrides)
    raw = {k: str(v) for k, v in raw.items() if k in PATH_KEYS and v is not None}  # as written, before pypi: resolution
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
        if any(jobs.under(local, s) for s in shared):
            job_values[key] = local
            continue
        if not os.path.exists(local):
            if key in MODEL_KEYS and looks_like_hub_id(value):
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
        raise ConfigError(biggest, f"{size(total)} of local files to upload ({plan[biggest][0]}: {size(sizes[biggest])}); "
                                   f"a Ray job's working_dir is limited to {size(UPLOAD_LIMIT)}",
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


# ---------------------------------------------------------------------- runtime_env


def build_runtime_env(staged: Staged, env_vars: dict, installed: bool = False, pip: Optional[list] = None) -> dict:
    env: dict = {"working_dir": staged.dir}
    if not installed:
        # The local launcher code runs on the cluster, so what was checked here is what runs there.
        # (Located through a submodule: an editable install can make `launcher` a namespace package.)
        env["py_modules"] = [os.path.dirname(os.path.abspath(errors.__file__))]
    packages = ([] if installed else jobs.requirements()) + staged.model_packages + list(pip or [])
    if packages:
        env["pip"] = {"packages": packages, "pip_check": False}
    if env_vars:
        env["env_vars"] = dict(env_vars)
    return env


def describe(address: str, runtime_env: dict, entrypoint: str, staged: Staged, file=sys.stdout) -> None:
    """What is submitted, with environment variable values left out."""
    print(f"[launcher] job API:     {address}", file=file)
    print(f"[launcher] entrypoint:  {entrypoint}", file=file)
    print(f"[launcher] working_dir: {size(staged.bytes)} (config" + "".join(f", {k}" for k in staged.files) + ")", file=file)
    if "py_modules" in runtime_env:
        print(f"[launcher] py_modules:  {', '.join(runtime_env['py_modules'])}", file=file)
    if "pip" in runtime_env:
        print(f"[launcher] pip:         {' '.join(runtime_env['pip']['packages'])}", file=file)
    if runtime_env.get("env_vars"):
        print(f"[launcher] env_vars:    {', '.join(sorted(runtime_env['env_vars']))} (values not shown)", file=file)


# ---------------------------------------------------------------------- cluster checks


# ---------------------------------------------------------------------- following a job


