"""`launcher predict --model DIR --input FILE --output FILE`: predictions of an exported model, one
JSON object per input row. Runs in this process (no Ray)."""

from __future__ import annotations

import json
import os
import sys
import tempfile

import yaml

from launcher import storage
from launcher.config.parsing import Flag, parse_command
from launcher.errors import ConfigError
from launcher.export import merge_adapter
from launcher.files import atomic_write
from launcher.model_files import read_export_info
from launcher.tasks import _peft, get_task

FLAGS = {
    "--model": Flag("An exported model folder (<output_dir>/best) or its copy in run storage (s3://.../best).",
                    takes=str, required=True, metavar="DIR"),
    "--input": Flag("Input file (.csv/.json/.jsonl/.parquet/.txt) with the training text column(s).", takes=str, required=True,
                    metavar="FILE"),
    "--output": Flag("Where to write predictions (.jsonl, one object per input row).", takes=str, required=True, metavar="FILE"),
    "--batch-size": Flag("Examples per batch.", takes=int, default=32, metavar="N"),
    "--device": Flag("GPU index, -1 for CPU.", takes=int, default=-1, metavar="N"),
    "--option": Flag("Task-specific prediction options, e.g. max_new_tokens=50, temperature=0.7, top_p=0.9, num_beams=4 "
                     "(repeatable).", takes=str, repeat=True, metavar="KEY=VALUE"),
    "--overwrite": Flag("Replace an existing output file."),
}


def main(argv: list[str]) -> int:
    """Predict with an exported model: launcher predict --model DIR --input FILE --output FILE."""
    args = parse_command(argv, "launcher predict", main.__doc__, FLAGS, config=False).flags
    if os.path.exists(args["output"]) and not args["overwrite"]:
        raise ConfigError("--output", f"{args['output']} exists", "pass --overwrite or choose another file")
    options = {"batch_size": args["batch_size"], "device": args["device"], **parse_options(args["option"])}
    rows = run(args["model"], args["input"], options)

    atomic_write(args["output"], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"[launcher] wrote {len(rows)} predictions to {args['output']}", file=sys.stderr)
    return 0


def parse_options(items: list[str]) -> dict:
    """`KEY=VALUE` pairs, values read as YAML (50 → int, true → bool)."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError("--option", f"expected KEY=VALUE, got {item!r}", "e.g. --option max_new_tokens=50")
        options[key] = yaml.safe_load(value)
    return options


def run(model: str, input_file: str, options: dict) -> list[dict]:
    """One prediction dict per row of `input_file`."""
    # lazy: the ML stack loads only once the command line has passed its checks

    model_dir = storage.local_model(model)  # s3:// / gs:// URIs: a temporary local copy
    adapter = _peft.adapter_folder(model_dir)
    info, cfg = read_export_info(adapter or model_dir)
    task = get_task(info["task"])(cfg)
    ds = task.read("--input", input_file)
    task.check_split("predict", input_file, ds)
    if adapter is None:
        return task.predict(model_dir, ds, options)
    # An adapter folder: merged into its base in a temporary folder, which every task's predict
    # (pipelines, generate) loads like any exported model.

    with tempfile.TemporaryDirectory(prefix="launcher-merged-") as tmp:
        return task.predict(merge_adapter(adapter, tmp), ds, options)
