"""Signature verification: medledger's Rust batch verifier beside the libraries a Python
user would reach for, on the same 2,048 signatures in the same run."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from pytest_benchmark.fixture import BenchmarkFixture

from bench.conftest import SignedBatch
from medledger.crypto import verify, verify_batch


def cryptography_loop(batch: SignedBatch) -> list[bool]:
    verdicts = []
    for key, message, signature in zip(
        batch.public_keys, batch.messages, batch.signatures, strict=True
    ):
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
            verdicts.append(True)
        except InvalidSignature:
            verdicts.append(False)
    return verdicts


def pynacl_loop(batch: SignedBatch) -> list[bool]:
    verdicts = []
    for key, message, signature in zip(
        batch.public_keys, batch.messages, batch.signatures, strict=True
    ):
        try:
            VerifyKey(key).verify(message, signature)
            verdicts.append(True)
        except BadSignatureError:
            verdicts.append(False)
    return verdicts


@pytest.mark.benchmark(group="verify 2048 signatures")
def test_peer_cryptography_verify_loop(
    benchmark: BenchmarkFixture, signed_batch: SignedBatch
) -> None:
    assert all(benchmark(cryptography_loop, signed_batch))


@pytest.mark.benchmark(group="verify 2048 signatures")
def test_peer_pynacl_verify_loop(benchmark: BenchmarkFixture, signed_batch: SignedBatch) -> None:
    assert all(benchmark(pynacl_loop, signed_batch))


@pytest.mark.benchmark(group="verify 2048 signatures")
def test_medledger_verify_loop(benchmark: BenchmarkFixture, signed_batch: SignedBatch) -> None:
    def loop() -> list[bool]:
        return [
            verify(k, m, s)
            for k, m, s in zip(
                signed_batch.public_keys,
                signed_batch.messages,
                signed_batch.signatures,
                strict=True,
            )
        ]

    assert all(benchmark(loop))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.benchmark(group="verify 2048 signatures")
def test_medledger_verify_batch(
    benchmark: BenchmarkFixture, signed_batch: SignedBatch, threads: int
) -> None:
    verdicts = benchmark(
        verify_batch,
        signed_batch.public_keys,
        signed_batch.messages,
        signed_batch.signatures,
        threads=threads,
    )
    assert all(verdicts)


@pytest.mark.benchmark(group="verify 2048 signatures, 2048 distinct keys")
def test_peer_cryptography_verify_loop_distinct_keys(
    benchmark: BenchmarkFixture, distinct_signed_batch: SignedBatch
) -> None:
    assert all(benchmark(cryptography_loop, distinct_signed_batch))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.benchmark(group="verify 2048 signatures, 2048 distinct keys")
def test_medledger_verify_batch_distinct_keys(
    benchmark: BenchmarkFixture, distinct_signed_batch: SignedBatch, threads: int
) -> None:
    verdicts = benchmark(
        verify_batch,
        distinct_signed_batch.public_keys,
        distinct_signed_batch.messages,
        distinct_signed_batch.signatures,
        threads=threads,
    )
    assert all(verdicts)
