"""The demo's enrolment: each organisation's admin issues its people's and systems' roles
on the ledger, and a key nobody enrolled is refused."""

from __future__ import annotations

from medledger.client import LedgerClient, TxBuilder, enrol
from medledger.config import Home
from medledger.crypto import SigningKey
from medledger.demo.cast import Cast
from medledger.demo.story import Story
from medledger.errors import Rejected
from medledger.genesis import Genesis
from medledger.keys import load_key
from medledger.transport.credentials import ClientTls
from medledger.wire.v1 import tx_pb2

__all__ = ["run_enrolment"]


def run_enrolment(  # noqa: PLR0917 - the story's parts
    story: Story,
    address: str,
    cast: Cast,
    genesis: Genesis,
    homes: list[Home],
    tls: ClientTls | None,
) -> None:
    """The hospital (node0's organisation) enrols its vault as custodian and provider, the
    patient and the researcher; the insurer and the processor are enrolled by the
    organisations of node1 and node2 (node0's on a one-validator network)."""
    admins = [load_key(home.keys_dir / "client.json") for home in homes]
    insurer_admin = admins[1 % len(admins)]
    processor_admin = admins[2 % len(admins)]
    r = tx_pb2
    issued = [
        (cast.hospital, {
            cast.hospital: [r.ROLE_CUSTODIAN, r.ROLE_PROVIDER],
            cast.patient: [r.ROLE_PATIENT],
            cast.researcher: [r.ROLE_RESEARCHER],
        }),
        (insurer_admin, {cast.insurer: [r.ROLE_INSURER, r.ROLE_PAYER]}),
        (processor_admin, {cast.processor: [r.ROLE_PAYMENT_PROCESSOR]}),
    ]  # fmt: skip
    with LedgerClient(address, tls=tls) as client:
        for admin, roles in issued:
            organisation = genesis.organisation_of(admin.public_key)
            enrol(client, admin, organisation, roles)
            names = ", ".join(
                f"{cast.name(key.public_key)}: "
                + "+".join(r.Role.Name(role).removeprefix("ROLE_").lower() for role in held)
                for key, held in roles.items()
            )
            story.check(f"{organisation}'s admin issues roles", names, ok=True)
        stranger = SigningKey.generate()
        tx = TxBuilder(stranger, genesis.chain_id).create_account(
            expiry_height=client.status().height + 100
        )
        try:
            client.submit(tx)
        except Rejected as refused:
            story.check(
                "a key no member organisation enrolled opens an account",
                f"refused: {refused.status} {refused.field}: {refused.reason}",
                ok=(refused.status, refused.field) == ("PERMISSION_DENIED", "tx.public_key"),
                expected="PERMISSION_DENIED naming tx.public_key",
            )
        else:
            story.check(
                "a key no member organisation enrolled opens an account",
                "admitted",
                ok=False,
                expected="PERMISSION_DENIED naming tx.public_key",
            )
