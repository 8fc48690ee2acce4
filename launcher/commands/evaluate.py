"""`launcher evaluate CONFIG --model DIR`: score an exported model on a config's validation (or test) data.

Runs in this process with plain Lightning (no Ray): an exported folder is an ordinary Hugging Face
model, and scoring it should not need a cluster.
"""

from __future__ import annotations

import json
import os

from launcher import storage
from launcher.config import Config
from launcher.config.parsing import Flag, parse_command, print_config
from launcher.data.sampling import EvalShard
from launcher.errors import ConfigError
from launcher.files import atomic_write
from launcher.model_files import read_export_info
from launcher.tasks import _peft, get_task

FLAGS = {
    "--model": Flag("An exported model folder (default: <output_dir>/best) or its copy in run storage (s3://.../best).",
                    takes=str, metavar="DIR"),
    "--split": Flag("validation or test (default: test when the config has data.test_file).", takes=str, metavar="SPLIT"),
    "--output": Flag("Also write the metrics (JSON) to this file.", takes=str, metavar="FILE"),
}
SPLITS = ("validation", "test")


def main(argv: list[str]) -> int:
    """Score an exported model on a config's validation (or test) data: launcher evaluate CONFIG --model DIR."""
    parsed = parse_command(argv, "launcher evaluate", main.__doc__, FLAGS)
    cfg, flags = parsed.cfg, parsed.flags
    if flags["print_config"]:
        print_config(cfg)
        return 0
    split = flags["split"] or ("test" if cfg.data.test_file else "validation")
    if split not in SPLITS:
        raise ConfigError("--split", f"invalid choice {split!r}", "choose one of: " + ", ".join(SPLITS))
    metrics = run(cfg, flags["model"] or os.path.join(cfg.output_dir, "best"), split)
    text = json.dumps(metrics, indent=2)
    if flags["output"]:
        atomic_write(flags["output"], text + "\n")
    print(text)
    return 0


def run(cfg: Config, model: str, split: str) -> dict:
    """Metrics of the exported model `model` on `split` of the config's data, named `<split>_<metric>`."""
    # lazy: the ML stack loads only once the command line has passed its checks
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    model_dir = storage.local_model(model)
    # An adapter (best/adapter/, or a best/ exported with peft.merge_on_export false) is scored on
    # its base model, as PeftModel.from_pretrained(base, adapter) runs it.
    model_dir = _peft.adapter_folder(model_dir) or model_dir
    info, _ = read_export_info(model_dir)
    cfg.model.name_or_path, cfg.model.tokenizer, cfg.model.gguf_file, cfg.model.from_config = model_dir, None, None, False
    cfg.peft.method = "none"  # the exported weights as they are: no new adapters on top
    task = get_task(cfg.task)(cfg)
    tokenizer = task.load_tokenizer()
    if cfg.data.streaming is True:
        # The training data of a streaming run is a folder, glob or URI only Ray Data reads: read only
        # the scored split (the exported meta has the labels that prepare would take from training).
        path = getattr(cfg.data, f"{split}_file", None)
        if not path:
            raise ConfigError("--split", f"no {split} data in the config", f"set data.{split}_file")
        ds = task.read(f"data.{split}_file", path)
        task.check_split(split, path, ds)
        tokenized, meta = task.prepare({split: ds}, tokenizer, meta=info.get("meta"))
    else:
        splits = task.load()
        if split not in splits:
            raise ConfigError("--split", f"no {split} data in the config", "set data.validation_file or data.test_file")
        tokenized, meta = task.prepare({"train": splits["train"], split: splits[split]}, tokenizer, meta=info.get("meta"))
    module = task.module(meta, tokenizer)
    module.model.eval()
    loader = DataLoader(EvalShard(tokenized[split], 0, 1), batch_size=cfg.train.eval_batch_size_or_default(),
                        collate_fn=task.collator(tokenizer))
    trainer = pl.Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(module, dataloaders=loader, verbose=False)
    prefix = "val" if split == "validation" else split
    return {k.replace("test_", f"{prefix}_", 1): float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test_")}
