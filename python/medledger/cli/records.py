"""`medledger record|consent|access|verify-proof`: medical records, patient consent and
the access audit, as custodians, patients, grantees and auditors use them."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from medledger.cli.support import (
    CliError,
    add_connection,
    client_key,
    client_tls,
    hex_bytes,
    ledger_client,
)
from medledger.client import LedgerClient, TxBuilder, new_tx_id, tx_proof
from medledger.client.access_log import access_table
from medledger.client.anchor_proof import anchor_proof_document, load, verify_anchor_proof
from medledger.client.proofs import ProofError
from medledger.client.records import RecordsClient
from medledger.config import Home
from medledger.fhir.export import access_event_to_fhir, consent_to_fhir
from medledger.fhir.ingest import BundleError, resources_of_bundle
from medledger.genesis import Genesis
from medledger.wire.v1 import records_pb2

__all__ = ["add_commands"]

DAY_MS = 24 * 3600 * 1000
EXPIRY_BLOCKS = 100
PURPOSES = {
    name.removeprefix("PURPOSE_").lower().replace("_", "-"): value
    for name, value in records_pb2.Purpose.items()
    if value != records_pb2.PURPOSE_UNSPECIFIED
}


ERASURE_REASONS = {
    name.removeprefix("ERASURE_REASON_").lower().replace("_", "-"): value
    for name, value in records_pb2.ErasureReason.items()
    if value
}
REVOCATION_REASONS = {
    name.removeprefix("REVOCATION_REASON_").lower().replace("_", "-"): value
    for name, value in records_pb2.RevocationReason.items()
    if value
}


def _address(args: argparse.Namespace) -> str:
    if args.node:
        return str(args.node)
    if args.home:
        return Home(args.home).load_config().listen
    raise CliError("give --node HOST:PORT (or --home DIR of the node)")


def _records(args: argparse.Namespace) -> RecordsClient:
    address = _address(args)
    tls = client_tls(args)
    with LedgerClient(address, tls=tls) as client:
        chain_id = client.status().chain_id
    return RecordsClient(address, chain_id, tls=tls)


# Refusals from the node or vault raise `Rejected`, which `medledger.cli.main` prints as
# "refused (STATUS): field: reason" with exit status 1.

# ---------------------------------------------------------------------- records


def cmd_record_put(args: argparse.Namespace) -> None:
    try:
        resources = resources_of_bundle(args.bundle.read_bytes())
    except BundleError as error:
        raise CliError(str(error)) from None
    custodian = client_key(args)
    with _records(args) as client:
        for resource in resources:
            stored = client.put(
                custodian,
                patient=args.patient,
                resource_type=resource.resource_type,
                category=resource.category,
                security_labels=resource.security_labels,
                content=resource.content,
            )
            line = {
                "record_id": stored.record_id.hex(),
                "version": stored.version,
                "resource_type": resource.resource_type,
                "height": stored.height,
                "anchor_tx_id": stored.tx_id.hex(),
            }
            print(json.dumps(line))


def cmd_record_get(args: argparse.Namespace) -> None:
    key = client_key(args)
    with _records(args) as client:
        fetched = client.fetch(
            key,
            args.record_id,
            purpose=PURPOSES[args.purpose],
            version=args.version,
            emergency_reason=args.emergency or "",
        )
    print(fetched.content.decode())


def cmd_record_erase(args: argparse.Namespace) -> None:
    key = client_key(args)
    with _records(args) as client:
        receipt = client.erase(key, args.record_id, ERASURE_REASONS[args.reason])
    print(json.dumps({"erasure_tx_id": receipt.tx_id.hex(), "height": receipt.height}))


def cmd_record_proof(args: argparse.Namespace) -> None:
    reader = client_key(args)  # the custodian, who signed the anchor, or an auditor
    with _records(args) as records:
        versions = records.record(args.record_id, reader).versions
    chosen = [v for v in versions if v.version == args.version] if args.version else versions
    if not chosen:
        raise CliError(f"version: record has no version {args.version}")
    with ledger_client(args, reader=reader) as ledger:
        response = ledger.get_transaction(tx_id=chosen[-1].tx_id)
    if not response.HasField("tx"):
        raise CliError("the node serves this anchor's proof only to its custodian or an auditor")
    args.out.write_text(json.dumps(anchor_proof_document(response), indent=2) + "\n")
    print(f"wrote {args.out}")


def cmd_verify_proof(args: argparse.Namespace) -> None:
    try:
        document = load(str(args.file))
        if isinstance(document, dict) and document.get("format") == tx_proof.FORMAT:
            included = tx_proof.verify_tx_proof(document, Genesis.load(args.genesis))
            print(
                f"proof OK: leaf {included.leaf_hash.hex()} (transaction "
                f"{included.tx_id.hex()}) at index {included.index} of block "
                f"{included.height} ({included.block_hash.hex()}), certified by more than 2/3 "
                f"of the genesis validators"
            )
            return
        proof = verify_anchor_proof(document, Genesis.load(args.genesis))
    except (ProofError, OSError, ValueError) as error:
        raise CliError(f"proof INVALID: {error}") from None
    print(
        f"proof OK: record {proof.record_id.hex()} version {proof.version} "
        f"commitment {proof.commitment.hex()} anchored by {proof.custodian.hex()} "
        f"in block {proof.height} ({proof.block_hash.hex()}), certified by more than 2/3 "
        f"of the genesis validators"
    )


# ---------------------------------------------------------------------- consent


def cmd_consent_grant(args: argparse.Namespace) -> None:
    now = int(time.time() * 1000)
    consent_id = new_tx_id()
    with ledger_client(args) as client:
        status = client.status()
        tx = TxBuilder(client_key(args), status.chain_id).grant_consent(
            consent_id=consent_id,
            grantee=args.grantee,
            purposes=[PURPOSES[p] for p in args.purpose],
            resource_types=args.resource_type or (),
            categories=args.category or (),
            record_ids=args.record or (),
            deny=args.deny,
            valid_from_ms=now,
            valid_until_ms=now + args.days * DAY_MS,
            expiry_height=status.height + EXPIRY_BLOCKS,
        )
        receipt = client.submit(tx, wait=True)
    print(
        json.dumps({"consent_id": consent_id.hex(), "height": receipt.height, "code": receipt.code})
    )


def cmd_consent_revoke(args: argparse.Namespace) -> None:
    with ledger_client(args) as client:
        status = client.status()
        tx = TxBuilder(client_key(args), status.chain_id).revoke_consent(
            consent_id=args.consent_id,
            reason=REVOCATION_REASONS[args.reason],
            expiry_height=status.height + EXPIRY_BLOCKS,
        )
        receipt = client.submit(tx, wait=True)
    print(json.dumps({"height": receipt.height, "code": receipt.code, "message": receipt.message}))


def cmd_consent_list(args: argparse.Namespace) -> None:
    with _records(args) as client:
        consents = client.consents(args.patient, client_key(args))
    print(json.dumps([consent_to_fhir(c) for c in consents], indent=2))


# ---------------------------------------------------------------------- access


def cmd_access_log(args: argparse.Namespace) -> None:
    with _records(args) as client:
        events = client.access_events(args.patient, client_key(args))
    if args.fhir:
        print(json.dumps([access_event_to_fhir(e) for e in events], indent=2))
        return
    title = f"Who accessed the records of {args.patient.hex()[:16]}…"
    Console(width=200).print(access_table(events, title, lambda key: key.hex()[:16]))


def cmd_access_review(args: argparse.Namespace) -> None:
    key = client_key(args)
    with _records(args) as client:
        reviews = client.reviews(key)
    if args.json:
        print(json.dumps([_review_json(e, words, salt) for e, words, salt in reviews], indent=2))
        return
    title = "Break-glass releases awaiting the privacy officer's review"
    events = [event for event, _, _ in reviews]
    Console(width=200).print(access_table(events, title, lambda k: k.hex()[:16]))
    for event, words, _ in reviews:
        print(f"{event.tx_id.hex()[:12]}: {words or '(erased with the record)'}")


def _review_json(event: records_pb2.AccessEvent, words: str, salt: bytes) -> dict[str, object]:
    access = event.access
    return {
        "height": event.height,
        "tx_id": event.tx_id.hex(),
        "patient": event.patient.hex(),
        "requester": access.requester.hex(),
        "record_id": access.record_id.hex(),
        "version": access.version,
        "reason": access.reason,
        "emergency_reason": words,
        "emergency_reason_hash": access.emergency_reason_hash.hex(),
        "emergency_reason_salt": salt.hex(),
        "time_ms": access.time_ms,
    }


# ---------------------------------------------------------------------- the parser


def add_commands(commands: Any) -> None:  # noqa: PLR0915 - one table
    record = commands.add_parser("record", help="medical records in a custodian's vault")
    actions = record.add_subparsers(dest="action", required=True)
    put = actions.add_parser("put", help="validate a FHIR Bundle, store it encrypted, anchor it")
    put.add_argument("bundle", type=Path)
    put.add_argument("--patient", type=hex_bytes, required=True, help="patient public key (hex)")
    add_connection(put)
    put.set_defaults(run=cmd_record_put)
    get = actions.add_parser("get", help="fetch and decrypt a record as a grantee")
    get.add_argument("record_id", type=hex_bytes)
    get.add_argument("--purpose", choices=sorted(PURPOSES), required=True)
    get.add_argument("--version", type=int, default=0, help="default: the latest")
    get.add_argument("--emergency", help="declare break-glass access, with the reason")
    add_connection(get)
    get.set_defaults(run=cmd_record_get)
    erase = actions.add_parser("erase", help="destroy a record's key and salt (custodian)")
    erase.add_argument("record_id", type=hex_bytes)
    erase.add_argument("--reason", choices=sorted(ERASURE_REASONS), required=True)
    add_connection(erase)
    erase.set_defaults(run=cmd_record_erase)
    proof = actions.add_parser("proof", help="write an anchor's offline proof to a file")
    proof.add_argument("record_id", type=hex_bytes)
    proof.add_argument("--version", type=int, default=0, help="default: the latest")
    proof.add_argument("--out", type=Path, required=True)
    add_connection(proof)
    proof.set_defaults(run=cmd_record_proof)

    verify = commands.add_parser(
        "verify-proof",
        help="check an anchor proof, or an explorer's transaction proof, offline against a genesis",
    )
    verify.add_argument("file", type=Path)
    verify.add_argument("--genesis", type=Path, required=True)
    verify.set_defaults(run=cmd_verify_proof)

    consent = commands.add_parser("consent", help="a patient's consents")
    consent_actions = consent.add_subparsers(dest="action", required=True)
    grant = consent_actions.add_parser("grant", help="permit (or --deny) a grantee to read")
    grant.add_argument("--grantee", type=hex_bytes, required=True)
    grant.add_argument("--purpose", choices=sorted(PURPOSES), action="append", required=True)
    grant.add_argument("--resource-type", action="append", help="e.g. Observation (repeatable)")
    grant.add_argument("--category", action="append")
    grant.add_argument("--record", type=hex_bytes, action="append", help="a record id")
    grant.add_argument("--days", type=int, default=30, help="valid from now for this many days")
    grant.add_argument("--deny", action="store_true")
    add_connection(grant)
    grant.set_defaults(run=cmd_consent_grant)
    revoke = consent_actions.add_parser("revoke", help="revoke a consent (a new version)")
    revoke.add_argument("consent_id", type=hex_bytes)
    revoke.add_argument("--reason", choices=sorted(REVOCATION_REASONS), default="patient-withdrew")
    add_connection(revoke)
    revoke.set_defaults(run=cmd_consent_revoke)
    listing = consent_actions.add_parser("list", help="a patient's consents as FHIR Consent")
    listing.add_argument("--patient", type=hex_bytes, required=True)
    add_connection(listing)  # signed: the patient, a custodian, a grantee or an auditor
    listing.set_defaults(run=cmd_consent_list)

    access = commands.add_parser("access", help="the access audit")
    access_actions = access.add_subparsers(dest="action", required=True)
    log = access_actions.add_parser("log", help="who accessed a patient's records, when and why")
    log.add_argument("--patient", type=hex_bytes, required=True)
    log.add_argument("--fhir", action="store_true", help="print FHIR AuditEvent JSON")
    add_connection(log)  # signed: the patient, a custodian, a requester or an auditor
    log.set_defaults(run=cmd_access_log)
    review = access_actions.add_parser(
        "review", help="the vault's break-glass releases (its custodian or an auditor)"
    )
    review.add_argument("--json", action="store_true", help="print JSON, not a table")
    add_connection(review)
    review.set_defaults(run=cmd_access_review)
