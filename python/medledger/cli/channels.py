"""`medledger channel open|pay|refund|close|status|export` and `medledger hub start`:
micropayment channels as payers, providers and hubs use them. A payer's channels live in
its own LMDB (`--store`); a provider's node keeps its side in HOME/channels and serves
ChannelService; a hub keeps both sides in its `--store` and serves ChannelService."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.json_format import MessageToDict

from medledger.channels.billing import remittance_csv, remittance_json, statement
from medledger.channels.signing import sign_refund
from medledger.channels.store import ChannelStore
from medledger.cli.support import (
    CliError,
    add_connection,
    client_key,
    client_tls,
    hex_bytes,
    ledger_client,
    node_address,
)
from medledger.client import LedgerClient
from medledger.client.channels import ChannelWallet, payment, routed_lock
from medledger.config import DEFAULT_OPS_LISTEN, Home
from medledger.errors import Rejected
from medledger.ops.logs import configure_logging
from medledger.run.hub import run_hub
from medledger.transport.certs import CertificateError
from medledger.transport.credentials import ServerTls, sync_channel
from medledger.wire.v1 import channels_pb2, channels_pb2_grpc

if TYPE_CHECKING:
    from medledger.channels.store import ChannelStore
    from medledger.client.channels import ChannelWallet
    from medledger.wire.v1 import channels_pb2

__all__ = ["add_commands"]

DEFAULT_STORE = Path("medledger-channels")


def _wallet(args: argparse.Namespace) -> ChannelWallet:
    return ChannelWallet(client_key(args), ledger_client(args), args.store)


def _state_json(local: channels_pb2.LocalChannel) -> dict[str, Any]:
    if not local.latest.state:
        return {"sequence": 0}
    state = channels_pb2.ChannelState.FromString(local.latest.state)
    return {
        "sequence": state.sequence,
        "deposit_micros": state.deposit_micros,
        "payer_micros": state.payer_micros,
        "payee_micros": state.payee_micros,
        "locked_micros": sum(lock.amount_micros for lock in state.locks),
        "final": state.final,
    }


def _print(data: dict[str, Any]) -> None:
    print(json.dumps(data, indent=2))


def cmd_channel_open(args: argparse.Namespace) -> None:
    wallet = _wallet(args)
    local = wallet.open(
        payee=args.payee,
        deposit_micros=args.deposit,
        address=args.payee_address or node_address(args),
        challenge_blocks=args.challenge_blocks,
    )
    _print({"channel_id": local.channel_id.hex(), "deposit_micros": local.deposit_micros})


def cmd_channel_pay(args: argparse.Namespace) -> None:
    if args.count < 1 or args.batch < 1:
        raise CliError("--count and --batch must be at least 1")
    wallet = _wallet(args)

    def line() -> channels_pb2.Payment:
        return payment(
            args.amount,
            claim_id=args.claim,
            procedure_code=args.code,
            units=args.units,
            patient_ref=args.patient_ref,
            service_date=args.date,
        )

    height = int(wallet.ledger.status().height)

    async def run() -> channels_pb2.LocalChannel:
        async with wallet.session(args.channel) as session:
            sizes = [min(args.batch, args.count - s) for s in range(0, args.count, args.batch)]
            hashes = await session.invoices(len(sizes), args.to) if args.to else []
            pending: list[Awaitable[object]] = []
            for i, size in enumerate(sizes):
                lines = [line() for _ in range(size)]
                if not args.to:
                    pending.append(await session.send(lines))
                    continue
                lock = routed_lock(hashes[i], lines, height)
                pending.append(await session.send(lines, lock=lock, destination=args.to))
                pending.append(session.resolution(lock.hash))  # delivered to --to
            await asyncio.gather(*pending)
            return session.local

    began = time.perf_counter()
    local = asyncio.run(run())
    seconds = time.perf_counter() - began
    _print(
        {
            "acknowledged": args.count,
            "payments_per_s": round(args.count / seconds),
            **_state_json(local),
        }
    )


def cmd_channel_refund(args: argparse.Namespace) -> None:
    address = node_address(args)
    tls = client_tls(args)
    with LedgerClient(address, tls=tls) as ledger:
        chain_id = ledger.status().chain_id
    offer = channels_pb2.RefundOffer(
        channel_id=args.channel,
        payment=payment(args.amount, claim_id=args.claim, procedure_code=args.code),
    )
    sign_refund(client_key(args), chain_id, offer)

    with sync_channel(address, tls) as channel:
        try:
            channels_pb2_grpc.ChannelServiceStub(channel).OfferRefund(offer, timeout=30)
        except grpc.RpcError as error:
            raise CliError(f"refund refused: {error.details()}") from None
    _print(
        {
            "refund_payment_id": offer.payment.payment_id.hex(),
            "amount_micros": args.amount,
            "note": "offered; the payer includes it in its next state",
        }
    )


def cmd_channel_close(args: argparse.Namespace) -> None:
    wallet = _wallet(args)
    if args.settle:
        receipt = wallet.settle(args.channel)
    elif args.force:
        receipt = wallet.force_close(args.channel)
    else:
        receipt = wallet.close(args.channel)
    channel = wallet.on_chain(args.channel).channel
    _print(
        {
            "height": receipt.height,
            "status": channel.status,
            "challenge_end_height": channel.challenge_end_height,
            "payer_paid_micros": channel.payer_paid_micros,
            "payee_paid_micros": channel.payee_paid_micros,
        }
    )


def cmd_channel_status(args: argparse.Namespace) -> None:
    with ledger_client(args) as ledger:
        on_chain = ledger.get_channel(args.channel)
    out: dict[str, Any] = {"on_chain": MessageToDict(on_chain.channel), "height": on_chain.height}
    store = _store(args, required=False)
    if store is not None:
        local = store.channel(args.channel)
        if local is not None:
            out["local"] = _state_json(local)
        store.close()
    _print(out)


def cmd_hub_start(args: argparse.Namespace) -> None:
    configure_logging("text")
    server_tls = None
    if not args.insecure:
        if args.tls_key is None or args.tls_cert is None:
            raise CliError("give --tls-key and --tls-cert (the hub's certificate), or --insecure")
        try:
            server_tls = ServerTls(args.tls_key, args.tls_cert)
        except CertificateError as error:
            raise CliError(str(error)) from None
    tls = client_tls(args)
    asyncio.run(
        run_hub(
            client_key(args),
            args.store,
            node_address(args),
            args.listen,
            tls,
            server_tls,
            ops_listen=args.ops_listen,
        )
    )


def _store(args: argparse.Namespace, *, required: bool = True) -> ChannelStore | None:
    """The channel store to read: a node home's (the provider's side) or `--store`."""

    root = Home(args.home).root / "channels" if args.home else args.store
    if not root.exists():
        if required:
            raise CliError(f"{root}: no channel store here")
        return None
    return ChannelStore(root)


def cmd_channel_export(args: argparse.Namespace) -> None:
    store = _store(args)
    assert store is not None
    local = store.channel(args.channel)
    if local is None:
        raise CliError("this store holds no such channel")
    with ledger_client(args) as ledger:
        chain_id = ledger.status().chain_id
        try:
            on_chain = ledger.get_channel(args.channel).channel
        except Rejected:
            on_chain = None
    result = statement(local, store.updates(args.channel), on_chain, chain_id=chain_id)
    store.close()
    text = remittance_csv(result) if args.format == "csv" else remittance_json(result)
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if result.problems:
        raise CliError("does not reconcile: " + "; ".join(result.problems))


def add_commands(commands: Any) -> None:
    channel = commands.add_parser("channel", help="micropayment channels (payer and provider)")
    actions = channel.add_subparsers(dest="action", required=True)

    def with_store(sub: argparse.ArgumentParser) -> None:
        add_connection(sub)
        sub.add_argument(
            "--store", type=Path, default=DEFAULT_STORE, help="the payer's channel store"
        )

    opening = actions.add_parser("open", help="open a channel on the ledger (payer)")
    opening.add_argument("--payee", type=hex_bytes, required=True, help="payee public key (hex)")
    opening.add_argument("--deposit", type=int, required=True, help="micro-units to lock")
    opening.add_argument("--challenge-blocks", type=int, default=100)
    opening.add_argument("--payee-address", help="payee's ChannelService (default: --node)")
    with_store(opening)
    opening.set_defaults(run=cmd_channel_open)

    pay = actions.add_parser("pay", help="stream payments to the payee (payer)")
    pay.add_argument("channel", type=hex_bytes)
    pay.add_argument("--amount", type=int, required=True, help="micro-units per payment")
    pay.add_argument("--count", type=int, default=1)
    pay.add_argument("--batch", type=int, default=100, help="payments per signed state")
    pay.add_argument("--claim", default="", help="claim id of the billing line")
    pay.add_argument("--code", default="", help="CPT/HCPCS procedure code")
    pay.add_argument("--units", type=int, default=0)
    pay.add_argument("--patient-ref", type=hex_bytes, default=b"", help="pseudonym reference")
    pay.add_argument("--date", default="", help="service date YYYY-MM-DD")
    pay.add_argument(
        "--to",
        type=hex_bytes,
        default=b"",
        help="through a hub (the channel's payee): the provider's public key (hex)",
    )
    with_store(pay)
    pay.set_defaults(run=cmd_channel_pay)

    refund = actions.add_parser("refund", help="offer the payer a refund (provider)")
    refund.add_argument("channel", type=hex_bytes)
    refund.add_argument("--amount", type=int, required=True)
    refund.add_argument("--claim", default="")
    refund.add_argument("--code", default="")
    add_connection(refund)
    refund.set_defaults(run=cmd_channel_refund)

    close = actions.add_parser("close", help="close: cooperative, --force, or --settle")
    close.add_argument("channel", type=hex_bytes)
    close.add_argument("--force", action="store_true", help="unilateral close (latest state)")
    close.add_argument("--settle", action="store_true", help="settle after the window")
    with_store(close)
    close.set_defaults(run=cmd_channel_close)

    status = actions.add_parser("status", help="a channel on the ledger and in the store")
    status.add_argument("channel", type=hex_bytes)
    with_store(status)
    status.set_defaults(run=cmd_channel_status)

    export = actions.add_parser("export", help="statement as 835-style remittance JSON or CSV")
    export.add_argument("channel", type=hex_bytes)
    export.add_argument("--format", choices=("json", "csv"), default="json")
    export.add_argument("--out", type=Path)
    with_store(export)
    export.set_defaults(run=cmd_channel_export)
    _add_hub_commands(commands, with_store)


def _add_hub_commands(commands: Any, with_store: Callable[[argparse.ArgumentParser], None]) -> None:
    hub = commands.add_parser("hub", help="a channel hub routing payer -> hub -> provider")
    hub_actions = hub.add_subparsers(dest="action", required=True)
    start = hub_actions.add_parser(
        "start", help="serve ChannelService to payers and route to the hub's providers"
    )
    start.add_argument("--listen", default="127.0.0.1:7100", help="HOST:PORT to serve on")
    start.add_argument(
        "--ops-listen",
        default=DEFAULT_OPS_LISTEN,
        help="operations port: /metrics, /livez, /readyz (port 0: a free one, in the ready line)",
    )
    start.add_argument("--tls-key", type=Path, help="the hub's TLS key (0600)")
    start.add_argument("--tls-cert", type=Path, help="the hub's TLS certificate")
    with_store(start)
    start.set_defaults(run=cmd_hub_start)
