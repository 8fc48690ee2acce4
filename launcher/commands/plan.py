"""Show what a config would do, without starting Ray: launcher plan CONFIG.yaml [--exact] [--json].

Resources, placement, data sizes, batches and optimizer steps (the same formulas the training
loop uses: launcher.data), warmup, where checkpoints, logs and the export go, and the memory that
weights, gradients and optimizer state take per worker. For configs with a `tune:` section, also
the number of trials and the search space.

By default nothing heavy is imported (no torch, datasets or Ray), so a plan takes about a second:
data rows are counted from the files directly and parameters from the checkpoint's safetensors
header. `--exact` runs the driver's own preparation instead (the task's reader and tokenizer, the
model built on torch's "meta" device): exact for every task, as slow as the start of a real run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Optional

import yaml

from launcher import storage, tasks
from launcher.commands.tune import search_storage
from launcher.config import Config, to_dict
from launcher.config.parsing import Flag, parse_command, print_config
from launcher.config.secrets import redact
from launcher.console import size
from launcher.data.counting import conll_sentences, count_rows, is_conll
from launcher.data.files import SPLIT_KEYS
from launcher.data import sampling, streaming
from launcher.distributed import cluster
from launcher.distributed.memory import Params, checkpoint_params, lora_params, memory_estimate
from launcher.distributed.trainer import worker_resources
from launcher.optim import warmup_steps
from launcher.search.space import parse_space, trial_count, validate_search
from launcher.training.prepare import check, prepare

FLAGS = {
    "--exact": Flag("Read and tokenise the data with the task's own code and build the model on torch's meta device (exact, slower)."),
    "--json": Flag("Print the plan as JSON."),
}

# Tasks that turn each data row into exactly one training example (when the generic reader reads
# the file): their row counts are the training-set sizes and the step numbers are exact.
ROW_TASKS = {"sequence-classification", "token-classification", "summarization", "translation", "base"}
# Why the other tasks' example counts differ from row counts.
DERIVED = {
    "question-answering": "long contexts become several windows (stride) per question",
    "language-modeling": "texts are packed into blocks of data.block_size tokens",
    "pretraining": "texts are packed into blocks of data.block_size tokens",
}

def main(argv: list[str]) -> int:
    """Show resources, data sizes, optimizer steps, paths and memory of a config, without starting Ray."""
    start = time.perf_counter()
    parsed = parse_command(argv, "launcher plan", main.__doc__, FLAGS)
    cfg, flags = parsed.cfg, parsed.flags
    if flags["print_config"]:
        print_config(cfg)
        return 0
    plan = build(cfg, exact=flags["exact"], tune=parsed.is_search)
    plan["plan_seconds"] = round(time.perf_counter() - start, 2)
    if flags["json"]:
        print(json.dumps(plan, indent=2, default=str))
    else:
        print(render(plan))
    return 0


# ---------------------------------------------------------------------- the plan


def build(cfg: Config, exact: bool = False, tune: bool = False) -> dict:
    """Every number of the plan as a dict (what `--json` prints)."""
    decided = check(cfg)
    if tasks.is_user_task(cfg.task):
        # A user's Task: its import path and task_options fail here, as they would in `launcher train`.
        tasks.get_task(cfg.task)(cfg)
    t, r = cfg.train, cfg.ray
    world = r.num_workers
    trainable = None
    stream = stream_plan(cfg, decided)
    if exact and not decided.stream:
        sizes, params, trainable, notes = _exact(cfg)
    else:
        sizes, notes = data_sizes(cfg, stream.get("rows"))
        notes += stream.get("notes", [])
        if exact:
            notes.append("--exact does not read a stream: its rows are counted as above, tokenised by Ray Data when the run starts")
        params = checkpoint_params(cfg)
        if cfg.peft.enabled:
            trainable = lora_params(cfg, params, _model_type(cfg))
    n_train = sizes["train"]
    steps_lib = streaming if decided.stream else sampling
    batches = steps_lib.batches_per_rank(n_train, world, t.batch_size)
    steps_epoch = steps_lib.optimizer_steps_per_epoch(n_train, world, t.batch_size, t.accumulate_grad_batches)
    # train.py runs max_epochs=-1 when max_steps is set: the run ends exactly at max_steps.
    total = t.max_steps if t.max_steps > 0 else steps_epoch * t.max_epochs
    eval_bs = t.eval_batch_size_or_default()
    cpus = _cpus(cfg, tune)
    if decided.stream:
        stream["cpus"] = stream_cpus(cfg, cpus.cpus)
    if cpus.cpus is None:  # auto on a cluster: decided once joined; the other resources are known
        per_worker = worker_resources(_with_cpus(cfg, 1.0))
        per_worker.pop("CPU")
    else:
        per_worker = worker_resources(_with_cpus(cfg, cpus.cpus))
    store = cfg.storage_path()
    name = storage.run_name(cfg)
    out = os.path.abspath(cfg.output_dir)
    resolved = redact(to_dict(cfg))
    if not tune:
        resolved.pop("tune", None)  # `launcher train` ignores it
    plan: dict[str, Any] = {
        "config": resolved,
        "task": cfg.task,
        "resources": {
            "workers": world,
            "per_worker": per_worker,
            "cpus_per_worker": cpus.cpus,
            "cpus_per_worker_why": cpus.why,
            "total": {k: v * world for k, v in per_worker.items()},
            "placement": r.placement_strategy,
            "strategy": r.strategy,
            "accelerator": "tpu" if r.accelerator == "tpu" else ("gpu" if r.use_gpu else "cpu"),
        },
        "data": {
            "sizes": sizes,
            "exact": not notes,
            "notes": notes,
            "streaming": stream,
        },
        "steps": {
            "batch_size_per_worker": t.batch_size,
            "accumulate_grad_batches": t.accumulate_grad_batches,
            "global_batch_size": t.batch_size * world * t.accumulate_grad_batches,
            "batches_per_worker_per_epoch": batches,
            "optimizer_steps_per_epoch": steps_epoch,
            "epochs": t.max_epochs if t.max_steps <= 0 else round(total / steps_epoch, 2),
            "optimizer_steps_total": total,
            "warmup_steps": warmup_steps(cfg.scheduler, total),
            "scheduler": cfg.scheduler.name,
            "eval_batches_per_worker": {s: sampling.batches_per_rank(n, world, eval_bs) for s, n in sizes.items() if s != "train"},
        },
        "paths": {
            "output_dir": out,
            "logs": os.path.join(out, "logs") if (cfg.logging.tensorboard or cfg.logging.csv) else None,
            "ray_storage": storage.redact_uri(store) if storage.is_uri(store) else store,
            "storage_source": "ray.storage_path" if r.storage_path else ("$LAUNCHER_STORAGE" if os.environ.get("LAUNCHER_STORAGE") else "default"),
            "run_dir": storage.redact_uri(storage.join(store, name)),
            "checkpoints": f"{storage.redact_uri(storage.join(store, name))}/checkpoint_* (best {cfg.checkpoint.num_to_keep} by "
                           f"{cfg.checkpoint.monitor or 'the task metric'})",
            "export": os.path.join(out, "best"),
            "export_copy": storage.redact_uri(storage.join(store, name, "best")) if storage.is_uri(store) else None,
            "results": os.path.join(out, "results.json"),
        },
        "memory": memory_estimate(params, t.precision, cfg.optim.name, r.strategy, world, trainable),
    }
    if tune:
        plan["tune"] = tune_plan(cfg, per_worker)

        root, experiment = search_storage(cfg)
        exp_dir = storage.redact_uri(storage.join(root, experiment))
        plan["paths"].update(run_dir=exp_dir, checkpoints=f"{exp_dir}/<trial>/... (each trial's Ray Train run)",
                             results=os.path.join(out, "best.json") + ", trials.csv, search.png", export_copy=None)
    return plan


def _cpus(cfg: Config, tune: bool) -> cluster.CpuChoice:
    """ray.cpus_per_worker as the run will resolve it (launcher.distributed.cluster), without Ray."""
    trials = 1
    if tune and cfg.ray.cpus_per_worker == "auto":
        trials = cluster.auto_trials(cfg, trial_count(cfg, parse_space(cfg)))
    return cluster.cpus_per_worker(cfg, trials=trials)


def _with_cpus(cfg: Config, cpus: float) -> Config:
    return dataclasses.replace(cfg, ray=dataclasses.replace(cfg.ray, cpus_per_worker=cpus))


# ---------------------------------------------------------------------- data sizes


def stream_plan(cfg: Config, decided) -> dict:
    """Whether the training data streams, why, and how its rows are counted."""
    out: dict[str, Any] = {"streams": decided.stream, "reason": decided.reason}
    if not decided.stream:
        return out
    src, d, r = decided.source, cfg.data, cfg.ray
    rows, how, notes = streaming.parquet_rows(src.files), "parquet metadata", []
    if rows is None and src.remote:
        rows, how = 0, "Ray Data count when the run starts (remote files are not read by plan)"
        notes.append("streaming: remote training files are counted by Ray Data when the run starts")
    elif rows is None:
        rows, how = sum(count_rows("data.train_file", f) for f in src.files), "counted from the files here; a run counts with Ray Data"
    if d.max_train_samples:
        rows = min(rows, d.max_train_samples)
    if d.on_bad_rows == "skip":
        notes.append("streaming: data.on_bad_rows skip: a run counts the valid rows with Ray Data (one pass) before training")
    out.update(format=src.format, files=len(src.files), size_mb=round(src.size_mb, 1), rows=rows, rows_from=how,
               shards=f"{r.num_workers} equal shards of {streaming.shard_rows(rows, r.num_workers):,} rows per epoch "
                      f"(Ray Data streaming_split; {rows % r.num_workers} rows left out each epoch)",
               validation="in memory, sharded by launcher (every example scored once)", notes=notes)
    return out


def stream_cpus(cfg: Config, worker_cpus: Optional[float]) -> Any:
    """The CPU split of a streaming run (a split that leaves Ray Data no CPU is refused as in `launcher train`)."""
    r = cfg.ray
    if worker_cpus is None or r.address or os.environ.get("RAY_ADDRESS"):
        return "set when the run joins the cluster (Ray Data keeps data.streaming_cpus, default 1)"
    total = cluster.local_cpus(cfg)[0]
    split = streaming.cpu_split(total, r.num_workers, worker_cpus, streaming.data_cpus(cfg))
    return {"total": total, "per_worker": split.worker_cpus, "ray_data": split.data_cpus}


def data_sizes(cfg: Config, train_rows: Optional[int] = None) -> tuple[dict, list[str]]:
    """Examples per split after validation_split and max_*_samples, as data.load_splits makes them.
    `train_rows`: the training rows of a stream (stream_plan counted them).

    Returns (sizes, notes); notes say why a size is an estimate of the training examples.
    """
    d = cfg.data
    notes = []
    rows = {}
    fmt = (cfg.task_options or {}).get("format")
    for split, key in SPLIT_KEYS.items():
        path = getattr(d, f"{split}_file")
        if not path:
            continue
        if split == "train" and train_rows is not None:
            rows[split] = train_rows
        elif cfg.task == "token-classification" and is_conll(path, fmt):
            rows[split] = conll_sentences(key, path)  # what the task's CoNLL reader makes of it
        else:
            rows[split] = count_rows(key, path)
    sizes = {"train": rows["train"]}
    if "validation" in rows:
        sizes["validation"] = rows["validation"]
    else:
        # datasets' train_test_split: ceil(validation_split * N) rows held out.
        held_out = math.ceil(d.validation_split * rows["train"])
        sizes = {"train": rows["train"] - held_out, "validation": held_out}
    if "test" in rows:
        sizes["test"] = rows["test"]
    if d.max_train_samples:
        sizes["train"] = min(sizes["train"], d.max_train_samples)
    if d.max_eval_samples:
        for split in ("validation", "test"):
            if split in sizes:
                sizes[split] = min(sizes[split], d.max_eval_samples)
    if cfg.task in DERIVED:
        notes.append(f"{cfg.task}: counts are data rows; {DERIVED[cfg.task]} (--exact counts them)")
    elif cfg.task not in ROW_TASKS:
        notes.append(f"{cfg.task}: counts are data rows (--exact counts the task's examples)")
    if any("://" in (getattr(d, f"{s}_file") or "") for s in SPLIT_KEYS if s != "train" or train_rows is None):
        notes.append("remote data files are not read by plan (--exact reads them)")
    return sizes, notes


# ---------------------------------------------------------------------- parameters and memory


def _exact(cfg: Config) -> tuple[dict, Params, Optional[Params], list]:
    """The driver's real preparation (task reader + tokenizer) and the task's model on the meta device.

    Returns (sizes, parameters, trainable parameters when some are frozen (LoRA) else None, notes).
    """
    import torch  # lazy: --exact only

    prepared = prepare(cfg)
    with torch.device("meta"):
        model = prepared.task.build_model(prepared.meta, pretrained=False)
    source = "the task's model built on the meta device (exact)"
    every = list(model.parameters())
    trainable = [p for p in every if p.requires_grad]
    if len(trainable) == len(every):
        return dict(prepared.sizes), Params(sum(p.numel() for p in every), [list(p.shape) for p in every], source), None, []
    # LoRA: the frozen base and the adapters that train, separately (memory_estimate adds them up).
    frozen = [p for p in every if not p.requires_grad]
    return (dict(prepared.sizes), Params(sum(p.numel() for p in frozen), [list(p.shape) for p in frozen], source),
            Params(sum(p.numel() for p in trainable), [list(p.shape) for p in trainable], source + ": adapters and head"), [])


def _model_type(cfg: Config) -> Optional[str]:
    """config.json's model_type of a local model folder (no transformers import), else None."""
    path = os.path.join(cfg.model.name_or_path, "config.json")
    try:
        with open(path) as f:
            return json.load(f).get("model_type")
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------- tune


