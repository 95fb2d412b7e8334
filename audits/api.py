"""Audit glue: load a site's data, ledger and models, run the core, grade, render, sign, write.

``run_audit`` is what ``secgan audit run`` and the demo call; ``merge_reports`` is the
coordinator-side federation summary. Everything heavy lives in ``audits.core``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from audits import membership as mia
from audits import report as rep
from audits.cohort import make_cohort
from audits.copies import SETS as COPY_SETS
from audits.claim import BROKEN_LEDGER_CHOICES, claim_of, ledger_findings, read_ledger, salted_ledger, verify_ledger_state
from audits.core import AuditConfig, audit_arrays
from audits.rubric import LEVELS, grade, load_rubric, worst
from audits.signing import (
    ANNEX_HTML,
    REPORT_HTML,
    REPORT_JSON,
    sha256_bytes,
    sha256_file,
    sign_report,
    verify_report,
    write_report_json,
)
from secgan.core.errors import ConfigError, DataError, PrivacyError, SecganError
from secgan.core.fsio import atomic_write_bytes
from secgan.core.logs import get_logger

log = get_logger(__name__)
REPORT_FORMAT = "secgan-audit-report"
REPORT_FORMAT_VERSION = 1
AUDIT_CACHE = "audit-cache"  # in the site's state folder: the embedding trained on its real images


# ---------------------------------------------------------------------------------------------
# small helpers


def jsonable(x: Any) -> Any:
    """numpy scalars/arrays to Python, tuples to lists, non-finite floats to None (canonical JSON)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items() if not str(k).startswith("_")}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    return x


def git_commit() -> str | None:
    """The checkout's commit, if this code runs from a git checkout; never fails."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) in (40, 64) else None


def _load_discriminators(site, state_dir: Path):
    """The site's D(s) from its state dir (``discriminator*.safetensors``), or (None, reason)."""
    files = sorted(Path(state_dir).glob("discriminator*.safetensors"))
    if not files:
        return None, f"no discriminator state found in the site's state folder ({Path(state_dir).name}/discriminator*.safetensors)"
    import torch

    from secgan.gan.checkpoint import load_module_state
    from secgan.gan.models import build_discriminator

    nets = []
    for f in files:
        D = build_discriminator(site.model, site.image)
        try:
            load_module_state(f, D, None)
        except SecganError as exc:
            return None, f"discriminator state {f.name} could not be loaded ({exc})"
        nets.append(D)
    if len(nets) == 1:
        return nets[0], ""

    class _Mean(torch.nn.Module):  # shard discriminators (sanitize mode): average their logits
        def __init__(self, ms):
            super().__init__()
            self.ms = torch.nn.ModuleList(ms)

        def forward(self, cond, img):
            return torch.stack([m(cond, img).flatten(1).mean(1) for m in self.ms]).mean(0)

    return _Mean(nets), ""


def _load_generator(path: Path):
    from secgan.gan.checkpoint import load_checkpoint

    ck = load_checkpoint(path)
    _, model = ck.generator_config()
    return ck.build_generator(), int(model.noise_dim)


def _annex(result: dict, out_dir: Path, site_id: str, n: int = 8, *, real_cohorts=(), case_ids=(),
           max_copies: int = 64, value_range: tuple[float, float] = (-1.0, 1.0)) -> Path:
    """The local annex (0600): the copies found, with the patients' case ids, and the closest pairs.
    ``real_cohorts`` / ``case_ids``: per set (training, held-out, other) the uncapped cohort and its ids."""
    memo = result["memorisation"]["pixels"]["_plot"]
    d, idx = memo["synthetic_to_train"], memo["synthetic_nn_index"]
    members, synthetic = result["_members"], result["_synthetic"]
    pairs = []
    for i in np.argsort(d)[:n]:
        png = rep.image_pair_png(synthetic.images[i], members.images[idx[i]], f"distance {d[i]:.4f}",
                                 value_range=value_range)
        pairs.append({"png": png, "distance": float(d[i])})
    copies = []
    c = result.get("copies") or {}
    for syn_i, real_i, ratio in (c.get("_pairs") or [])[:max_copies]:
        set_i, patient, slice_i = (int(v) for v in c["_real"][real_i])
        cohort = real_cohorts[set_i] if set_i < len(real_cohorts) else None
        ids = case_ids[set_i] if set_i < len(case_ids) else ()
        case = ids[patient] if patient < len(ids) else f"patient #{patient}"
        png = None
        if cohort is not None:
            png = rep.image_pair_png(synthetic.images[syn_i], cohort.images[slice_i], f"synthetic #{syn_i}: ratio {ratio:.3f}",
                                     value_range=value_range)
        copies.append({"synthetic": syn_i, "set": COPY_SETS[set_i], "case": case, "ratio": ratio, "png": png})
    path = out_dir / ANNEX_HTML
    html = rep.render_annex_html(pairs, site_id, copies=copies, copies_total=int(c.get("count") or 0))
    atomic_write_bytes(path, html.encode("utf-8"), mode=0o600)
    return path


