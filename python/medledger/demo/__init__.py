"""The README's main job, `medledger demo`: start real validator processes on 127.0.0.1
(LMDB) and tell one story across the product — payments on the ledger, records with
consent and the access log, micropayments through a processor's hub — checking every
step's outcome, then re-verify every node's chain from its files after shutdown.

Who runs what: the hospital's organisation key is node0's (its vault holds the records,
its node serves the channels paying it); the insurer talks to node1, the processor's hub
to node2 and the patient to node3 (fewer validators: the same nodes in turn), so every
step also shows that what one validator commits, the others enforce.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.text import Text

from medledger.config import Home
from medledger.crypto import SigningKey
from medledger.demo.cast import Cast
from medledger.demo.channels import ChannelDemo
from medledger.demo.members import run_enrolment
from medledger.demo.payments import run_payments
from medledger.demo.records import PHI, run_records
from medledger.demo.story import DemoFailed, Story
from medledger.demo.verify import verify_after_shutdown
from medledger.genesis import Allocation, Genesis
from medledger.keys import load_key
from medledger.run.homes import free_base_port, init_home, init_network, network_homes
from medledger.run.launcher import NodeProcess, start_node
from medledger.transport.certs import Identity, load_identity
from medledger.transport.credentials import ClientTls

__all__ = ["CHANNEL_PAYMENTS", "STREAMED_TXS", "DemoFailed", "run_demo"]

CHAIN_ID = "medledger-demo"
STREAMED_TXS = 20_000
CHANNEL_PAYMENTS = 5_000
FUND_MICROS = 10_000_000_000
"""What the genesis gives each organisation (the hospital, the insurer, the processor)."""


def _init(
    root: Path, validators: int, funded: tuple[SigningKey, ...], *, insecure: bool
) -> tuple[Genesis, list[Home]]:
    extra = tuple(Allocation(key.public_key, FUND_MICROS) for key in funded)
    if validators == 1:
        home = Home(root / "node0")
        genesis = init_home(
            home,
            CHAIN_ID,
            "127.0.0.1:0",
            FUND_MICROS,
            extra_allocations=extra,
            insecure=insecure,
        )
        return genesis, [home]
    base_port = free_base_port(2 * validators)
    genesis = init_network(
        root,
        CHAIN_ID,
        validators,
        base_port,
        FUND_MICROS,
        extra_allocations=extra,
        insecure=insecure,
    )
    return genesis, network_homes(root, validators)


def _ca(home: Home) -> Identity:
    """The CA `init` made for the organisation of `home`'s node."""
    return load_identity(home.ca_key, home.ca_certificate)


def run_demo(
    home_dir: Path | None = None,
    validators: int = 4,
    *,
    transfers: int = STREAMED_TXS,
    channel_payments: int = CHANNEL_PAYMENTS,
    console: Console | None = None,
    insecure: bool = False,
) -> None:
    """Runs the story; raises `DemoFailed` when any step's outcome is not the expected one
    (after stopping every process it started and printing the summary)."""
    if validators < 1:
        raise DemoFailed("validators: at least 1")
    story = Story(console)
    console = story.console
    started = time.perf_counter()
    failure: BaseException | None = None
    with tempfile.TemporaryDirectory(prefix="medledger-demo-") as tmp:
        root = home_dir or Path(tmp) / "network"
        insurer, processor = SigningKey.generate(), SigningKey.generate()
        genesis, homes = _init(root, validators, (insurer, processor), insecure=insecure)
        tls = None if insecure else ClientTls.from_file(homes[0].consortium_ca)
        cast = Cast.assemble(load_key(homes[0].keys_dir / "client.json"), insurer, processor)
        nodes: list[NodeProcess] = []
        try:
            story.section("The network")
            for home in homes:
                nodes.append(start_node(home.root, home.load_config().listen))
            story.figure(f"{validators} validator process(es), Tendermint BFT, LMDB")
            story.check(
                f"{validators} validator process(es) on 127.0.0.1",
                f"chain {CHAIN_ID}, {', '.join(n.address for n in nodes)}, LMDB under {root}",
                ok=True,
            )

            def at(index: int) -> str:
                return nodes[index % len(nodes)].address

            story.section("Organisations issue roles")
            run_enrolment(story, at(0), cast, genesis, homes, tls)

            story.section("Payments on the ledger")
            run_payments(story, at(1), cast, genesis, transfers=transfers, tls=tls)
            story.section("Records, consent and the access log")
            run_records(
                story,
                vault_address=at(0),
                patient_address=at(3),
                cast=cast,
                genesis=genesis,
                console=console,
                tls=tls,
            )
            story.section("Micropayments through a processor's hub")
            ChannelDemo(
                story,
                console,
                cast,
                CHAIN_ID,
                root,
                hospital_home=homes[0],
                hospital_address=at(0),
                insurer_address=at(1),
                processor_address=at(2),
                tls=tls,
                hub_ca=None if insecure else _ca(homes[2 % len(homes)]),
            ).run(channel_payments)
        except Exception as error:  # any error ends the story as a failure
            failure = error
            story.failed(error)
        finally:
            for node in nodes:
                node.stop()
        if failure is None:
            story.section("After shutdown, from the LMDB files")
            try:
                verify_after_shutdown(story, homes, genesis, PHI)
            except Exception as error:
                failure = error
                story.failed(error)
    console.print()
    console.print(story.summary())
    elapsed = time.perf_counter() - started
    if failure is not None:
        console.print(Text(f"demo FAILED after {elapsed:.0f} s: {failure}", style="bold red"))
        raise DemoFailed(str(failure)) from failure
    console.print(
        Text(f"demo OK: {len(story.steps)} steps as expected in {elapsed:.0f} s", style="bold")
    )
