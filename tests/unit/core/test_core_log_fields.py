"""No log call in the code base passes a field the logger would redact.

A redacted field in a log line is either a secret that should never have been passed, or (the
common case) a count under an ambiguous name, e.g. ``patients=<redacted>`` next to
``patient_count=15``. Counts are logged as ``<thing>_count``; this test keeps every call site so.
"""

from __future__ import annotations

import ast
from pathlib import Path

from secgan.core.logs import _safe

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("secgan", "sites", "coordinator", "audits", "bench")
LEVELS = {"debug", "info", "warning", "error"}


def _log_calls():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in LEVELS
                        and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                    yield path.relative_to(ROOT), node


def test_the_scan_sees_the_log_calls():
    calls = list(_log_calls())
    assert len(calls) > 50
    assert any(n.args[0].value == "site_ready" for _, n in calls)


def test_no_log_call_passes_a_field_that_would_be_redacted():
    bad = [f"{path}:{node.lineno} {node.args[0].value} {kw.arg}="
           for path, node in _log_calls() for kw in node.keywords
           if kw.arg is not None and _safe(kw.arg, 0) == "<redacted>"]
    assert not bad, "log fields that would be redacted (name a count <thing>_count, never log a secret):\n" + "\n".join(bad)


def test_a_count_is_logged_next_to_itself_unredacted():
    assert _safe("patient_count", 15) == 15
    assert _safe("patients", 15) == "<redacted>"  # ambiguous names stay redacted: the call site must say _count
