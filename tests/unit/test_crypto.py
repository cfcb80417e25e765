"""Ed25519 and SHA-256 against outside vectors, and the strictness a validator relies on."""

from __future__ import annotations

import hashlib

import cryptography_vectors
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from medledger._core import VERIFY_BATCH_MAX, admit_batch
from medledger.crypto import (
    SigningKey,
    sha256,
    signing_message,
    tx_signing_message,
    verify,
    verify_batch,
)
from medledger.errors import InvalidArgument, LimitExceeded
from tests.conftest import load_vector


def wycheproof_cases() -> list[tuple[int, bytes, bytes, bytes, bool]]:
    data = load_vector("wycheproof/ed25519_test.json")
    cases = [
        (
            test["tcId"],
            bytes.fromhex(group["publicKey"]["pk"]),
            bytes.fromhex(test["msg"]),
            bytes.fromhex(test["sig"]),
            test["result"] == "valid",
        )
        for group in data["testGroups"]
        for test in group["tests"]
    ]
    assert len(cases) == data["numberOfTests"] == 151
    return cases


def test_every_wycheproof_vector_gets_its_verdict_from_verify() -> None:
    wrong = [
        tc_id
        for tc_id, key, msg, sig, valid in wycheproof_cases()
        if verify(key, msg, sig) != valid
    ]
    assert wrong == []


def test_every_wycheproof_vector_gets_its_verdict_from_one_verify_batch_call() -> None:
    cases = wycheproof_cases()
    verdicts = verify_batch([c[1] for c in cases], [c[2] for c in cases], [c[3] for c in cases])
    assert [c[0] for c, v in zip(cases, verdicts, strict=True) if v != c[4]] == []


def rfc8032_sign_input() -> list[tuple[bytes, bytes, bytes, bytes]]:
    """djb's sign.input (its first lines are RFC 8032 §7.1 TEST 1-3), shipped by pyca."""
    lines = cryptography_vectors.open_vector_file("asymmetric/Ed25519/sign.input", "r").read()
    vectors = []
    for line in lines.splitlines():
        secret, public, message, signed, _ = line.split(":")
        vectors.append(
            (
                bytes.fromhex(secret)[:32],
                bytes.fromhex(public),
                bytes.fromhex(message),
                bytes.fromhex(signed)[:64],
            )
        )
    return vectors


def test_rfc8032_vectors_sign_to_the_expected_signature_and_verify() -> None:
    vectors = rfc8032_sign_input()
    assert len(vectors) == 1024
    assert vectors[0][1].hex() == (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"  # RFC 8032 TEST 1
    )
    for seed, public, message, signature in vectors:
        key = SigningKey.from_seed(seed)
        assert key.public_key == public
        assert key.sign(message) == signature
        assert verify(public, message, signature)
    assert all(
        verify_batch([v[1] for v in vectors], [v[2] for v in vectors], [v[3] for v in vectors])
    )


def test_signatures_interoperate_with_pyca_cryptography() -> None:
    seed = bytes(range(32))
    theirs = Ed25519PrivateKey.from_private_bytes(seed)
    ours = SigningKey.from_seed(seed)
    assert ours.sign(b"claim 42") == theirs.sign(b"claim 42")
    theirs.public_key().verify(ours.sign(b"claim 42"), b"claim 42")


def test_non_canonical_s_is_rejected_even_though_the_equation_holds() -> None:
    key = SigningKey.from_seed(b"\x05" * 32)
    signature = key.sign(b"m")
    order = 2**252 + 27742317777372353535851937790883648493
    s = int.from_bytes(signature[32:], "little") + order
    malleated = signature[:32] + s.to_bytes(32, "little")
    assert not verify(key.public_key, b"m", malleated)
    assert verify_batch([key.public_key], [b"m"], [malleated]) == [False]


@pytest.mark.parametrize(
    ("public_key", "signature"),
    [
        (b"", b""),
        (b"\x01" * 31, b"\x00" * 64),
        (b"\x01" * 33, b"\x00" * 64),
        (None, b"\x00" * 63),
        (None, b"\x00" * 65),
    ],
)
def test_malformed_keys_and_signatures_are_invalid_not_crashes(
    public_key: bytes | None, signature: bytes
) -> None:
    key = public_key if public_key is not None else SigningKey.generate().public_key
    assert verify(key, b"m", signature) is False
    assert verify_batch([key], [b"m"], [signature]) == [False]


