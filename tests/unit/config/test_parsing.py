"""launcher.config.parsing: help, --print-config, overrides, the one-line errors, before anything heavy runs."""

from __future__ import annotations

import time

import pytest
import yaml

from launcher.config import values as schema_values
from launcher.__main__ import main

from tests.helpers.cli import run_cli


def write_cfg(tmp_path, text: str) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return str(path)


def test_help_lists_every_key_with_doc_and_default(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for key in schema_values.all_keys():
        field_is_section = "." not in key and key not in ("task", "output_dir", "task_options")
        if not field_is_section:
            assert f"--{key}" in out, key
    assert "Peak learning rate" in out  # attribute docstrings become help text
    assert "default: 5e-05" in out


def test_top_level_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "evaluate" in out and "predict" in out


def test_overrides_and_print_config(tmp_path, capsys):
    path = write_cfg(tmp_path, "task: sequence-classification\nmodel: {name_or_path: m}\noptim: {lr: 0.001}\n")
    assert main(["train", path, "--optim.lr", "3e-4", "--ray.num_workers", "4", "--task_options.regression", "true",
                 "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["optim"]["lr"] == 3e-4
    assert printed["ray"]["num_workers"] == 4
    assert printed["task_options"] == {"regression": True}
    assert printed["train"]["batch_size"] == 16  # defaults filled in


@pytest.mark.parametrize("args,needle", [
    (["--optim.lrr", "1"], "optim.lrr: unknown key — did you mean optim.lr?"),
    (["--optim.name", "sgd"], "optim.name: invalid choice 'sgd' — choose one of: adamw, adafactor"),
    (["--train.batch_size", "many"], "train.batch_size: expected int"),
    (["--scheduler.name", "step"], "choose one of: linear, cosine, cosine_w_restarts, polynomial, constant"),
])
def test_parse_errors_are_one_line(tmp_path, capsys, args, needle):
    path = write_cfg(tmp_path, "model: {name_or_path: m}\n")
    assert main(["train", path, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err
    assert len(err.splitlines()) == 1


def test_unknown_key_in_yaml_suggests_closest(tmp_path, capsys):
    path = write_cfg(tmp_path, "data:\n  trian_file: x.csv\n")
    assert main(["train", path]) == 2
    assert "data.trian_file: unknown key — did you mean data.train_file?" in capsys.readouterr().err


def test_yaml_syntax_error_names_line(tmp_path, capsys):
    path = write_cfg(tmp_path, "task: sequence-classification\noptim:\n  lr: [1\n  name: adamw\n")
    assert main(["train", path]) == 2
    err = capsys.readouterr().err
    assert "YAML syntax error at line" in err and "cfg.yaml" in err


def test_cli_error_is_fast_and_one_line(tmp_path):
    path = write_cfg(tmp_path, "model: {name_or_path: m}\ndata: {train_file: missing.csv}\n")
    start = time.time()
    proc = run_cli("train", path, "--optim.lr", "-1")
    elapsed = time.time() - start
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["launcher train: error: optim.lr: must be > 0, got -1.0 — typical fine-tuning values are 1e-5 to 1e-4"]
    assert elapsed < 2.0, elapsed


def test_debug_shows_traceback(tmp_path):
    path = write_cfg(tmp_path, "model: {name_or_path: m}\ndata: {train_file: missing.csv}\n")
    proc = run_cli("train", path, "--debug")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "data.train_file: file not found: missing.csv" in proc.stderr
