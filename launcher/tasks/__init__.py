"""Task registry: task name → "module:Class". One file per task; adding a task is one file + one line.

Kept as strings so that `launcher --help` and config validation import nothing heavy.
"""

from __future__ import annotations

import importlib

TASKS: dict[str, str] = {
    "sequence-classification": "launcher.tasks.sequence_classification:SequenceClassification",
    "token-classification": "launcher.tasks.token_classification:TokenClassification",
    "question-answering": "launcher.tasks.question_answering:QuestionAnswering",
    "base": "launcher.tasks.base_head:BaseTask",
    "language-modeling": "launcher.tasks.language_modeling:LanguageModeling",
    "pretraining": "launcher.tasks.pretraining:Pretraining",
    "summarization": "launcher.tasks.summarization:Summarization",
    "translation": "launcher.tasks.translation:Translation",
}


def get_task(name: str):
    """The Task class registered under `name`."""
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)