def test_verify_batch_rejects_lists_of_different_lengths() -> None:
    with pytest.raises(InvalidArgument) as raised:
        verify_batch([b"a"], [], [])
    assert "public_keys" in raised.value.field


def test_admit_batch_refuses_lists_of_different_lengths_as_invalid_argument() -> None:
    key = SigningKey.generate()
    with pytest.raises(InvalidArgument) as raised:
        admit_batch("net-1", [b"body"], [key.public_key], [])
    assert raised.value.field == "bodies, public_keys, signatures"
    assert "got 1, 1, 0" in raised.value.reason
    assert isinstance(raised.value, ValueError)  # what callers caught before


def test_verify_batch_threads_must_be_in_range() -> None:
    with pytest.raises(InvalidArgument) as raised:
        verify_batch([], [], [], threads=0)
    assert raised.value.field == "threads"


@settings(max_examples=40, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=160),
    bad=st.integers(min_value=0),
    tamper=st.sampled_from(["signature", "message", "key"]),
)
def test_a_batch_reports_one_bad_signature_at_its_index(count: int, bad: int, tamper: str) -> None:
    bad %= count
    keys = [SigningKey.from_seed(bytes([i % 251]) * 32) for i in range(count)]
    messages = [b"payment %d" % i for i in range(count)]
    signatures = [k.sign(m) for k, m in zip(keys, messages, strict=True)]
    public_keys = [k.public_key for k in keys]
    if tamper == "signature":
        signatures[bad] = signatures[bad][:-1] + bytes([signatures[bad][-1] ^ 1])
    elif tamper == "message":
        messages[bad] += b"!"
    else:
        public_keys[bad] = SigningKey.from_seed(b"\xff" * 32).public_key
    verdicts = verify_batch(public_keys, messages, signatures)
    assert [i for i, ok in enumerate(verdicts) if not ok] == [bad]


def test_one_and_two_threads_give_the_same_verdicts() -> None:
    keys = [SigningKey.generate() for _ in range(50)]
    messages = [b"m%d" % i for i in range(50)]
    signatures = [k.sign(m) for k, m in zip(keys, messages, strict=True)]
    signatures[17] = bytes(64)
    public_keys = [k.public_key for k in keys]
    one = verify_batch(public_keys, messages, signatures, threads=1)
    two = verify_batch(public_keys, messages, signatures, threads=2)
    assert one == two
    assert one.count(False) == 1


def test_seed_round_trips_and_repr_never_shows_it() -> None:
    key = SigningKey.generate()
    assert SigningKey.from_seed(key.seed()).public_key == key.public_key
    assert key.seed().hex() not in repr(key)
    assert key.public_key.hex() in repr(key)


def test_from_seed_names_the_field_on_wrong_length() -> None:
    with pytest.raises(InvalidArgument) as raised:
        SigningKey.from_seed(b"short")
    assert raised.value.field == "seed"


@given(st.binary(max_size=300))
def test_sha256_matches_hashlib(data: bytes) -> None:
    assert sha256(data) == hashlib.sha256(data).digest()


def test_signing_messages_are_domain_separated_by_purpose_and_chain() -> None:
    assert tx_signing_message("net-1", b"body") == b"medledger/v1/tx\x00\x05net-1body"
    assert signing_message("vote", "net-1", b"x") != signing_message("tx", "net-1", b"x")
    assert tx_signing_message("net-1", b"x") != tx_signing_message("net-2", b"x")


def test_a_signature_for_one_chain_does_not_verify_on_another() -> None:
    key = SigningKey.generate()
    signature = key.sign(tx_signing_message("net-1", b"transfer"))
    assert verify(key.public_key, tx_signing_message("net-1", b"transfer"), signature)
    assert not verify(key.public_key, tx_signing_message("net-2", b"transfer"), signature)


def test_bad_chain_ids_and_domains_are_rejected_by_name() -> None:
    with pytest.raises(InvalidArgument) as raised:
        signing_message("tx", "", b"")
    assert raised.value.field == "chain_id"
    with pytest.raises(InvalidArgument) as raised:
        signing_message("bogus", "net", b"")
    assert raised.value.field == "domain"


def test_a_batch_over_verify_batch_max_is_refused_with_the_limit_named() -> None:
    too_many = VERIFY_BATCH_MAX + 1
    with pytest.raises(LimitExceeded) as raised:
        verify_batch([b""] * too_many, [b""] * too_many, [b""] * too_many)
    assert raised.value.limit_name == "VERIFY_BATCH_MAX"
    assert (raised.value.limit, raised.value.actual) == (VERIFY_BATCH_MAX, too_many)
