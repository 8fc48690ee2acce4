"""Task registry: task name → "module:Class". One file per task; adding a task is one file + one line.

Kept as strings so that `launcher --help` and config validation import nothing heavy. A config may
also name its own Task subclass by import path (`task: my_pkg.my_task:MyTask`, docs/custom-tasks.md).
"""

from __future__ import annotations

import difflib
import importlib

from launcher.errors import ConfigError
from launcher.resolve import import_object

TASKS: dict[str, str] = {
    "sequence-classification": "launcher.tasks.sequence_classification:SequenceClassification",
    "token-classification": "launcher.tasks.token_classification:TokenClassification",
    "question-answering": "launcher.tasks.question_answering:QuestionAnswering",
    "base": "launcher.tasks.base:BaseTask",
    "language-modeling": "launcher.tasks.language_modeling:LanguageModeling",
    "pretraining": "launcher.tasks.pretraining:Pretraining",
    "summarization": "launcher.tasks.summarization:Summarization",
    "translation": "launcher.tasks.translation:Translation",
}


# Built-in tasks whose training data does not stream through Ray Data (data.streaming), and why.
# Streaming tasks implement Task.stream_columns / stream_meta / encoder (docs/streaming.md).
NO_STREAMING: dict[str, str] = {
    "question-answering": "a long context becomes several overlapping windows whose offsets evaluation maps back to the "
                          "answer text; windowing inside a stream would change the example count per row, so exact step counts need a full pass",
    "pretraining": "masked/causal pretraining packs and masks whole texts with a data collator fitted to the corpus; not written for a stream",
    "token-classification": "not written for a stream yet (CoNLL files are read line by line on the driver)",
    "language-modeling": "not written for a stream yet (packing into data.block_size blocks within the stream is left)",
    "summarization": "not written for a stream yet",
    "translation": "not written for a stream yet",
    "base": "not written for a stream yet",
}


def check_streams(name: str) -> None:
    """A built-in task that cannot stream: ConfigError naming data.streaming (user tasks are checked by their hooks)."""
    if name in NO_STREAMING:
        raise ConfigError("data.streaming", f"task {name} does not stream: {NO_STREAMING[name]}", "set --data.streaming false")


def is_user_task(name: str) -> bool:
    """`package.module:Class` names a user's own Task subclass."""
    return ":" in name


def check_name(name: str) -> None:
    """A built-in task name or an import path; cheap (imports nothing)."""
    if name in TASKS or is_user_task(name):
        return
    close = difflib.get_close_matches(name, list(TASKS), n=1)
    raise ConfigError("task", f"unknown task {name!r}", (f"did you mean {close[0]}? " if close else "")
                      + "choose one of: " + ", ".join(sorted(TASKS)) + ", or your own Task class as package.module:Class")


def get_task(name: str):
    """The Task class of a built-in task name or of a user's `package.module:Class`."""
    check_name(name)
    if name in TASKS:
        module, cls = TASKS[name].split(":")
        return getattr(importlib.import_module(module), cls)
    from launcher.tasks.core import Task  # lazy: imports torch and Lightning

    return import_object(name, "task", base=Task, example="e.g. task: my_pkg.my_task:MyTask")


def __getattr__(name: str):
    # `from launcher.tasks import Task, TaskModule`: the public bases, imported on first use (torch, Lightning).
    if name in ("Task", "TaskModule", "PadCollator"):
        from launcher.tasks import core

        return getattr(core, name)
    raise AttributeError(f"module 'launcher.tasks' has no attribute {name!r}")
