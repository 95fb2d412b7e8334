"""The demo's summary page: each site's verdict with the finding that decides it, the label legend."""

from __future__ import annotations

from pathlib import Path

from secgan.commands.demo_page import write_index


def _report(verdict: str, findings: list[dict]) -> dict:
    return {"verdict": verdict, "findings": findings,
            "epsilon": {"mode": "dpsgd", "target": 10.0, "empirical_lb": 0.0, "max_resolvable": 0.67}}


def test_a_verdict_that_is_not_green_says_why_and_green_says_nothing(tmp_path: Path) -> None:
    why = "too few non-member patients to measure any attack at a 1% false-positive rate"
    reports = {
        "site-1": _report("Inconclusive", [{"level": "Amber", "reason": "an Amber aside"},
                                           {"level": "Inconclusive", "reason": why},
                                           {"level": "Inconclusive", "reason": "the claim cannot be resolved"}]),
        "site-2": _report("Green", [{"level": "Green", "reason": "every check passed"}]),
    }
    run = {"sites": {s: {"mode": "dpsgd", "epsilon": 9.97, "steps_served": 300, "stop_reason": "completed"}
                     for s in reports}}
    page = write_index(tmp_path, run_summary=run, reports=reports, utility=[], timings={"training": 1.0},
                       wall_s=1.0, settings={"steps": 300}).read_text()
    assert f"site-1, Inconclusive: {why}; the claim cannot be resolved" in page
    assert "an Amber aside" not in page and "every check passed" not in page and "site-2, Green" not in page
    assert "resolvable: up to 0.67" in page
