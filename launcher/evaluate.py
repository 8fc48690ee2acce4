"""`launcher evaluate` (config + exported model → metrics) and `launcher predict` (model + file → predictions).

Both run in this process with plain Lightning / transformers (no Ray): an exported folder is an
ordinary Hugging Face model, and scoring it should not need a cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from launcher import config as config_lib
from launcher import storage
from launcher.config import ConfigError


def load_exported(model_dir: str) -> tuple[dict, config_lib.Config]:
    """launcher.json + the resolved config saved beside an exported model."""
    import yaml

    if not os.path.isdir(model_dir):
        raise ConfigError("--model", f"model folder not found: {model_dir}", "give the best/ folder of a run")
    info_path = os.path.join(model_dir, "launcher.json")
    if not os.path.exists(info_path):
        raise ConfigError("--model", f"{model_dir} was not exported by launcher (no launcher.json)", "give the best/ folder of a run")
    with open(info_path) as f:
        info = json.load(f)
    with open(os.path.join(model_dir, "launcher_config.yaml")) as f:
        cfg = config_lib.from_dict(yaml.safe_load(f))
    return info, cfg


def main(argv: list[str]) -> int:
    """launcher evaluate CONFIG --model DIR [--split validation|test] [--output FILE]."""
    import lightning.pytorch as pl

    from launcher import cli
    from launcher.data import EvalShard
    from launcher.tasks import get_task

    extra = {"--model": None, "--split": None, "--output": None}
    values, argv = _pop_options(argv, extra)
    cfg, flags = cli.parse(argv, "launcher evaluate", "Score an exported model (--model DIR) on the config's data.")
    if flags["print_config"]:
        cli.print_config(cfg)
        return 0
    model_dir = storage.local_model(values["--model"] or os.path.join(cfg.output_dir, "best"))
    info, _ = load_exported(model_dir)
    split = values["--split"] or ("test" if cfg.data.test_file else "validation")
    cfg.model.name_or_path, cfg.model.tokenizer, cfg.model.gguf_file, cfg.model.from_config = model_dir, None, None, False
    task = get_task(cfg.task)(cfg)
    tokenizer = task.load_tokenizer()
    splits = task.load()
    if split not in splits:
        raise ConfigError("--split", f"no {split} data in the config", "set data.validation_file or data.test_file")
    tokenized, meta = task.prepare({"train": splits["train"], split: splits[split]}, tokenizer, meta=info.get("meta"))
    module = task.module(meta, tokenizer)
    module.model.eval()
    from torch.utils.data import DataLoader

    loader = DataLoader(EvalShard(tokenized[split], 0, 1), batch_size=cfg.train.eval_batch_size or cfg.train.batch_size * 2,
                        collate_fn=task.collator(tokenizer))
    trainer = pl.Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(module, dataloaders=loader, verbose=False)
    metrics = {k.replace("test_", f"{'val' if split == 'validation' else split}_", 1): float(v)
               for k, v in trainer.callback_metrics.items() if k.startswith("test_")}
    text = json.dumps(metrics, indent=2)
    if values["--output"]:
        from launcher.export import atomic_write

        atomic_write(values["--output"], text + "\n")
    print(text)
    return 0


def predict_main(argv: list[str]) -> int:
    """launcher predict --model DIR --input FILE --output FILE [--batch-size N] [--option k=v ...]."""
    from launcher.data import read_file
    from launcher.export import atomic_write
    from launcher.tasks import get_task

    p = argparse.ArgumentParser(prog="launcher predict", description=predict_main.__doc__)
    p.add_argument("--model", required=True, help="An exported model folder (<output_dir>/best) or its copy in run storage (s3://.../best).")
    p.add_argument("--input", required=True, help="Input file (.csv/.json/.jsonl/.parquet/.txt) with the training text column(s).")
    p.add_argument("--output", required=True, help="Where to write predictions (.jsonl, one object per input row).")
    p.add_argument("--batch-size", type=int, default=32, help="Examples per batch.")
    p.add_argument("--device", type=int, default=-1, help="GPU index, -1 for CPU.")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="Task-specific prediction options, e.g. max_new_tokens=50, temperature=0.7, top_p=0.9, num_beams=4.")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing output file.")
    p.add_argument("--debug", action="store_true", help="Show tracebacks.")
    args = p.parse_args(argv)
    if os.path.exists(args.output) and not args.overwrite:
        raise ConfigError("--output", f"{args.output} exists", "pass --overwrite or choose another file")
    args.model = storage.local_model(args.model)  # s3:// / gs:// URIs: a temporary local copy
    info, cfg = load_exported(args.model)
    task = get_task(info["task"])(cfg)
    ds = task.read("--input", args.input)
    task.check_split("predict", args.input, ds)
    options = {"batch_size": args.batch_size, "device": args.device}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError("--option", f"expected KEY=VALUE, got {item!r}", "e.g. --option max_new_tokens=50")
        import yaml

        options[key] = yaml.safe_load(value)
    rows = task.predict(args.model, ds, options)
    atomic_write(args.output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"[launcher] wrote {len(rows)} predictions to {args.output}", file=sys.stderr)
    return 0


def _pop_options(argv: list[str], names: dict) -> tuple[dict, list[str]]:
    values, rest, i = dict(names), [], 0
    while i < len(argv):
        key, eq, value = argv[i].partition("=")
        if key in names:
            if not eq:
                if i + 1 >= len(argv):
                    raise ConfigError(key, "needs a value")
                value = argv[i + 1]
                i += 1
            values[key] = value
        else:
            rest.append(argv[i])
        i += 1
    return values, rest
