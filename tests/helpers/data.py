"""Generated data: the word lists of the tiny vocabulary, sentiment rows, and CSV / JSONL writers."""

from __future__ import annotations

import csv
import json
import random

POSITIVE = ["good", "great", "fine", "superb", "lovely", "brilliant"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring", "terrible"]
FILLER = ["the", "film", "movie", "was", "plot", "acting", "a", "very", "and", "story", "it", "is", "quite", "this"]
ENTITY_WORDS = ["paris", "london", "alice", "bob", "acme", "google", "monday", "berlin"]
EXTRA = ["what", "who", "where", "lives", "in", "works", "at", "?", ".", ",", "[", "]", "x", "y", "z", "one", "two"]
WORDS = sorted(set(POSITIVE + NEGATIVE + FILLER + ENTITY_WORDS + EXTRA))


def sentiment_rows(n: int, seed: int = 0, min_len: int = 2, max_len: int = 6) -> list[dict]:
    """Texts whose label is decided by a sentiment word among filler; real variable lengths."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(FILLER) for _ in range(rng.randint(min_len, max_len))]
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
        rows.append({"text": " ".join(words), "label": "pos" if label else "neg"})
    rng.shuffle(rows)
    return rows


def write_csv(path: str, rows: list[dict]) -> str:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def write_jsonl(path: str, rows: list[dict]) -> str:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path
