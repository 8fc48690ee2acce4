"""Prompt → response with a decoder-only (causal) model: what summarization and translation use with
`task_options.decoder_only: true`, and language-modeling with `prompt_column`/`response_column`.

One sequence per example, the prompt then the response:
- with the tokenizer's chat template (SmolLM2-Instruct, Llama, Qwen, ...): the prompt is one user turn
  rendered with `add_generation_prompt=True`, the full sequence that turn plus the assistant turn; the
  prompt must be a prefix of the full sequence (templates that rewrite earlier turns are refused);
- without one, the documented plain format: prompt tokens, a newline, response tokens, then EOS
  (`PLAIN_SEPARATOR`; no special tokens of the tokenizer's own are added).
Labels are -100 on the prompt, so the loss is on the response (and its end: the model learns to stop).
Evaluation and `launcher predict` generate from the prompt alone (left-padded) and keep only the
continuation.
"""

from __future__ import annotations

from typing import Optional

import torch

from launcher.errors import ConfigError, first_line

PLAIN_SEPARATOR = "\n"
#: batch keys of the prompt alone (left-padded), for generation; not model inputs
PROMPT_KEYS = ("_prompt_ids", "_prompt_mask")


def prompt_format(tokenizer) -> str:
    """chat when the tokenizer has a chat template, else plain."""
    return "chat" if getattr(tokenizer, "chat_template", None) else "plain"


def _chat_ids(tokenizer, messages: list, generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt, return_dict=True)
    return list(out["input_ids"])


def prompt_ids(tokenizer, prompt: str, fmt: str, max_length: int) -> list[int]:
    """Token ids of the prompt alone, ending where the response starts; the prompt text is cut to `max_length` tokens."""
    if fmt == "chat":
        return _chat_ids(tokenizer, [{"role": "user", "content": prompt_text(tokenizer, prompt, max_length)}], generation_prompt=True)
    return tokenizer(prompt, add_special_tokens=False)["input_ids"][:max_length] + tokenizer(PLAIN_SEPARATOR, add_special_tokens=False)["input_ids"]


def encode_pair(tokenizer, prompt: str, response: Optional[str], fmt: str, max_length: int, max_response: int) -> dict:
    """input_ids, labels (-100 on the prompt) and prompt_ids of one example; labels only with a response."""
    p = prompt_ids(tokenizer, prompt, fmt, max_length)
    row = {"prompt_ids": p}
    if response is None:
        return row
    r = tokenizer(response, add_special_tokens=False)["input_ids"][:max_response]
    if fmt == "chat":
        text = tokenizer.decode(r) if len(r) == max_response else response
        full = _chat_ids(tokenizer, [{"role": "user", "content": prompt_text(tokenizer, prompt, max_length)},
                                     {"role": "assistant", "content": text}], generation_prompt=False)
        if full[: len(p)] != p:
            raise ConfigError("model.tokenizer", "the chat template renders the prompt differently once the answer follows "
                              "(it rewrites earlier turns)", "use a tokenizer without that template rewriting, or a plain model")
        tail = full[len(p):]
    else:
        eos = tokenizer.eos_token_id
        tail = r + ([eos] if eos is not None else [])
    row["input_ids"] = p + tail
    row["labels"] = [-100] * len(p) + tail
    return row


def prompt_text(tokenizer, prompt: str, max_length: int) -> str:
    """The prompt as the model sees it: cut to `max_length` tokens."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids[:max_length]) if len(ids) > max_length else prompt


def check_tokenizer(tokenizer, fmt: str) -> None:
    if fmt == "chat":
        try:
            _chat_ids(tokenizer, [{"role": "user", "content": "x"}], generation_prompt=True)
        except Exception as e:  # noqa: BLE001 - a broken template is a config problem: one line
            raise ConfigError("model.tokenizer", f"the tokenizer's chat template fails: {first_line(e)}",
                              "fix the template or use a tokenizer without one (the plain prompt format)") from None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # batches are padded; EOS stands in, as for GPT-style models


def encode_rows(ds, tokenizer, prompts, responses, fmt: str, max_length: int, max_response: int, keep_target: bool,
                num_proc=None, desc: str = "tokenizing"):
    """A datasets map: prompt/response columns → input_ids, labels, prompt_ids (+ `_target`, the response text, when asked)."""

    def encode(batch):
        ps, rs = prompts(batch), responses(batch)
        rows = [encode_pair(tokenizer, p, r, fmt, max_length, max_response) for p, r in zip(ps, rs or [None] * len(ps))]
        out = {k: [row[k] for row in rows] for k in rows[0]} if rows else {"prompt_ids": []}
        if keep_target and rs is not None:
            out["_target"] = list(rs)
        return out

    return ds.map(encode, batched=True, remove_columns=ds.column_names, num_proc=num_proc, desc=desc)


def pad_left(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.tensor([[pad_id] * (width - len(s)) + list(s) for s in seqs], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], dtype=torch.long)
    return ids, mask


class PromptCollator:
    """Right-pads input_ids/labels (labels with -100) for the loss; left-pads the prompts alone
    (`_prompt_ids`, `_prompt_mask`) for generation. `_pad`, `_index` and `_target` pass through."""

    def __init__(self, tokenizer):
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def __call__(self, rows: list[dict]) -> dict:
        side = {k: [r.pop(k) for r in rows] for k in ("_pad", "_index", "_target") if k in rows[0]}
        prompts = [r.pop("prompt_ids") for r in rows]
        batch = {}
        if "input_ids" in rows[0]:
            width = max(len(r["input_ids"]) for r in rows)
            fill = lambda key, pad: torch.tensor([list(r[key]) + [pad] * (width - len(r[key])) for r in rows])  # noqa: E731
            batch = {"input_ids": fill("input_ids", self.pad_id), "labels": fill("labels", -100),
                     "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows])}
        batch["_prompt_ids"], batch["_prompt_mask"] = pad_left(prompts, self.pad_id)
        for k, v in side.items():
            batch[k] = torch.tensor(v) if k in ("_pad", "_index") else v
        return batch


def generate_continuations(model, tokenizer, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, **kwargs) -> torch.Tensor:
    """Generated tokens after the (left-padded) prompts, pad-filled to one width."""
    kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
    out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, **kwargs)
    return out[:, prompt_ids.shape[1]:]


def predict_texts(model_dir: str, prompts: list[str], fmt: str, max_length: int, options: dict, defaults: dict) -> list[str]:
    """Continuations of `prompts` with an exported causal model: what `launcher predict` returns."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    if "seed" in options:
        set_seed(int(options["seed"]))
    device = torch.device("cpu") if options.get("device", -1) < 0 else torch.device("cuda", options["device"])
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    check_tokenizer(tokenizer, fmt)
    model = AutoModelForCausalLM.from_pretrained(model_dir).to(device).eval()
    kwargs = {**defaults, **{k: v for k, v in options.items() if k not in ("batch_size", "device", "seed")}}
    if "do_sample" not in kwargs and any(k in kwargs for k in ("temperature", "top_p", "top_k")):
        kwargs["do_sample"] = True
    out = []
    bs = int(options.get("batch_size", 8))
    for i in range(0, len(prompts), bs):
        ids, mask = pad_left([prompt_ids(tokenizer, p, fmt, max_length) for p in prompts[i : i + bs]], tokenizer.pad_token_id)
        with torch.no_grad():
            new = generate_continuations(model, tokenizer, ids.to(device), mask.to(device), **kwargs)
        out.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    return out
