"""A catalogue of bad inputs: each one ends `launcher train` with exit code 2 and ONE line on stderr
that names the key or file and says how to fix it, before Ray starts.

Most cases run in-process through `launcher.__main__.main` (a subprocess per case would import torch
40 times); `test_through_the_real_cli` runs a sample through `python -m launcher` and checks the time.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.data import write_csv, write_jsonl
from launcher.__main__ import main
from launcher.distributed import cluster

SENTIMENT = [
    {"text": "the film was great", "label": "pos"}, {"text": "a dull plot", "label": "neg"},
    {"text": "superb acting", "label": "pos"}, {"text": "boring and poor", "label": "neg"},
    {"text": "lovely story", "label": "pos"}, {"text": "awful movie", "label": "neg"},
]
NER = [
    {"tokens": ["alice", "lives", "in", "paris"], "ner_tags": ["B-PER", "O", "O", "B-LOC"]},
    {"tokens": ["bob", "works", "at", "acme"], "ner_tags": ["B-PER", "O", "O", "B-ORG"]},
]
QA = [
    {"question": "where does alice live ?", "context": "alice lives in paris .", "answers": {"text": ["paris"], "answer_start": [15]}},
    {"question": "who works at acme ?", "context": "bob works at acme .", "answers": {"text": ["bob"], "answer_start": [0]}},
]


@dataclass
class Case:
    """One bad input: `make(tmp, model)` writes what it needs and returns the CLI arguments after `train`."""

    id: str
    make: Callable[[str, str], list]
    key: str  # the key (or file) the one-line error must start with
    needle: str  # a phrase of the message
    patches: dict = field(default_factory=dict)  # launcher.distributed functions replaced for this case
    root_ok: bool = True  # False: the case cannot happen for root (who reads any file)


def _files(tmp: str, train=SENTIMENT, val=SENTIMENT, ext="csv") -> dict:
    write = write_csv if ext == "csv" else write_jsonl
    return {"train": write(os.path.join(tmp, f"train.{ext}"), train), "validation": write(os.path.join(tmp, f"val.{ext}"), val)}


def _yaml(tmp: str, model: str, files: Optional[dict] = None, task: str = "sequence-classification", extra: str = "") -> str:
    files = files or _files(tmp)
    path = os.path.join(tmp, "cfg.yaml")
    with open(path, "w") as f:
        f.write(f"task: {task}\noutput_dir: {tmp}/out\nmodel:\n  name_or_path: {model}\n"
                f"data:\n  train_file: {files['train']}\n  validation_file: {files['validation']}\n  max_length: 32\n"
                f"ray:\n  num_workers: 1\n  cpus_per_worker: 1\nlogging:\n  tensorboard: false\n{extra}")
    return path


def ok(*args: str) -> Callable[[str, str], list]:
    """A valid config plus these overrides."""
    return lambda tmp, model: [_yaml(tmp, model), *args]


def with_yaml(text: str) -> Callable[[str, str], list]:
    """A config file of exactly this text ({tmp}, {model} and {train} filled in)."""
    def make(tmp, model):
        files = _files(tmp)
        path = os.path.join(tmp, "cfg.yaml")
        with open(path, "w") as f:
            f.write(text.format(tmp=tmp, model=model, train=files["train"]))
        return [path]
    return make


def _folder(tmp: str, *names: str) -> str:
    """A folder holding only these (non-data) files."""
    path = os.path.join(tmp, "folder")
    os.makedirs(path, exist_ok=True)
    for name in names:
        with open(os.path.join(path, name), "w") as f:
            f.write("not data\n")
    return path


def with_file(name: str, content, key: str = "--data.train_file", chmod: Optional[int] = None) -> Callable[[str, str], list]:
    """A valid config whose `key` points at a file of this content (str, bytes, or rows for .csv/.jsonl)."""
    def make(tmp, model):
        path = os.path.join(tmp, name)
        if isinstance(content, (str, bytes)):
            with open(path, "wb") as f:
                f.write(content.encode() if isinstance(content, str) else content)
        elif name.endswith(".csv"):
            write_csv(path, content)
        else:
            write_jsonl(path, content)
        if chmod is not None:
            os.chmod(path, chmod)
        return [_yaml(tmp, model), key, path]
    return make


def task_files(task: str, train, val, *args: str) -> Callable[[str, str], list]:
    if task == "question-answering":
        args = ("--task_options.doc_stride", "8", *args)  # below half of data.max_length (32)
    return lambda tmp, model: [_yaml(tmp, model, _files(tmp, train, val, ext="jsonl"), task=task), *args]


def model_folder(kind: str) -> Callable[[str, str], list]:
    def make(tmp, model):
        folder = os.path.join(tmp, "model")
        os.makedirs(folder)
        if kind == "no-tokenizer":  # weights and config.json, no tokenizer files
            import shutil

            for name in os.listdir(model):
                if name in ("config.json", "model.safetensors"):
                    shutil.copy(os.path.join(model, name), folder)
        return [_yaml(tmp, folder)]
    return make


def existing_output(kind: str) -> Callable[[str, str], list]:
    def make(tmp, model):
        os.makedirs(os.path.join(tmp, "out"))
        with open(os.path.join(tmp, "out", "results.json"), "w") as f:
            json.dump({}, f)
        return [_yaml(tmp, model)] + (["--resume"] if kind == "resume" else [])
    return make


def _rows(n, **change):
    rows = [dict(r) for r in SENTIMENT[:n]]
    for i, values in change.items():
        rows[int(i[1:])].update(values)
    return rows


TWO_NODES = {"CPU": 2.0, "node:10.0.0.1": 1.0, "node:10.0.0.2": 1.0}

CASES = [
    # ------------------------------------------------------------------ config: keys, choices, types
    Case("unknown-key-yaml", with_yaml("model: {{name_or_path: {model}}}\ndata:\n  trian_file: {train}\n"),
         "data.trian_file", "did you mean data.train_file?"),
    Case("unknown-key-flag", ok("--optim.lrr", "1e-4"), "optim.lrr", "did you mean optim.lr?"),
    Case("unknown-section", with_yaml("model: {{name_or_path: {model}}}\ntrainer:\n  max_epochs: 2\n"), "trainer", "did you mean"),
    Case("unknown-task", ok("--task", "sentiment"), "task", "choose one of: "),
    Case("unknown-task-option", ok("--task_options.regresion", "true"), "task_options.regresion", "did you mean task_options.regression?"),
    Case("invalid-choice-optimizer", ok("--optim.name", "sgd"), "optim.name", "choose one of: adamw, adafactor"),
    Case("invalid-choice-scheduler", ok("--scheduler.name", "step"), "scheduler.name", "choose one of: linear, cosine"),
    Case("invalid-choice-strategy", ok("--ray.strategy", "horovod"), "ray.strategy", "choose one of: ddp, fsdp, deepspeed"),
    Case("invalid-choice-precision", ok("--train.precision", "8-bit"), "train.precision", "choose one of: "),
    Case("invalid-choice-mode", ok("--checkpoint.mode", "maximize"), "checkpoint.mode", "choose one of: min, max"),
    Case("wrong-type-optional-int", ok("--data.max_train_samples", "lots"), "data.max_train_samples", "expected int or null"),
    Case("wrong-type-int", ok("--train.batch_size", "many"), "train.batch_size", "expected int"),
    Case("wrong-type-float-yaml", with_yaml("model: {{name_or_path: {model}}}\ndata: {{train_file: {train}}}\noptim: {{lr: fast}}\n"),
         "optim.lr", "expected float"),
    Case("wrong-type-bool", ok("--ray.use_gpu", "maybe"), "ray.use_gpu", "expected bool"),
    Case("yaml-syntax-error", with_yaml("task: sequence-classification\noptim:\n  lr: [1\n  name: adamw\n"), "{tmp}/cfg.yaml",
         "YAML syntax error at line 4"),
    Case("yaml-not-a-mapping", with_yaml("- task\n- model\n"), "{tmp}/cfg.yaml", "must be a YAML mapping"),
    Case("config-file-missing", lambda tmp, model: [os.path.join(tmp, "nope.yaml")], "CONFIG", "config file not found"),
    Case("model-required", with_yaml("data: {{train_file: {train}}}\n"), "model.name_or_path", "is required"),
    Case("train-file-required", with_yaml("model: {{name_or_path: {model}}}\n"), "data.train_file", "is required"),
    # ------------------------------------------------------------------ config: ranges
    Case("lr-zero", ok("--optim.lr", "0"), "optim.lr", "must be > 0"),
    Case("lr-negative", ok("--optim.lr=-1e-4"), "optim.lr", "must be > 0"),
    Case("warmup-ratio-one", ok("--scheduler.warmup_ratio", "1.0"), "scheduler.warmup_ratio", "must be in [0, 1)"),
    Case("warmup-ratio-negative", ok("--scheduler.warmup_ratio", "-0.1"), "scheduler.warmup_ratio", "must be in [0, 1)"),
    Case("accumulation-zero", ok("--train.accumulate_grad_batches", "0"), "train.accumulate_grad_batches", "must be >= 1"),
    Case("workers-zero", ok("--ray.num_workers", "0"), "ray.num_workers", "must be >= 1"),
    Case("batch-size-zero", ok("--train.batch_size", "0"), "train.batch_size", "must be >= 1"),
    Case("epochs-zero", ok("--train.max_epochs", "0"), "train.max_epochs", "must be >= 1"),
    Case("validation-split-above-one", ok("--data.validation_split", "1.5"), "data.validation_split", "must be in (0, 1)"),
    Case("cpus-per-worker-zero", ok("--ray.cpus_per_worker", "0"), "ray.cpus_per_worker", "must be > 0"),
    Case("checkpoint-every-zero", ok("--checkpoint.every_n_steps", "0"), "checkpoint.every_n_steps", "must be >= 1"),
    Case("max-length-above-positions", ok("--data.max_length", "4096"), "data.max_length", "above the model's 128 positions"),
    Case("fsdp-on-cpu", ok("--ray.strategy", "fsdp"), "ray.strategy", "fsdp needs GPUs"),
    # ------------------------------------------------------------------ secrets
    Case("secret-uri-password", ok("--logging.mlflow_tracking_uri", "https://bob:hunter2@mlflow.example.com"),
         "logging.mlflow_tracking_uri", "MLFLOW_TRACKING_PASSWORD"),
    Case("secret-hf-token", ok("--model.tokenizer", "hf_" + "a1B2c3D4e5" * 4), "model.tokenizer", "HF_TOKEN"),
    Case("secret-storage-key", ok("--ray.storage_path", "s3://bucket/runs?access_key=AKIAABCDEFGHIJKLMNOP&secret_key=x"),
         "ray.storage_path", "AWS_SECRET_ACCESS_KEY"),
    # ------------------------------------------------------------------ data files
    Case("train-file-missing", ok("--data.train_file", "missing.csv"), "data.train_file", "file not found: missing.csv"),
    Case("validation-file-missing", ok("--data.validation_file", "missing.csv"), "data.validation_file", "file not found"),
    Case("file-empty", with_file("empty.csv", ""), "data.train_file", "file is empty"),
    Case("file-header-only", with_file("header.csv", "text,label\n"), "data.train_file", "no examples in"),
    Case("file-unknown-type", with_file("data.xlsx", "x"), "data.train_file", "unknown file type"),
    Case("file-not-utf8", with_file("latin1.csv", "text,label\ncaf\xe9 tr\xe8s bon,pos\nmauvais,neg\n".encode("latin-1")),
         "data.train_file", "'utf-8' codec can't decode"),
    Case("file-unreadable", with_file("locked.csv", SENTIMENT, chmod=0), "data.train_file", "file is not readable", root_ok=False),
    Case("folder-not-a-dataset", lambda tmp, model: [_yaml(tmp, model), "--data.train_file", _folder(tmp, "notes.md")],
         "data.train_file", "no data files match"),  # a folder of data files streams (data.streaming auto)
    Case("json-lines-malformed", with_file("bad.jsonl", '{"text": "good", "label": "pos"}\n{"text": "bad", "label": \n'),
         "data.train_file", "line 2: invalid JSON"),
    Case("column-missing-lists-present", ok("--data.text_column", "review"), "data.text_column", "present columns: text, label"),
    Case("label-column-missing", ok("--data.label_column", "sentiment"), "data.label_column", "present columns: text, label"),
    Case("text-cell-empty", with_file("t.csv", _rows(6, r3={"text": ""})), "data.text_column", "row 4: empty 'text'"),
    Case("label-cell-empty", with_file("t.csv", _rows(6, r1={"label": ""})), "data.label_column", "row 2: empty 'label'"),
    Case("validation-label-unseen", with_file("v.csv", _rows(6, r2={"label": "neutral"}), "--data.validation_file"),
         "data.validation_file", "labels not seen in training: neutral"),
    Case("single-label", with_file("t.csv", [dict(r, label="pos") for r in SENTIMENT]), "data.label_column", "only one label"),
    Case("ner-length-mismatch", task_files("token-classification", [NER[0], dict(NER[1], ner_tags=["B-PER", "O"])], NER),
         "data.train_file", "row 2: 4 words but 2 tags"),
    Case("ner-validation-tag-unseen", task_files("token-classification", NER, [dict(NER[0], ner_tags=["B-PER", "O", "O", "B-MISC"])]),
         "data.validation_file", "tags not seen in training: B-MISC"),
    Case("qa-answer-not-at-start", task_files("question-answering", [QA[0], dict(QA[1], answers={"text": ["bob"], "answer_start": [3]})], QA),
         "data.train_file", "answer 'bob' is not at answer_start 3"),
    Case("qa-column-missing", task_files("question-answering", [{k: v for k, v in q.items() if k != "context"} for q in QA], QA),
         "task_options.context_column", "present columns: question, answers"),
    Case("qa-answers-column-missing", task_files("question-answering", [{k: v for k, v in q.items() if k != "answers"} for q in QA], QA),
         "task_options.answers_column", "present columns: question, context"),
    # ------------------------------------------------------------------ model
    Case("model-folder-missing", ok("--model.name_or_path", "/no/such/model"), "model.name_or_path", "model folder not found"),
    Case("model-folder-empty", model_folder("empty"), "model.name_or_path", "cannot load a model config"),
    Case("model-without-tokenizer", model_folder("no-tokenizer"), "model.name_or_path", "tokenizer"),
    # ------------------------------------------------------------------ resources (no ray.address: this machine)
    Case("gpu-absent", ok("--ray.use_gpu", "true"), "ray.use_gpu", "this machine has no GPUs"),
    Case("tpu-absent", ok("--ray.accelerator", "tpu"), "ray.accelerator", "tpu"),
    Case("more-cpus-than-machine", ok("--ray.num_workers", str(4 * (os.cpu_count() or 1))), "ray.num_workers", "CPUs"),
    # Needs the cluster's view, so it comes right after joining it: Ray's init is simulated here.
    Case("local-storage-two-nodes", ok("--ray.address", "auto"), "ray.storage_path", "the cluster has 2 nodes",
         patches={"init_ray": lambda cfg, **kw: None, "cluster_resources": lambda: dict(TWO_NODES)}),
    # ------------------------------------------------------------------ output_dir and --resume
    Case("output-dir-not-empty", existing_output("plain"), "output_dir", "pass --overwrite"),
    Case("resume-without-run", existing_output("resume"), "--resume", "no earlier run to resume"),
]


# The data and model cases: each is found by the cheap checks before torch, transformers or datasets load.
DATA_MODEL_CASES = [
    "train-file-missing", "validation-file-missing", "file-empty", "file-header-only", "file-unknown-type", "file-not-utf8",
    "file-unreadable", "folder-not-a-dataset", "json-lines-malformed", "column-missing-lists-present", "label-column-missing",
    "text-cell-empty", "label-cell-empty", "validation-label-unseen", "single-label", "ner-length-mismatch",
    "ner-validation-tag-unseen", "qa-answer-not-at-start", "qa-column-missing", "qa-answers-column-missing",
    "model-folder-missing", "model-folder-empty", "model-without-tokenizer", "max-length-above-positions",
]


def test_catalogue_is_large():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tiny_bert, tmp_path, capsys, monkeypatch):


    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started before the bad input was reported")

    if not case.root_ok and os.geteuid() == 0:
        pytest.skip("root reads files regardless of their permissions")
    monkeypatch.setattr(cluster, "init_ray", case.patches.get("init_ray", no_ray))
    if "cluster_resources" in case.patches:
        monkeypatch.setattr(cluster, "cluster_resources", case.patches["cluster_resources"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    argv = case.make(str(tmp_path), tiny_bert)
    code = main(["train", *argv])
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith(f"launcher train: error: {case.key.format(tmp=tmp_path)}"), line
    assert case.needle in line, line
    assert " — " in line, f"no fix given: {line}"


# Through the real CLI, timed: config, file, data and model errors are all found before torch,
# transformers or datasets are imported (launcher.tasks.precheck): under 2 s of CPU each.
CLI_SAMPLE = {cid: 2.0 for cid in ["lr-zero", "unknown-key-flag", "gpu-absent", "more-cpus-than-machine", "resume-without-run",
                                   *DATA_MODEL_CASES]}


@pytest.mark.parametrize("case_id", list(CLI_SAMPLE))
def test_through_the_real_cli(case_id, tiny_bert, tmp_path):
    import resource

    case = next(c for c in CASES if c.id == case_id)
    if not case.root_ok and os.geteuid() == 0:
        pytest.skip("root reads files regardless of their permissions")
    argv = case.make(str(tmp_path), tiny_bert)
    files_before = sorted(str(p) for p in tmp_path.rglob("*"))
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    proc = run_cli("train", *argv, cwd=str(tmp_path), env={"RAY_ADDRESS": ""})
    wall = time.time() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - cpu_before.ru_utime) + (after.ru_stime - cpu_before.ru_stime)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"launcher train: error: {case.key}") and case.needle in lines[0]
    assert sorted(str(p) for p in tmp_path.rglob("*")) == files_before, "nothing is written for a bad input"
    # CPU time is what the command costs; wall time also measures everyone else on a shared machine,
    # so it is held to the bound only when the machine is not overloaded.
    bound = CLI_SAMPLE[case_id]
    assert cpu < bound, (case_id, cpu)
    if os.getloadavg()[0] < (os.cpu_count() or 1):
        assert wall < bound, (case_id, wall)


def test_debug_shows_the_traceback(tiny_bert, tmp_path):
    case = next(c for c in CASES if c.id == "text-cell-empty")
    proc = run_cli("train", *case.make(str(tmp_path), tiny_bert), "--debug", cwd=str(tmp_path))
    assert proc.returncode == 2
    assert "Traceback (most recent call last)" in proc.stderr and "row 4: empty 'text'" in proc.stderr
