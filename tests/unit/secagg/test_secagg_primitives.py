"""Known answers and edge cases for the secure-sum primitives (codec, X25519/HKDF, ChaCha20)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from secgan.core.errors import ConfigError, CryptoError, SecganError
from secgan.keys.agreement import generate_agreement_key, public_hex
from secgan.secagg import FixedPointCodec, RoundContext, modulus_bits_for
from secgan.secagg.kdf import pair_info, pair_key, shared_secret
from secgan.secagg.masking import pairwise_mask
from secgan.secagg.prg import expand_mask, keystream

VECTORS = json.loads((Path(__file__).parents[2] / "vectors" / "secagg_known_answers.json").read_text())


# -- fixed point -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "n, clip, frac, noise, expected",
    [(4, 64.0, 32, 0.0, 43), (1, 1.0, 0, 0.0, 3), (3, 64.0, 32, 64.0, 44), (32, 64.0, 32, 0.0, 46)],
)
def test_modulus_bits_known_answers(n, clip, frac, noise, expected):
    k = modulus_bits_for(n, clip=clip, frac_bits=frac, noise_std_total=noise)
    assert k == expected
    bound = (n * 2 * clip + 20 * noise) * 2**frac
    assert bound < 2 ** (k - 1) and bound >= 2 ** (k - 2)  # minimal


def test_modulus_too_large_is_a_config_error():
    with pytest.raises(ConfigError, match="modulus"):
        modulus_bits_for(2**20, clip=64.0, frac_bits=40)


@pytest.mark.parametrize("kwargs", [{"frac_bits": -1}, {"frac_bits": 49}, {"clip": 0.0}, {"clip": float("nan")},
                                    {"modulus_bits": 64}, {"modulus_bits": 1}, {"clip": 2.0**30, "frac_bits": 30}])
def test_codec_rejects_bad_parameters(kwargs):
    with pytest.raises(ConfigError):
        FixedPointCodec(**kwargs)


def test_codec_round_trip_negative_and_clipped_values():
    codec = FixedPointCodec(frac_bits=16, clip=8.0, modulus_bits=63)
    x = np.array([-8.0, -3.14159, -2**-17, 0.0, 2**-17, 7.5, 9.0, -100.0])
    out = codec.decode_sum(codec.encode(x))
    clipped = np.clip(x, -8.0, 8.0)
    assert np.all(np.abs(out - clipped) <= codec.quantisation_bound(1))
    assert out[-1] == -8.0 and out[-2] == 8.0
    assert codec.clip_values(x)[1] == 2


def test_codec_sum_wraps_individual_values_but_not_the_sum():
    codec = FixedPointCodec.for_sites(3, clip=1.0, frac_bits=8)
    vals = [np.array([1.0, -1.0, 0.5]), np.array([1.0, -1.0, -0.25]), np.array([1.0, -1.0, 0.0])]
    total = np.zeros(3, dtype=np.uint64)
    for v in vals:
        total = codec.add(total, codec.encode(v))
    np.testing.assert_allclose(codec.decode_sum(total), [3.0, -3.0, 0.25])
    assert np.all(total <= codec.mask)


def test_codec_refuses_non_finite_input_and_noise():
    codec = FixedPointCodec()
    with pytest.raises(SecganError, match="non-finite"):
        codec.encode(np.array([0.0, np.inf]))
    with pytest.raises(SecganError, match="noise"):
        codec.encode(np.zeros(2), noise=np.array([np.nan, 0.0]))
    with pytest.raises(SecganError, match="range"):
        codec.encode(np.zeros(1), noise=np.array([2.0**31]))


def test_codec_supports_matches_headroom_rule():
    codec = FixedPointCodec.for_sites(4)
    assert codec.supports(4) and not codec.supports(8)


# -- X25519 / HKDF ----------------------------------------------------------------------------
def test_x25519_rfc7748_vector():
    a = X25519PrivateKey.from_private_bytes(bytes.fromhex(VECTORS["private_keys"]["site-a"]))
    b = X25519PrivateKey.from_private_bytes(bytes.fromhex(VECTORS["private_keys"]["site-b"]))
    assert public_hex(a) == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    assert public_hex(b) == "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    expected = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert shared_secret(a, b.public_key()).hex() == expected == shared_secret(b, a.public_key()).hex()


def _vector_keys():
    return {k: X25519PrivateKey.from_private_bytes(bytes.fromhex(v)) for k, v in VECTORS["private_keys"].items()}


def _vector_context(keys) -> RoundContext:
    c = VECTORS["context"]
    codec = FixedPointCodec(frac_bits=c["frac_bits"], clip=c["clip"], modulus_bits=c["modulus_bits"])
    return RoundContext(run_id=c["run_id"], round=c["round"], step=c["step"], attempt=c["attempt"],
                        participants=tuple((k, public_hex(keys[k])) for k in sorted(keys)), codec=codec,
                        shape=tuple(c["shape"]))


def test_context_digest_pair_key_and_masks_known_answers():
    keys = _vector_keys()
    ctx = _vector_context(keys)
    digest = ctx.digest()
    assert digest.hex() == VECTORS["context_digest"]
    secret = shared_secret(keys["site-a"], keys["site-b"].public_key())
    k_ab = pair_key(secret, id_a="site-a", id_b="site-b", context_digest=digest)
    assert k_ab.hex() == VECTORS["pair_key_a_b"]
    assert k_ab == pair_key(secret, id_a="site-b", id_b="site-a", context_digest=digest)  # symmetric
    assert [int(w) for w in expand_mask(k_ab, 4, ctx.codec.modulus_bits)] == VECTORS["mask_words_a_b"]
    peers = {k: v.public_key() for k, v in keys.items()}
    total = np.zeros(6, dtype=np.uint64)
    for site, key in keys.items():
        m = pairwise_mask(own_id=site, own_key=key, peers=peers, context_digest=digest, n_words=6,
                          modulus_bits=ctx.codec.modulus_bits)
        masked = ctx.codec.add(ctx.codec.encode(np.array(VECTORS["inputs"][site])), m)
        assert [int(v) for v in masked] == VECTORS["masked"][site]
        total = ctx.codec.add(total, masked)
    plain = np.clip(np.array(list(VECTORS["inputs"].values())), -64, 64).sum(axis=0)
    assert np.all(np.abs(ctx.codec.decode_sum(total) - plain) <= ctx.codec.quantisation_bound(3))


def test_pair_key_changes_with_every_bound_field():
    keys = _vector_keys()
    base = _vector_context(keys)
    secret = shared_secret(keys["site-a"], keys["site-b"].public_key())
    variants = [
        RoundContext(**{**base.__dict__, "attempt": base.attempt + 1}),
        RoundContext(**{**base.__dict__, "round": base.round + 1}),
        RoundContext(**{**base.__dict__, "step": base.step + 1}),
        RoundContext(**{**base.__dict__, "run_id": "other"}),
        RoundContext(**{**base.__dict__, "participants": base.participants[:2]}),
        RoundContext(**{**base.__dict__, "shape": (3, 2)}),
        RoundContext(**{**base.__dict__, "codec": FixedPointCodec(frac_bits=31, clip=64.0, modulus_bits=44)}),
    ]
    ks = {pair_key(secret, id_a="site-a", id_b="site-b", context_digest=c.digest()) for c in [base, *variants]}
    assert len(ks) == len(variants) + 1
    assert pair_info("a", "b", bytes(32)).startswith(b"secgan/secagg/v1/pairwise-mask-key\x00a\x00b\x00")
    with pytest.raises(CryptoError):
        pair_info("a", "a", bytes(32))


def test_low_order_public_key_is_refused():
    with pytest.raises(CryptoError):
        shared_secret(generate_agreement_key(), X25519PublicKey.from_public_bytes(bytes(32)))


# -- ChaCha20 ---------------------------------------------------------------------------------
def test_chacha20_rfc8439_block_vector():
    key = bytes(range(32))
    nonce = bytes.fromhex("01000000" + "000000090000004a00000000")  # counter 1 || nonce
    expected = ("10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
                "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e")
    assert keystream(key, 64, nonce=nonce).hex() == expected


def test_expand_mask_uses_whole_key_and_stays_in_ring():
    k1 = bytes(32)
    k2 = bytes(31) + b"\x01"  # differs only in the last byte
    a, b = expand_mask(k1, 1000, 20), expand_mask(k2, 1000, 20)
    assert a.dtype == np.uint64 and np.all(a < 2**20) and np.all(b < 2**20)
    assert np.count_nonzero(a == b) < 10
    with pytest.raises(CryptoError):
        expand_mask(bytes(16), 4, 20)
