"""Secrets come from the environment only: configs that carry one are refused before anything runs.

Config files get copied into output_dir, exported folders, Ray storage and job submissions, and end
up in version control; a token in one leaks everywhere. The libraries launcher uses read their
credentials from the environment (HF_TOKEN, WANDB_API_KEY, MLFLOW_TRACKING_USERNAME/PASSWORD,
AWS_* / GOOGLE_APPLICATION_CREDENTIALS), so a config never needs one. Cheap to import: no torch, no ray.
"""

from __future__ import annotations

import re
from typing import Any, Iterator, Optional

from launcher.errors import ConfigError

# (pattern, what it is, where it belongs instead)
_VALUE_PATTERNS = [
    (re.compile(r"\bhf_[A-Za-z0-9]{30,}"), "a Hugging Face token", "set HF_TOKEN in the environment"),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "an AWS access key", "set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}"), "a GitHub token", "set it in the environment"),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"), "a Google API key", "set it in the environment"),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{20,}"), "an API key", "set it in the environment"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key", "point GOOGLE_APPLICATION_CREDENTIALS (or similar) at a key file"),
    (re.compile(r"://[^/@\s:]+:[^/@\s]+@"), "a password inside a URI",
     "drop user:password@ from the URI and set the service's credentials in the environment "
     "(e.g. MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"),
    (re.compile(r"[?&](?:access_key|secret_key|session_token|token|password|api_key)=[^&\s]+", re.I), "a credential in a URI query",
     "drop it from the URI and set the credentials in the environment (e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"),
]
# Keys whose name says they hold a secret (in task_options and other free-form mappings): whole
# words of the name, so `tokenizer` or `max_tokens` are not secrets but `hf_token` and `apiKey` are.
_KEY_WORDS = {"token", "secret", "password", "passwd", "apikey", "credential", "credentials", "auth"}
_KEY_PAIRS = {("api", "key"), ("access", "key"), ("secret", "key"), ("private", "key")}
# A tokenizer's special tokens and their ids are not secrets: pad_token_id, eos_token, bos_token_ids, ...
_TOKEN_SPECIALS = {"pad", "bos", "eos", "unk", "sep", "cls", "mask", "special", "decoder", "start", "end"}
_TOKEN_AFTER = {"id", "ids", "type", "types", "length", "len", "count", "limit"}
# Values that look like secrets but are not: a hub revision is often a 40-hex commit id.
_EXEMPT_KEYS = {"model.revision"}


def find_secret(config: dict) -> Optional[tuple[str, str, str]]:
    """(key, what, fix) of the first secret-looking value in a config dict, or None."""
    for key, value in _walk(config):
        if key in _EXEMPT_KEYS or value in (None, "", False):
            continue
        if is_secret_key(key.rsplit(".", 1)[-1]) and isinstance(value, str):
            return key, "a secret (by its name)", "remove it and set the secret in the environment of every node"
        if isinstance(value, str):
            for pattern, what, fix in _VALUE_PATTERNS:
                if pattern.search(value):
                    return key, what, fix
    return None


def is_secret_key(name: str) -> bool:
    """True for key names like hf_token, WANDB_API_KEY, secretKey, password (not tokenizer)."""
    words = [w.lower() for w in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", name)]
    for i, w in enumerate(words):
        if w == "token" and ((i > 0 and words[i - 1] in _TOKEN_SPECIALS) or (i + 1 < len(words) and words[i + 1] in _TOKEN_AFTER)):
            continue  # a tokenizer's special token or a token count, not a credential
        if w in _KEY_WORDS:
            return True
    return any(pair in _KEY_PAIRS for pair in zip(words, words[1:]))


def mask(text: str) -> str:
    """`text` with every secret-looking part replaced by *** (for values printed or saved)."""
    for pattern, _, _ in _VALUE_PATTERNS:
        text = pattern.sub(_masked, text)
    return text


def _masked(m: re.Match) -> str:
    s = m.group(0)
    if s.startswith("://"):
        return "://***@"
    if s[0] in "?&":
        return s[: s.index("=") + 1] + "***"
    return "***"


def check_config(config: dict) -> None:
    """Raise ConfigError naming the key when the config carries a secret."""
    found = find_secret(config)
    if found:
        key, what, fix = found
        raise ConfigError(key, f"looks like {what}; secrets are never read from configs (they would be copied into "
                               "output_dir, checkpoints and logs)", fix)


def _walk(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{prefix}{k}." if isinstance(v, (dict, list)) else f"{prefix}{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{prefix}{i}." if isinstance(v, (dict, list)) else f"{prefix}{i}")
    else:
        yield prefix.rstrip("."), obj


def redact(obj: Any) -> Any:
    """Copies `obj` with values of secret-looking keys (hf_token, api_key; not tokenizer) and
    secret-looking parts of strings (tokens, user:password@ in URIs) replaced by ***."""
    if isinstance(obj, dict):
        return {k: ("***" if isinstance(k, str) and is_secret_key(k) and v else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return mask(obj)
    return obj