def fit_to_spec(cfg: AuditConfig, image: Any) -> AuditConfig:
    """The audit settings that follow the run's image spec: the pixels the embedding's random shifts
    bring in stay inside the images' value range (its default, -1, is normalised MRI's background;
    an RGB spec in [0, 1] gets 0)."""
    lo, hi = (float(v) for v in image.value_range)
    pad = min(max(float(cfg.embedding.pad_value), lo), hi)
    if pad == cfg.embedding.pad_value:
        return cfg
    return dataclasses.replace(cfg, embedding=dataclasses.replace(cfg.embedding, pad_value=pad))


def _other_patients(site, size: int):
    """The site's patients in ``data_dir`` that split.json lists neither as train nor as test, read
    and sliced exactly like the listed ones (the site's layout and ``[read]`` settings): (case ids,
    images, conds, groups) or None. Unreadable ones are skipped (counted in the log, never named)."""
    from secgan.data.dataset import load_site

    try:
        ps = load_site(Path(site.data_dir), split="unlisted", image_size=size, image=site.image, skip_bad=True,
                       **site.read.load_kwargs())
    except DataError:  # nobody unlisted (or nobody usable)
        return None
    images, conds, _, groups = ps.all_slices()
    return list(ps.case_ids), images, conds, groups


def _plots(result: dict) -> dict[str, str | None]:
    plots: dict[str, str | None] = {"roc": rep.roc_plot(result["attacks"])}
    for space, m in result["memorisation"].items():
        p = m["_plot"]
        plots[f"dcr_{space}"] = rep.dcr_plot(space, p["synthetic_to_train"], p["holdout_to_train"])
        plots[f"ct_{space}"] = rep.ct_plot(space, m["data_copying"].get("cells", []))
    return plots


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------
# building and writing a report


def build_report(
    result: dict,
    *,
    site_id: str,
    claim: dict,
    rubric_path: Path | None,
    provenance: dict,
    extra_findings: list[dict] = (),
) -> dict:
    """Grade ``result`` and assemble the unsigned report dict (JSON-ready)."""
    rubric, rubric_meta = load_rubric(rubric_path)
    eps = dict(result["epsilon"])
    eps.update(claim)
    graded = {"attacks": result["attacks"], "memorisation": result["memorisation"], "epsilon": eps,
              "copies": result.get("copies"), "sizes": result["sizes"]}
    verdict, findings = grade(graded, rubric)
    findings = sorted(findings + ledger_findings(eps) + list(extra_findings), key=lambda f: -LEVELS.index(f["level"]))
    verdict = worst([verdict, *(f["level"] for f in findings)])
    report = {
        "format": REPORT_FORMAT,
        "format_version": REPORT_FORMAT_VERSION,
        "site_id": site_id,
        "created": utc_now(),
        "verdict": verdict,
        "positive_class": "member",
        "findings": findings,
        "epsilon": eps,
        "attacks": result["attacks"],
        "memorisation": result["memorisation"],
        "copies": result.get("copies"),
        "sizes": result["sizes"],
        "feature_spaces": result["feature_spaces"],
        "provenance": dict(provenance, rubric=rubric_meta),
    }
    report = jsonable(report)
    report["summary"] = rep.plain_summary(report)
    return report


