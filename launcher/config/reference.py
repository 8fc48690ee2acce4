"""Config reference in Markdown, generated from the dataclasses (their attribute docstrings).

`python -m launcher.config.reference` prints it; `python -m launcher.config.reference --write README.md` refreshes the
README section between the CONFIG-REFERENCE markers (a test keeps them in sync).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import sys

from launcher.config import Config

BEGIN, END = "<!-- CONFIG-REFERENCE:BEGIN -->", "<!-- CONFIG-REFERENCE:END -->"


def field_docs(cls) -> dict[str, str]:
    """Attribute docstrings of a dataclass: the string literal right after each field."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr) \
                and isinstance(getattr(nxt, "value", None), ast.Constant) and isinstance(nxt.value.value, str):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _default(f) -> str:
    if f.default is not dataclasses.MISSING:
        return "`null`" if f.default is None else f"`{f.default}`" if f.default != "" else "(required)"
    return "`{}`" if f.default_factory is dict else "`[]`" if f.default_factory is list else ""


def _type(f) -> str:
    if str(f.type).startswith("Union["):  # Union[float, Literal['auto']] → float | auto
        parts = [x.strip() for x in str(f.type)[len("Union["):-1].replace("Literal[", "").replace("]", "").split(",")]
        return " \\| ".join(x.strip("'\"") for x in parts)
    t = str(f.type).replace("typing.", "").replace("Optional[", "").rstrip("]") if "Optional" in str(f.type) else str(f.type)
    if t.startswith("Union[Literal[") and t.endswith(", bool]"):  # data.streaming: auto | true | false
        return " \\| ".join([x.strip().strip("'\"") for x in t[len("Union[Literal["):-len("], bool]")].split(",")] + ["true", "false"])
    if t.startswith("Literal["):
        t = " \\| ".join(x.strip().strip("'\"") for x in t[len("Literal["):].rstrip("]").split(","))
    return t.replace("|", "\\|") if "\\|" not in t else t


def reference() -> str:
    lines = ["| key | type | default | what it does |", "|---|---|---|---|"]
    top = field_docs(Config)
    sections = []
    for f in dataclasses.fields(Config):
        factory = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if factory is not None and dataclasses.is_dataclass(factory):
            sections.append((f.name, factory, top.get(f.name, "")))
        else:
            lines.append(f"| `{f.name}` | {_type(f)} | {_default(f)} | {top.get(f.name, '')} |")
    out = ["\n".join(lines)]
    for name, cls, doc in sections:
        docs = field_docs(cls)
        rows = [f"### `{name}:` — {doc}", "", "| key | type | default | what it does |", "|---|---|---|---|"]
        for g in dataclasses.fields(cls):
            rows.append(f"| `{name}.{g.name}` | {_type(g)} | {_default(g)} | {docs.get(g.name, '')} |")
        out.append("\n".join(rows))
    return "\n\n".join(out) + "\n"


def write(path: str) -> bool:
    """Refresh the marked section of `path`; returns whether it changed."""
    text = open(path).read()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    new = f"{head}{BEGIN}\n{reference()}{END}{tail}"
    if new != text:
        open(path, "w").write(new)
    return new != text


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        print("updated" if write(sys.argv[2]) else "up to date")
    else:
        print(reference())