def tune_plan(cfg: Config, per_worker: dict) -> dict:
    """Trials, concurrency and the search space of `launcher tune` for this config.

    The space is parsed and checked by launcher.search.space itself (a bad space fails here as it would
    there). Trials follow Ray Tune's BasicVariantGenerator: num_samples x every grid combination
    (with search_alg grid, choice values are a grid too).
    """
    tc = cfg.tune
    dims = parse_space(cfg)
    validate_search(cfg, dims)
    trials = trial_count(cfg, dims)
    concurrent = min(trials, tc.max_concurrent_trials) if tc.max_concurrent_trials else trials
    per_trial = {k: v * cfg.ray.num_workers for k, v in per_worker.items()}
    return {
        "trials": trials,
        "num_samples": tc.num_samples,
        "search_alg": tc.search_alg,
        "scheduler": tc.scheduler,
        "metric": tc.metric or cfg.checkpoint.monitor or "the task metric",
        "max_concurrent_trials": tc.max_concurrent_trials,
        "resources_per_trial": per_trial,
        "resources_at_peak": {k: v * concurrent for k, v in per_trial.items()},
        "time_budget_s": tc.time_budget_s,
        "search_space": {d.key: {d.kind: list(d.args)} for d in dims},
        "default_search_space": not tc.search_space,
    }