def write_report(report: dict, out_dir: Path, *, plots: dict, signing_key: Path,
                 annex_path: Path | None = None) -> dict:
    """Render the HTML, put its hash in the report, sign, write both. Returns the signed report."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html = rep.render_html(report, plots).encode("utf-8")
    report = dict(report)
    report["artifacts"] = {REPORT_HTML: {"sha256": sha256_bytes(html)}}
    if annex_path is not None:
        report["artifacts"][ANNEX_HTML] = {"sha256": sha256_file(annex_path)}
    signed = sign_report(report, signing_key)
    atomic_write_bytes(out_dir / REPORT_HTML, html)
    write_report_json(out_dir / REPORT_JSON, signed)
    return signed


def run_audit(
    *,
    site_config_path: Path,
    synthetic_dir: Path,
    out_dir: Path,
    rubric_path: Path | None = None,
    generator_checkpoint: Path | None = None,
    seed: int = 0,
    annex: bool = False,
    config: AuditConfig | None = None,
    broken_ledger: str = "refuse",
) -> dict:
    """Audit one site's synthetic release and write ``out_dir/report.json`` + ``report.html``.

    Members are the site's training patients, non-members its held-out ("test") patients.
    Returns the signed report dict. SecganError subclasses name whatever is wrong.

    The ledger and the release log are verified first. A ledger that fails is refused
    (``PrivacyError``, nothing written) unless ``broken_ledger="mark"``: then the report carries the
    problems (JSON ``ledger_verification`` and a Critical finding, so the verdict is Critical), and
    the claimed epsilon is at least the largest one the log shows.
    """
    from secgan import __version__
    from secgan.data.dataset import load_site
    from secgan.settings import load_site_config
    from secgan.gan.synthetic import GENERATOR_SHA256, SYNTHETIC_FILE, read_synthetic, read_synthetic_metadata

    site_config_path = Path(site_config_path)
    synthetic_dir = Path(synthetic_dir)
    out_dir = Path(out_dir)
    site = load_site_config(site_config_path)
    if site.split == "all":
        raise DataError(
            f"{site_config_path}: split = 'all' means the site trains on every patient, "
            "so there are no held-out patients to audit against"
        )
    signing_key = Path(site.signing_key)
    if not signing_key.is_file():
        raise ConfigError(f"{signing_key}: the site's signing key (signing_key in {site_config_path.name}) is missing")
    if broken_ledger not in BROKEN_LEDGER_CHOICES:
        raise ConfigError(f"broken_ledger must be one of {', '.join(BROKEN_LEDGER_CHOICES)}, got {broken_ledger!r}")
    verification = verify_ledger_state(Path(site.state_dir))
    if not verification["ok"] and broken_ledger == "refuse":
        raise PrivacyError(
            f"{site.state_dir}: the site's privacy ledger fails verification, so its epsilon cannot be signed as a "
            f"bound: {'; '.join(verification['problems'])}. Recover it first (`secgan ledger verify` / `secgan "
            "ledger recover`), or audit with --mark-broken-ledger to sign a report marked Critical"
        )
    cfg = config or AuditConfig(seed=seed, device=site.device)
    if config is None and seed != cfg.seed:  # pragma: no cover - defensive
        cfg = dataclasses.replace(cfg, seed=seed)

    syn_images, syn_conds = read_synthetic(synthetic_dir)
    recorded_generator = read_synthetic_metadata(synthetic_dir).get(GENERATOR_SHA256)
    generator_sha = None
    if generator_checkpoint is not None:
        from secgan.gan.checkpoint import checkpoint_file

        generator_sha = sha256_file(checkpoint_file(generator_checkpoint))
        if recorded_generator is not None and recorded_generator != generator_sha:
            raise DataError(
                f"{synthetic_dir}: this synthetic folder was drawn from a generator with SHA-256 "
                f"{recorded_generator[:16]}..., but --generator {generator_checkpoint} has SHA-256 {generator_sha[:16]}...: "
                "the model attacks would audit another release than the folder attacks. Give the generator "
                "the folder was sampled from (or re-sample the folder from this one)"
            )
    size = int(syn_images.shape[-1])
    if size != site.image.size:
        raise DataError(
            f"{synthetic_dir}: synthetic images are {size}x{size} but site {site.site_id} works at "
            f"{site.image.size}x{site.image.size} (image.size in {site_config_path.name})"
        )
    members_ps = load_site(Path(site.data_dir), split="train", image_size=size, image=site.image, skip_bad=site.skip_bad,
                           **site.read.load_kwargs())
    nonmembers_ps = load_site(Path(site.data_dir), split="test", image_size=size, image=site.image, skip_bad=site.skip_bad,
                              **site.read.load_kwargs())
    mi, mc, _, mg = members_ps.all_slices()
    ni, nc, _, ng = nonmembers_ps.all_slices()
    members = make_cohort("members (training patients)", mi, mc, mg)
    nonmembers = make_cohort("non-members (held-out patients)", ni, nc, ng)
    synthetic = make_cohort("synthetic", syn_images, syn_conds)
    extra = _other_patients(site, size)
    others = None if extra is None else make_cohort("other patients of the site", *extra[1:])

    try:
        ledger = read_ledger(Path(site.state_dir))
    except DataError:
        if broken_ledger == "refuse":
            raise
        ledger = None
    claim = claim_of(ledger, site.policy)
    claim["ledger_verification"] = verification
    if not verification["ok"] and verification["log_max_epsilon"] is not None and claim["claimed"] is not None:
        claim["claimed"] = max(claim["claimed"], float(verification["log_max_epsilon"]))
    cfg = fit_to_spec(dataclasses.replace(cfg, delta=claim["delta"]), site.image)

    D, d_reason = _load_discriminators(site, Path(site.state_dir))
    G, noise_dim, g_reason = None, None, "no generator checkpoint given (--generator)"
    if generator_checkpoint is not None:
        G, noise_dim = _load_generator(Path(generator_checkpoint))
        g_reason = ""

    log.info("audit_start", site=site.site_id, discriminator=D is not None, generator=G is not None)
    result = audit_arrays(
        members, nonmembers, synthetic, config=cfg,
        discriminator=D, discriminator_absent_reason=d_reason,
        generator=G, noise_dim=noise_dim, generator_absent_reason=g_reason, others=others,
        cache_dir=Path(site.state_dir) / AUDIT_CACHE,
    )

    salt = os.urandom(16)
    syn_file = synthetic_dir / SYNTHETIC_FILE if synthetic_dir.is_dir() else synthetic_dir
    provenance = {
        "config_file": site_config_path.name,
        "config_sha256": sha256_file(site_config_path),
        "code": {"secgan_version": __version__, "git_commit": git_commit()},
        "ledger": salted_ledger(ledger, salt),
        "data": {
            "salt": salt.hex(),
            "members_fingerprint": members_ps.fingerprint(salt=salt),
            "nonmembers_fingerprint": nonmembers_ps.fingerprint(salt=salt),
            "synthetic_sha256": sha256_file(syn_file),
            "generator_checkpoint_sha256": generator_sha,
            "synthetic_generator_sha256": recorded_generator,
            "generator_matches_synthetic": None if generator_sha is None or recorded_generator is None
            else recorded_generator == generator_sha,
        },
        "seeds": {"audit": cfg.seed, **{f"{k}_stream": [cfg.seed, v] for k, v in _stream_tags().items()}},
        "attacks": dict(mia.ATTACK_VERSIONS),
        "audit_config": jsonable(dataclasses.asdict(cfg)),
        "claim_source": "ledger.json" if ledger is not None else "site policy (no ledger)",
    }
    prov_findings = []
    if generator_sha is not None and recorded_generator is None:
        prov_findings.append({"level": "Amber", "area": "provenance", "subject": "synthetic folder",
                      "reason": ("the synthetic folder does not record which generator drew it, so the model attacks "
                                 "(--generator) may be about another release; re-sample it with `secgan sample`"),
                      "values": {}})
    report = build_report(result, site_id=site.site_id, claim=claim, rubric_path=rubric_path, provenance=provenance,
                          extra_findings=prov_findings)
    out_dir.mkdir(parents=True, exist_ok=True)
    annex_path = None
    if annex:
        annex_path = _annex(result, out_dir, site.site_id, real_cohorts=(members, nonmembers, others),
                            value_range=site.image.value_range,
                            case_ids=(list(members_ps.case_ids), list(nonmembers_ps.case_ids),
                                      [] if extra is None else extra[0]))
    signed = write_report(report, out_dir, plots=_plots(result), signing_key=signing_key, annex_path=annex_path)
    log.info("audit_done", site=site.site_id, verdict=signed["verdict"])
    return signed


def _stream_tags() -> dict[str, int]:
    from audits.core import _TAGS

    return dict(_TAGS)


__all__ = ["run_audit", "verify_report", "build_report", "write_report", "AuditConfig"]
