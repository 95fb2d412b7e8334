"""The configuration reference in the README, generated from the dataclasses themselves.

A key's meaning is the comment on its line, or the comment lines just above it, in the dataclass's
source, so the reference cannot drift from the code: ``python -m secgan.commands.configref`` prints it and a
test checks the README holds every key.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from typing import Any, Iterator

_FIELD_RE = re.compile(r"^\s*(\w+)\s*:")


def _comments(cls: type) -> dict[str, str]:
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    pending: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("# ").strip())
            continue
        m = _FIELD_RE.match(line)
        if m and not stripped.startswith(("def ", "class ", "@")):
            text = " ".join(pending)
            if "#" in line:
                trailing = line.split("#", 1)[1].strip()
                text = f"{text} {trailing}".strip()
            out[m.group(1)] = text
        pending = []
    return out


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _type_name(tp: Any) -> str:
    s = getattr(tp, "__name__", None) if not typing.get_args(tp) else None
    return s or str(tp).replace("typing.", "")


def iter_keys(cls: type, prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(dotted key, type, default, meaning) for every leaf key of a config dataclass."""
    hints = typing.get_type_hints(cls)
    notes = _comments(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        default = _default(f)
        if dataclasses.is_dataclass(tp):
            yield from iter_keys(tp, prefix=f"{prefix}{f.name}.")
            continue
        meaning = notes.get(f.name, "")
        if meaning and not meaning.endswith((".", ")")):
            meaning += "."
        meta = f.metadata
        if "choices" in meta:
            meaning = f"{meaning} One of {', '.join(map(str, meta['choices']))}.".strip()
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None or hi is not None:
            op = ">" if meta.get("min_exclusive") else ">="
            rng = " and ".join(x for x in (f"{op} {lo}" if lo is not None else "", f"<= {hi}" if hi is not None else "") if x)
            meaning = f"{meaning} Range: {rng}.".strip()
        shown = "(required)" if default is dataclasses.MISSING else repr(default).replace("|", "\\|")
        yield prefix + f.name, _type_name(tp).replace("|", "\\|"), shown, meaning


def markdown_table(cls: type, *, prefix: str = "") -> str:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    rows += [f"| `{k}` | {t} | `{d}` | {m} |" for k, t, d, m in iter_keys(cls, prefix)]
    return "\n".join(rows)


def reference() -> str:
    from secgan.run.config import RunConfig
    from secgan.settings import SiteConfig

    from coordinator.config import CoordinatorConfig

    parts = []
    for title, cls in (("coordinator.toml", CoordinatorConfig), ("site.toml", SiteConfig), ("run.toml (in-process `secgan train`)", RunConfig)):
        parts.append(f"#### {title}\n\n{markdown_table(cls)}\n")
    return "\n".join(parts)




def cli_reference() -> str:
    """Every ``secgan`` subcommand with its usage line and one-line purpose."""
    import argparse

    from secgan.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = []
    for name, p in sub.choices.items():
        usage = " ".join(p.format_usage().split())
        usage = usage.removeprefix("usage: ").replace("secgan " + name, "secgan " + name, 1)
        parts.append(f"- **`secgan {name}`**: {p.description}  \n  `{usage}`")
    return "\n".join(parts)


def write_readme(path: str) -> None:
    """Replace the generated sections of the README between their BEGIN/END markers."""
    import re
    from pathlib import Path

    p = Path(path)
    text = p.read_text()
    for name, body in (("CONFIG REFERENCE", reference()), ("CLI REFERENCE", cli_reference())):
        pattern = re.compile(rf"(<!-- BEGIN {name}[^>]*-->\n).*?(<!-- END {name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"{path}: no BEGIN/END {name} markers")
        text = pattern.sub(lambda m: m.group(1) + body.strip() + "\n" + m.group(2), text)
    p.write_text(text)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--write"]:
        write_readme(sys.argv[2])
    else:
        print(cli_reference() if sys.argv[1:] == ["cli"] else reference())