# ---------------------------------------------------------------------- text


def _res(d: dict) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in d.items())


def render(plan: dict) -> str:
    """The plan as text for people."""
    res, data, st, paths, mem = plan["resources"], plan["data"], plan["steps"], plan["paths"], plan["memory"]
    per, total = _res(res["per_worker"]), _res(res["total"])
    if res["cpus_per_worker"] is None:  # auto on a cluster not joined
        per, total = ", ".join(filter(None, ["CPU auto", per])), ", ".join(filter(None, ["CPU auto", total]))
    lines = ["# resolved config", yaml.safe_dump(plan["config"], sort_keys=False).rstrip(), ""]
    lines += [
        f"task: {plan['task']}",
        "",
        "resources",
        f"  workers:            {res['workers']} x ({per})  = {total} in total",
        f"  cpus per worker:    {'auto' if res['cpus_per_worker'] is None else format(res['cpus_per_worker'], 'g')} "
        f"({res['cpus_per_worker_why']}); torch threads follow it",
        f"  placement:          {res['placement']}; strategy {res['strategy']} on {res['accelerator']}",
        "",
        "data" + ("" if data["exact"] else " (estimates, see notes)"),
    ]
    lines += [f"  {split + ':':<19} {n:,} examples" for split, n in data["sizes"].items()]
    sp = data.get("streaming") or {}
    if sp.get("streams"):
        cpus = sp["cpus"]
        cpu_text = cpus if isinstance(cpus, str) else (
            f"{res['workers']} workers x {cpus['per_worker']:g} + Ray Data {cpus['ray_data']:g} of {cpus['total']:g} CPUs")
        lines += [
            f"  streaming:          yes ({sp['reason']}): {sp['files']} {sp['format']} file(s), {sp['size_mb']:g} MiB, read and "
            "tokenised by Ray Data on the cluster",
            f"  train rows from:    {sp['rows_from']}; {sp['shards']}",
            f"  cpus:               {cpu_text}",
            f"  validation/test:    {sp['validation']}",
        ]
    elif sp:
        lines.append(f"  streaming:          no ({sp['reason']})")
    lines += [f"  note: {n}" for n in data["notes"]]
    evals = ", ".join(f"{s} {n}" for s, n in st["eval_batches_per_worker"].items())
    lines += [
        "",
        "steps",
        f"  batch:              {st['batch_size_per_worker']} per worker x {res['workers']} workers x "
        f"{st['accumulate_grad_batches']} accumulation = {st['global_batch_size']} examples per optimizer step",
        f"  per worker/epoch:   {st['batches_per_worker_per_epoch']} batches -> {st['optimizer_steps_per_epoch']} optimizer steps",
        f"  total:              {st['optimizer_steps_total']} optimizer steps ({st['epochs']} epochs)",
        f"  warmup:             {st['warmup_steps']} steps, then {st['scheduler']}",
        f"  eval per worker:    {evals} batches",
        "",
        "paths",
        f"  output_dir:         {paths['output_dir']}",
        f"  logs:               {paths['logs'] or 'off'}",
        f"  ray storage:        {paths['ray_storage']} ({paths['storage_source']})",
        f"  run:                {paths['run_dir']}",
        f"  checkpoints:        {paths['checkpoints']}",
        f"  export:             {paths['export']}" + (f"  (copy: {paths['export_copy']})" if paths["export_copy"] else ""),
        f"  results:            {paths['results']}",
        "",
        "memory per worker (weights + gradients + optimizer state; activations come on top)",
    ]
    if mem.get("parameters") is None:
        lines.append(f"  parameters:         unknown ({mem['source']})")
    else:
        b = mem["bytes_per_worker"]
        lines += [
            f"  parameters:         {mem['parameters']:,} ({mem['source']})",
            f"  {mem['precision']}, {mem['optimizer']}: weights {size(b['weights'])} + gradients {size(b['gradients'])} + "
            f"optimizer {size(b['optimizer_state'])} = {size(mem['total_bytes_per_worker'])}",
            f"  sharding:           {mem['sharding']}",
        ]
        if "trainable_parameters" in mem:
            lines.insert(-2, f"  trainable:          {mem['trainable_parameters']:,} ({mem['trainable_source']}); "
                             "gradients and optimizer state only for these")
    if "tune" in plan:
        tp = plan["tune"]
        lines += [
            "",
            "tune",
            f"  trials:             {tp['trials']} ({tp['search_alg']} search, {tp['scheduler']} scheduler, metric {tp['metric']})",
            f"  concurrency:        {tp['max_concurrent_trials'] or 'as many as fit'} at a time; "
            f"{_res(tp['resources_per_trial'])} per trial, {_res(tp['resources_at_peak'])} at peak",
            f"  time budget:        {tp['time_budget_s'] or 'none'}",
            "  search space" + (" (launcher tune's default):" if tp["default_search_space"] else ":"),
        ]
        lines += [f"    {k}: {json.dumps(v)}" for k, v in tp["search_space"].items()]
    lines += ["", f"(plan took {plan.get('plan_seconds', 0):.2f}s; nothing was started)"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
