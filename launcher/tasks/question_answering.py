"""question-answering: extractive QA on SQuAD-style rows (question, context, answers).

Data: JSON/JSONL/Parquet rows with a question, a context and
`answers: {"text": [...], "answer_start": [...]}` (character offsets into the context; several gold
answers allowed, the first one is the training target). Column names: `task_options.question_column`,
`context_column`, `answers_column`. With `task_options.version_2_with_negative: true` (SQuAD v2),
rows with empty answer lists mean "no answer in the context".

Contexts longer than `data.max_length` are split into overlapping windows (`task_options.doc_stride`
tokens of overlap), each a separate feature. A training feature is labelled with the answer's start and
end tokens, or with the CLS token when the answer is not inside that window. Evaluation features keep
the index of their example and the character offsets of their context tokens, so that each window's
best span becomes answer text, and each example's answer is the best span over all its windows (as
Hugging Face's run_qa post-processing does: top `n_best_size` start and end logits, spans of at most
`max_answer_length` tokens; for SQuAD v2 the empty answer wins when the null score beats the best
span's score by more than `null_score_diff_threshold`).

Metrics (SQuAD's official rules, 0–100): exact match and token F1 after normalisation (lowercase,
no punctuation, no articles, single spaces), max over the gold answers; an empty prediction scores
1 against an empty gold answer (SQuAD v2's no-answer).

Distributed evaluation: each rank scores its features and keeps one best span per feature (example
index, character start/end, score) and its null score in a torchmetrics Metric; compute() gathers
those across ranks and picks every example's answer once over all its windows. Contexts and gold
answers of the evaluation splits travel to the workers in `meta` (they are left out of the exported
launcher.json).

Transformers 5 removed the "question-answering" pipeline, so `launcher predict` runs the model and this
same post-processing itself; the exported folder loads with AutoModelForQuestionAnswering.
"""

from __future__ import annotations

import collections
import re
import string
from dataclasses import dataclass
from typing import Optional

import torch
import torchmetrics
from torch import nn

from launcher.data.files import file_of
from launcher.errors import ConfigError
from launcher.tasks.core import PadCollator, Task, TaskModule
from launcher.tasks.precheck import QuestionAnsweringColumns, check_answers

#: eval-feature columns that are not model inputs
SIDE_COLUMNS = ("example_id", "offset_mapping")


@dataclass
class Options(QuestionAnsweringColumns):
    # question_column, context_column, answers_column, version_2_with_negative: launcher.tasks.precheck
    doc_stride: int = 64
    """Tokens of overlap between consecutive windows of a long context."""
    max_answer_length: int = 30
    """Longest answer span considered, in tokens."""
    n_best_size: int = 20
    """Start and end positions (top logits) combined into candidate spans per window."""
    null_score_diff_threshold: float = 0.0
    """SQuAD v2: answer "" when the null score exceeds the best span's score by more than this."""


# ---------------------------------------------------------------------- SQuAD scoring


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lowercase, drop punctuation and the articles a/an/the, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 of normalised answers; two empty answers agree (SQuAD v2's no-answer)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = collections.Counter(pred) & collections.Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: list[str], golds: list[list[str]]) -> dict[str, float]:
    """Mean exact match and F1 (0–100) over examples, each the max over its gold answers ([] = no answer)."""
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    em = f = 0.0
    for pred, gold in zip(predictions, golds):
        gold = gold or [""]
        em += max(exact_match(pred, g) for g in gold)
        f += max(f1(pred, g) for g in gold)
    n = len(predictions)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f / n}


# ---------------------------------------------------------------------- post-processing


