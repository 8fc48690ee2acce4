"""`task: tests_pkg.mytask:MyTask`: a user's own Task class named in the YAML, through the real CLI."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import yaml

from tests.helpers.cli import run_cli

HERE = os.path.dirname(os.path.abspath(__file__))
USER_TASK = os.path.join(os.path.dirname(HERE), "helpers", "user_task", "mytask.py")


def with_user_task(project: str, **overrides) -> str:
    """The project's config with `task: tests_pkg.mytask:MyTask`, the package beside it."""
    os.makedirs(os.path.join(project, "tests_pkg"), exist_ok=True)
    open(os.path.join(project, "tests_pkg", "__init__.py"), "w").close()
    shutil.copy(USER_TASK, os.path.join(project, "tests_pkg", "mytask.py"))
    with open(os.path.join(project, "cfg.yaml")) as f:
        cfg = yaml.safe_load(f)
    cfg.update(task="tests_pkg.mytask:MyTask", **overrides)
    with open(os.path.join(project, "user.yaml"), "w") as f:
        f.write("# launcher train user.yaml\n" + yaml.safe_dump(cfg))
    return "user.yaml"


@pytest.mark.parametrize("task, options, needle", [
    ("tests_pkg.nope:MyTask", {}, "task: cannot import tests_pkg.nope: No module named 'tests_pkg.nope'"),
    ("tests_pkg.mytask:Nope", {}, "task: tests_pkg.mytask has no Nope — Task classes there: MyTask"),
    ("tests_pkg.mytask:Options", {}, "task: tests_pkg.mytask:Options is not a launcher.tasks.Task class"),
    ("tests_pkg.mytask:MyTask", {"positve": "pos"}, "task_options.positve: unknown option for task my-task — did you mean task_options.positive?"),
])
def test_bad_user_task_is_one_line_before_ray(project, task, options, needle):
    path = with_user_task(project, task_options=options)
    with open(path) as f:
        cfg = yaml.safe_load(f)
    cfg["task"] = task
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    for command in ("train", "plan"):
        proc = run_cli(command, path, cwd=project, env={"RAY_ADDRESS": ""})
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert needle in lines[0], lines[0]
    assert not os.path.exists(os.path.join(project, "runs")), "nothing ran"


@pytest.mark.ray
def test_user_task_trains_evaluates_predicts_and_plans(project):
    path = with_user_task(project, task_options={"positive": "pos"})
    proc = run_cli("plan", path, "--json", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["task"] == "tests_pkg.mytask:MyTask"

    proc = run_cli("train", path, cwd=project)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = os.path.join(project, "runs", "tiny")
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert results["task"] == "tests_pkg.mytask:MyTask" and results["monitor"] == "val_accuracy"
    assert 0.0 <= results["best_value"] <= 1.0
    with open(os.path.join(out, "best", "launcher.json")) as f:
        info = json.load(f)
    assert info["task"] == "tests_pkg.mytask:MyTask" and info["meta"] == {"positive": "pos"}

    proc = run_cli("evaluate", path, "--model", os.path.join(out, "best"), "--split", "validation", cwd=project)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)
    assert set(metrics) >= {"val_loss", "val_accuracy"}
    assert metrics["val_accuracy"] == pytest.approx(results["best_value"], abs=1e-6)

    with open(os.path.join(project, "in.jsonl"), "w") as f:
        f.write(json.dumps({"text": "a great film"}) + "\n" + json.dumps({"text": "an awful plot"}) + "\n")
    proc = run_cli("predict", "--model", os.path.join(out, "best"), "--input", "in.jsonl", "--output", "p.jsonl", cwd=project)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in open(os.path.join(project, "p.jsonl"))]
    assert [r["text"] for r in rows] == ["a great film", "an awful plot"] and all(isinstance(r["positive"], bool) for r in rows)
