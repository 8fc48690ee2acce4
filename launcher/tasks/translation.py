"""translation: source language → target language with a seq2seq model (AutoModelForSeq2SeqLM).

Data, either:
- two columns: data.source_column and data.target_column; or
- a `translation` column holding a dict per row, `{"en": "...", "fr": "..."}` (the layout of WMT/OPUS
  datasets), with task_options.source_lang and task_options.target_lang naming the keys.
task_options.source_prefix is put before every source (T5: "translate English to French: ").

Validation computes the loss every time and generates every `generate_every_n_epochs` epochs (the
test split always generates). Metric: sacreBLEU (torchmetrics SacreBLEUScore, 13a tokenisation, no
download) on a 0–1 scale, computed on the generated texts gathered from all workers; gen_len; and
`generated` (examples generated: the split's size).

Transformers 5 has no translation pipeline; the exported folder loads with
AutoModelForSeq2SeqLM/AutoTokenizer and its generation_config.json holds the beams and length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import nn

from launcher.errors import ConfigError
from launcher.tasks import _seq2seq as seq2seq


@dataclass
class Options(seq2seq.GenerationOptions):
    source_lang: Optional[str] = None
    """Key of the source text in the `translation` dict column (e.g. en)."""
    target_lang: Optional[str] = None
    """Key of the target text in the `translation` dict column (e.g. fr)."""


class Translation(seq2seq.Seq2SeqTask):
    name = "translation"
    default_monitor = "val_bleu"
    Options = Options
    text_metric_names = ("bleu",)

    @property
    def dict_mode(self) -> bool:
        """True when texts come from the `translation` dict column."""
        return not self.cfg.data.source_column

    def sources(self, batch) -> list[str]:
        if self.dict_mode:
            return [row[self.options.source_lang] for row in batch["translation"]]
        return batch[self.cfg.data.source_column]

    def targets(self, batch) -> Optional[list[str]]:
        if self.dict_mode:
            return [row.get(self.options.target_lang) for row in batch["translation"]] if "translation" in batch else None
        return batch.get(self.cfg.data.target_column)

    def check_split(self, split, path, ds) -> None:
        d, o = self.cfg.data, self.options
        if not self.dict_mode:
            if not d.target_column and split != "predict":
                raise ConfigError("data.target_column", "is required with data.source_column", "name the column with the translations")
            super().check_split(split, path, ds)  # the columns (launcher.tasks.precheck)
            return
        if "translation" not in ds.column_names:
            raise ConfigError("data.source_column", f"no source column set and no 'translation' column in {path}",
                              "set data.source_column/data.target_column, or give rows like {\"translation\": {\"en\": ..., \"fr\": ...}}")
        if not o.source_lang or not o.target_lang:
            raise ConfigError("task_options.source_lang", "a 'translation' column needs task_options.source_lang and target_lang",
                              "e.g. --task_options.source_lang en --task_options.target_lang fr")
        langs = [o.source_lang] + ([o.target_lang] if split != "predict" else [])
        for i, row in enumerate(ds["translation"]):
            for lang in langs:
                text = (row or {}).get(lang)
                if not isinstance(text, str) or not text.strip():
                    which = "source_lang" if lang == o.source_lang else "target_lang"
                    raise ConfigError(f"task_options.{which}", f"{path} row {i + 1}: no {lang!r} text in 'translation'"
                                      + (f" (keys: {', '.join(sorted(row))})" if row else ""), "fill or drop that row")

    # ---------------------------------------------------------------- metrics (used by Seq2SeqModule)
    def text_metrics(self) -> nn.ModuleDict:
        from torchmetrics.text import SacreBLEUScore

        return nn.ModuleDict({"bleu": SacreBLEUScore(tokenize="13a", sync_on_compute=False)})

    def update_text_metrics(self, metrics, preds: list[str], refs: list[str]) -> None:
        metrics["bleu"].update(preds, [[r] for r in refs])

    def text_metric_values(self, metrics) -> dict[str, float]:
        return {"bleu": float(metrics["bleu"].compute())}

    def predict(self, model_dir, ds, options):
        sources = list(self.sources(ds[:]))
        outputs = seq2seq.generate_batches(model_dir, sources, options, self.options)
        return [{"source": s, "translation_text": t} for s, t in zip(sources, outputs)]
