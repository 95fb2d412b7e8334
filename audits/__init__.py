"""Privacy audits run at a site: membership inference, memorisation, empirical epsilon, signed reports.

Entry points:

- ``audits.api.run_audit(*, site_config_path, synthetic_dir, out_dir, rubric_path=None,
  generator_checkpoint=None, seed=0, annex=False) -> dict`` (the signed report; writes
  ``report.json`` + ``report.html``, and ``annex.html`` with ``annex=True``);
- ``audits.merge.merge_reports(paths, *, out_dir, site_keys=None, keys=None) -> dict`` (federation summary);
- ``audits.signing.verify_report(path, *, site_keys=None, key=None) -> dict`` (raises on any tampering);
- ``audits.core.audit_arrays(members, nonmembers, synthetic, *, config, ...)`` on plain arrays
  (``audits.cohort.make_cohort``), for callers that hold the data in memory;
- ``secgan audit run | verify | merge`` on the command line (``audits.cli``).

Modules: ``stats`` (Clopper-Pearson, empirical epsilon, ROC), ``neighbours`` (blocked exact
nearest-neighbour search), ``features`` (pixels, contrastive embedding trained at audit time),
``membership`` (attacks and their evaluation), ``memorisation`` (DCR, NNDR, C_T, near-duplicates,
graded by patient-level permutation tests), ``copies`` (copies of any real image of the site, warp
tolerant), ``claim`` (the ledger's claim), ``merge`` (the federation summary), ``rubric`` +
``rubric-v3.toml`` (verdict; ``rubric-v1/v2.toml`` kept so old reports can be re-graded), ``report`` +
``templates/`` (HTML), ``signing``.
"""
