"""summarization: source text → summary with a seq2seq model (AutoModelForSeq2SeqLM: T5, BART, ...).

Columns: data.source_column (default: data.text_column) and data.target_column (default: summary).
Validation computes the loss every time and generates summaries (task_options.num_beams,
task_options.max_target_length) every `generate_every_n_epochs` epochs; the test split always
generates. Metrics: ROUGE-1/2/L F-measures (torchmetrics ROUGEScore: lower-cased, alphanumeric
tokens, no stemming; needs no download) on a 0–1 scale, computed on the generated texts gathered
from all workers; gen_len; and `generated`, the number of examples generated (the split's size).

Transformers 5 has no summarization pipeline; the exported folder loads with
AutoModelForSeq2SeqLM/AutoTokenizer and its generation_config.json holds the beams and length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import nn

from launcher.tasks import _seq2seq as seq2seq

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


@dataclass
class Options(seq2seq.GenerationOptions):
    pass


class Summarization(seq2seq.Seq2SeqTask):
    name = "summarization"
    default_monitor = "val_rougeL"
    Options = Options
    text_metric_names = ROUGE_KEYS

    @property
    def columns(self) -> tuple[str, str]:
        d = self.cfg.data
        return d.source_column or d.text_column, d.target_column or "summary"

    def sources(self, batch) -> list[str]:
        return batch[self.columns[0]]

    def targets(self, batch) -> Optional[list[str]]:
        return batch.get(self.columns[1])

    # ---------------------------------------------------------------- metrics (used by Seq2SeqModule)
    def text_metrics(self) -> nn.ModuleDict:
        from torchmetrics.text.rouge import ROUGEScore

        return nn.ModuleDict({"rouge": ROUGEScore(rouge_keys=ROUGE_KEYS, sync_on_compute=False)})

    def update_text_metrics(self, metrics, preds: list[str], refs: list[str]) -> None:
        metrics["rouge"].update(preds, refs)

    def text_metric_values(self, metrics) -> dict[str, float]:
        scores = metrics["rouge"].compute()
        return {k: float(scores[f"{k}_fmeasure"]) for k in ROUGE_KEYS}

    def predict(self, model_dir, ds, options):
        sources = list(ds[self.columns[0]])
        summaries = seq2seq.generate_batches(model_dir, sources, options, self.options)
        return [{"source": s, "summary_text": t} for s, t in zip(sources, summaries)]
