"""`launcher tune` CLI: help and search-space errors before Ray starts."""

from __future__ import annotations

import time

from tests.helpers.cli import run_cli


def test_cli_help_lists_the_tune_section():
    proc = run_cli("tune", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--tune.num_samples" in proc.stdout and "--tune.search_space" in proc.stdout and "--resume" in proc.stdout
    proc = run_cli("--help")
    assert "tune" in proc.stdout


def test_cli_rejects_a_bad_search_space_before_ray(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {name_or_path: m}\ndata: {train_file: t.csv}\ntune:\n  search_space:\n    optim.lrr: {loguniform: [1.0e-5, 1.0e-4]}\n")
    start = time.time()
    proc = run_cli("tune", str(path))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["launcher tune: error: tune.search_space.optim.lrr: unknown config key — did you mean optim.lr?"]
    assert time.time() - start < 30
