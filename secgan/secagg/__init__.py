"""Secure aggregation (secure-sum mode): the coordinator learns only the sum of the sites'
gradients for a shared fake batch.

Use the recipes below. The modules ``kdf``, ``prg`` and ``masking`` hold raw primitives (key
derivation, keystream, pairwise masks) that are only safe inside the protocol's state machines
(fresh, context-bound keys per attempt); they are deliberately not exported here.

Site:        key = load_agreement_key(path)  (secgan.keys.agreement)
             client = SecureSumClient(site_id=..., agreement_key=key, roster=manifest x25519_public
             map, run_id=..., policy_threshold=policy.secure_sum_threshold)
             reply = client.contribute(announce, gradient)          # or a SecAggRefusal is raised
Coordinator: agg = SecureSumAggregator(run_id=..., roster=...); ann = agg.begin(round=, step=,
             participants=, shape=); agg.accept(site_id, masked); ... agg.retry() on deadline;
             total = agg.result()
Provisioning: the agreement key and its file are ``secgan.keys.agreement``: public_hex =
             write_agreement_key(path, generate_agreement_key()), published in the signed manifest
             as the site's "x25519_public".

The services use these recipes: ``coordinator.secure_sum.SecureSumScheduler`` and the secure-sum
path of ``sites.node.SiteNode`` (``aggregation = "secure-sum"`` in coordinator.toml; the messages
live in ``secgan.net.schema``; ``masked`` travels packed to the ring's k bits, ``secgan.secagg.packing``).
"""

from secgan.secagg.fixedpoint import DEFAULT_CLIP, DEFAULT_FRAC_BITS, FixedPointCodec, modulus_bits_for
from secgan.secagg.noise import ASSUMPTION, distributed_noise_statement, draw_noise_share, noise_share_std
from secgan.secagg.aggregator import RoundStats, SecureSumAggregator, summarize_rounds
from secgan.secagg.client import SecureSumClient
from secgan.secagg.context import REFUSAL_CODES, RoundContext, SecAggRefusal, SecAggRoundFailed, resolve_threshold

__all__ = [
    "ASSUMPTION",
    "DEFAULT_CLIP",
    "DEFAULT_FRAC_BITS",
    "FixedPointCodec",
    "REFUSAL_CODES",
    "RoundContext",
    "RoundStats",
    "SecAggRefusal",
    "SecAggRoundFailed",
    "SecureSumAggregator",
    "SecureSumClient",
    "distributed_noise_statement",
    "draw_noise_share",
    "modulus_bits_for",
    "noise_share_std",
    "resolve_threshold",
    "summarize_rounds",
]