def best_span(start_logits: torch.Tensor, end_logits: torch.Tensor, offsets: list, n_best: int, max_answer_length: int):
    """The best valid (score, start_char, end_char) of one window, or None.

    Valid spans start and end on context tokens (offset != (-1, -1)), end >= start, and are at most
    `max_answer_length` tokens long; candidates are the top `n_best` start and end positions.
    """
    n = len(offsets)
    in_context = torch.tensor([o[0] >= 0 for o in offsets], dtype=torch.bool)
    s, e = start_logits[:n].float(), end_logits[:n].float()
    k = min(n_best, n)
    starts = s.topk(k).indices
    ends = e.topk(k).indices
    scores = s[starts][:, None] + e[ends][None, :]
    length = ends[None, :] - starts[:, None]
    valid = (length >= 0) & (length < max_answer_length) & in_context[starts][:, None] & in_context[ends][None, :]
    if not valid.any():
        return None
    scores = scores.masked_fill(~valid, float("-inf"))
    flat = int(scores.argmax())
    i, j = int(starts[flat // k]), int(ends[flat % k])
    return float(scores.flatten()[flat]), int(offsets[i][0]), int(offsets[j][1])


def select_answers(example_ids: list[int], spans: list[tuple[float, int, int]], nulls: list[float], contexts,
                   version_2: bool, threshold: float) -> dict[int, tuple[str, float, float]]:
    """Per example: (answer text, best span score, null score) over all its windows.

    `spans` holds one (score, start_char, end_char) per feature, score -inf when the window had no
    valid span. For SQuAD v2 the null score is the lowest over the example's windows (run_qa's rule).
    """
    best: dict[int, tuple[float, int, int]] = {}
    null: dict[int, float] = {}
    for ex, span, ns in zip(example_ids, spans, nulls):
        null[ex] = min(null.get(ex, float("inf")), ns)
        if span[0] > float("-inf") and (ex not in best or span[0] > best[ex][0]):
            best[ex] = span
    out = {}
    for ex in null:
        score, start, end = best.get(ex, (float("-inf"), 0, 0))
        text = contexts[ex][start:end] if ex in best else ""
        if version_2 and null[ex] - score > threshold:
            text = ""
        out[ex] = (text, score, null[ex])
    return out


class SquadMetric(torchmetrics.Metric):
    """Exact match / F1 over examples, from per-feature best spans gathered across DDP ranks.

    States (all "cat", one row per scored feature): example index, best span's character start/end
    and score, null score. compute() groups the gathered features by example, so an example whose
    windows sit on different ranks is still answered once, from all of them. Contexts and gold
    answers come from `examples` (every rank holds them all).
    """

    full_state_update = False

    def __init__(self, examples: dict, version_2: bool, threshold: float, **kwargs):
        super().__init__(**kwargs)
        self.contexts = examples["context"]
        self.golds = examples["answers"]
        self.version_2, self.threshold = version_2, threshold
        for name in ("example_id", "start_char", "end_char", "score", "null_score"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, example_id: torch.Tensor, start_char: torch.Tensor, end_char: torch.Tensor,
               score: torch.Tensor, null_score: torch.Tensor) -> None:
        self.example_id.append(example_id.long())
        self.start_char.append(start_char.long())
        self.end_char.append(end_char.long())
        self.score.append(score.float())
        self.null_score.append(null_score.float())

    def compute(self) -> dict[str, torch.Tensor]:
        from torchmetrics.utilities import dim_zero_cat

        ids, starts, ends, scores, nulls = (dim_zero_cat(x).tolist() if (not isinstance(x, list) or x) else []
                                            for x in (self.example_id, self.start_char, self.end_char, self.score, self.null_score))
        answers = select_answers([int(i) for i in ids], list(zip(scores, starts, ends)), nulls,
                                 self.contexts, self.version_2, self.threshold)
        order = sorted(answers)
        scores = squad_scores([answers[i][0] for i in order], [list(self.golds[i]) for i in order])
        return {k: torch.tensor(v, dtype=torch.float32) for k, v in scores.items()}


# ---------------------------------------------------------------------- features


def qa_features(tokenizer, questions: list[str], contexts: list[str], max_length: int, stride: int,
                answers: Optional[list] = None, example_ids: Optional[list[int]] = None) -> dict:
    """Tokenise (question, context) pairs into windows of the context.

    With `answers`: start/end token labels (CLS when the answer is outside the window). With
    `example_ids`: each window's example index and its offsets, (-1, -1) on non-context tokens.
    """
    pad_on_right = tokenizer.padding_side == "right"
    # Leading spaces of questions waste window space and break some tokenizers (run_qa strips them).
    questions = [q.lstrip() for q in questions]
    enc = tokenizer(questions if pad_on_right else contexts, contexts if pad_on_right else questions,
                    truncation="only_second" if pad_on_right else "only_first", max_length=max_length, stride=stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True)
    sample = enc.pop("overflow_to_sample_mapping")
    offsets = enc.pop("offset_mapping")
    context_seq = 1 if pad_on_right else 0
    out = {k: list(v) for k, v in enc.items()}
    starts, ends, ex_ids, masked = [], [], [], []
    for i, offs in enumerate(offsets):
        seq = enc.sequence_ids(i)
        ids = enc["input_ids"][i]
        cls = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
        if answers is not None:
            ans = answers[sample[i]]
            start_pos = end_pos = cls
            if ans and ans.get("text"):
                start_char = ans["answer_start"][0]
                end_char = start_char + len(ans["text"][0])
                first = seq.index(context_seq)
                last = len(seq) - 1 - seq[::-1].index(context_seq)
                if offs[first][0] <= start_char and offs[last][1] >= end_char:
                    start_pos = first
                    while start_pos <= last and offs[start_pos][0] <= start_char:
                        start_pos += 1
                    start_pos -= 1
                    end_pos = last
                    while end_pos >= first and offs[end_pos][1] >= end_char:
                        end_pos -= 1
                    end_pos += 1
            starts.append(start_pos)
            ends.append(end_pos)
        if example_ids is not None:
            ex_ids.append(example_ids[sample[i]])
            masked.append([list(o) if s == context_seq else [-1, -1] for o, s in zip(offs, seq)])
    if answers is not None:
        out["start_positions"], out["end_positions"] = starts, ends
    if example_ids is not None:
        out["example_id"], out["offset_mapping"] = ex_ids, masked
    return out


# ---------------------------------------------------------------------- Lightning module


class QuestionAnsweringModule(TaskModule):
    side_keys = TaskModule.side_keys + SIDE_COLUMNS

    def build_metrics(self) -> nn.ModuleDict:
        o = self.task.options
        return nn.ModuleDict({"squad": SquadMetric(self.meta["examples"], o.version_2_with_negative, o.null_score_diff_threshold)})

    def update_metrics(self, metrics, batch, outputs, keep) -> None:
        rows = keep.nonzero().flatten().tolist()
        values = feature_spans(outputs.start_logits.detach(), outputs.end_logits.detach(), batch["attention_mask"],
                               batch["input_ids"], [batch["offset_mapping"][r] for r in rows], rows,
                               self.meta.get("cls_token_id"), self.task.options)
        ids = torch.tensor([batch["example_id"][r] for r in rows], dtype=torch.long)
        metrics["squad"].update(ids, *values)

    def compute_metrics(self, metrics, loss) -> dict[str, float]:
        return metrics["squad"].compute()


def feature_spans(start_logits, end_logits, attention_mask, input_ids, offsets: list, rows: list[int], cls_token_id, options):
    """Best span and null score of each feature in `rows` → tensors (start_char, end_char, score, null_score)."""
    starts, ends, scores, nulls = [], [], [], []
    for r, offs in zip(rows, offsets):
        # Logits of the real tokens in order (padding may sit on either side), aligned with offsets.
        real = attention_mask[r].bool()
        s, e, ids = start_logits[r][real], end_logits[r][real], input_ids[r][real]
        span = best_span(s, e, offs, options.n_best_size, options.max_answer_length)
        hits = (ids == cls_token_id).nonzero() if cls_token_id is not None else []
        cls = int(hits[0]) if len(hits) else 0
        nulls.append(float(s[cls] + e[cls]))
        score, start, end = span if span is not None else (float("-inf"), 0, 0)
        starts.append(start)
        ends.append(end)
        scores.append(score)
    return (torch.tensor(starts, dtype=torch.long), torch.tensor(ends, dtype=torch.long),
            torch.tensor(scores, dtype=torch.float32), torch.tensor(nulls, dtype=torch.float32))


# ---------------------------------------------------------------------- task


class QuestionAnswering(Task):
    name = "question-answering"
    default_monitor = "val_f1"
    Options = Options
    Module = QuestionAnsweringModule
    auto_model = "AutoModelForQuestionAnswering"
    # Transformers 5 has no "question-answering" pipeline (it lists it among removed tasks).
    pipeline_task = None

    def __init__(self, cfg):
        super().__init__(cfg)
        o, d = self.options, cfg.data
        if o.doc_stride < 0 or o.doc_stride >= d.max_length:
            raise ConfigError("task_options.doc_stride", f"must be >= 0 and below data.max_length ({d.max_length}), got {o.doc_stride}",
                              f"e.g. --task_options.doc_stride {max(d.max_length // 4, 1)}")
        if o.max_answer_length < 1:
            raise ConfigError("task_options.max_answer_length", f"must be >= 1, got {o.max_answer_length}")
        if o.n_best_size < 1:
            raise ConfigError("task_options.n_best_size", f"must be >= 1, got {o.n_best_size}")

    # ------------------------------------------------------------------ data
    def check_split(self, split, path, ds) -> None:
        o = self.options
        key = f"data.{split}_file" if split != "predict" else "--input"
        super().check_split(split, path, ds)  # the columns (launcher.tasks.precheck)
        if split == "predict":
            return
        check_answers(key, path, o, ds[o.context_column], ds[o.answers_column])

    def prepare(self, splits, tokenizer, meta=None):
        o, d = self.options, self.cfg.data
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError("model.tokenizer", "question-answering needs a fast (Rust) tokenizer for offset mappings",
                              "use a model folder with tokenizer.json, or set model.tokenizer to one")
        contexts, golds = [], []
        out = {}
        for split, ds in splits.items():
            base = None
            if split != "train":
                # Eval examples get global indices across splits: features name their example by it.
                base = len(contexts)
                contexts.extend(list(ds[o.context_column]))
                golds.extend([list(a["text"]) for a in ds[o.answers_column]])
            out[split] = self._features(split, ds, tokenizer, d.max_length, base)
        meta = {"examples": {"context": contexts, "answers": golds}, "cls_token_id": tokenizer.cls_token_id,
                "version_2_with_negative": o.version_2_with_negative}
        return out, meta

    def _features(self, split: str, ds, tokenizer, max_length: int, base: Optional[int]):
        o = self.options
        self._check_room(ds, tokenizer, max_length, split)

        def encode(batch, indices):
            ids = [base + i for i in indices] if base is not None else None
            return qa_features(tokenizer, batch[o.question_column], batch[o.context_column], max_length, o.doc_stride,
                               batch[o.answers_column] if o.answers_column in batch else None, ids)

        return ds.map(encode, batched=True, with_indices=True, remove_columns=ds.column_names,
                      num_proc=self.cfg.data.preprocessing_num_workers, desc=f"tokenizing {split}")

    def _check_room(self, ds, tokenizer, max_length: int, split: str) -> None:
        """Every window needs context tokens beyond the stride (the Rust tokenizer panics otherwise)."""
        o = self.options
        questions = [q.lstrip() for q in ds[o.question_column]]
        room = max_length - tokenizer.num_special_tokens_to_add(pair=True)
        for i, ids in enumerate(tokenizer(questions, add_special_tokens=False)["input_ids"]):
            left = room - len(ids)
            if left <= o.doc_stride:
                path = file_of(self.cfg, split) if split != "predict" else "--input"
                # A held-out validation split reorders rows: name the question instead of a row number.
                held_out = not self.cfg.data.validation_file and split in ("train", "validation")
                where = f"{path}, question {questions[i][:60]!r}" if held_out else f"{path} row {i + 1}"
                raise ConfigError("data.max_length", f"{where}: the question takes {len(ids)} tokens and leaves {max(left, 0)} "
                                  f"for context in windows of {max_length}, not more than task_options.doc_stride ({o.doc_stride})",
                                  "raise data.max_length or lower task_options.doc_stride")

    def collator(self, tokenizer):
        from transformers import DataCollatorWithPadding

        return PadCollator(DataCollatorWithPadding(tokenizer), keep_columns=SIDE_COLUMNS)

    def export_extras(self, meta):
        # Replaces "meta" in launcher.json (later keys win in export's dict): the evaluation contexts
        # are only needed during training, and can be megabytes.
        return {"meta": {k: v for k, v in meta.items() if k != "examples"}}

    # ------------------------------------------------------------------ predict
    @torch.no_grad()
    def predict(self, model_dir, ds, options):
        """{"question", "answer", "score"} per row; score is the span's probability in its window."""
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer, DataCollatorWithPadding

        o = self.options
        for k in ("max_answer_length", "n_best_size", "null_score_diff_threshold", "doc_stride"):
            if k in options:
                setattr(o, k, type(getattr(o, k))(options[k]))
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
        device = torch.device(f"cuda:{options['device']}" if options.get("device", -1) >= 0 else "cpu")
        model.to(device)
        # datasets 5 returns lazy Column objects; tokenizers want lists.
        questions, contexts = list(ds[o.question_column]), list(ds[o.context_column])
        self._check_room(ds, tokenizer, self.cfg.data.max_length, "predict")
        feats = qa_features(tokenizer, questions, contexts, self.cfg.data.max_length, o.doc_stride,
                            example_ids=list(range(len(ds))))
        pad = DataCollatorWithPadding(tokenizer)
        model_keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in feats]
        bs = int(options.get("batch_size", 32))
        ids, spans, nulls, probs = [], [], [], {}
        for start in range(0, len(feats["input_ids"]), bs):
            rows = range(start, min(start + bs, len(feats["input_ids"])))
            batch = pad([{k: feats[k][r] for k in model_keys} for r in rows])
            out = model(**{k: v.to(device) for k, v in batch.items()})
            s_logits, e_logits = out.start_logits.float().cpu(), out.end_logits.float().cpu()
            local = list(range(len(rows)))
            st, en, sc, nl = feature_spans(s_logits, e_logits, batch["attention_mask"], batch["input_ids"],
                                           [feats["offset_mapping"][r] for r in rows], local, tokenizer.cls_token_id, o)
            for j, r in enumerate(rows):
                real = batch["attention_mask"][j].bool()
                # Probabilities within the window (softmax over start and over end positions), as
                # Hugging Face's QA pipeline reported them.
                norm = s_logits[j][real].logsumexp(-1) + e_logits[j][real].logsumexp(-1)
                probs[(r, "span")] = float(torch.exp(sc[j] - norm))
                probs[(r, "null")] = float(torch.exp(nl[j] - norm))
                ids.append(feats["example_id"][r])
                spans.append((float(sc[j]), int(st[j]), int(en[j])))
                nulls.append(float(nl[j]))
        answers = select_answers(ids, spans, nulls, contexts, o.version_2_with_negative, o.null_score_diff_threshold)
        # The window that gave each example's answer (best span, or lowest null score for "").
        feature_of = {}
        for f, (ex, span, ns) in enumerate(zip(ids, spans, nulls)):
            text, score, null = answers[ex]
            if (text and span[0] == score) or (not text and ns == null):
                feature_of.setdefault(ex, f)
        rows = []
        for ex, q in enumerate(questions):
            text, _, _ = answers.get(ex, ("", 0.0, 0.0))
            f = feature_of.get(ex)
            score = probs.get((f, "span" if text else "null"), 0.0) if f is not None else 0.0
            rows.append({"question": q, "answer": text, "score": score})
        return rows
