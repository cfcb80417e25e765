"""The `medledger` command line: `main` parses the arguments and runs the command. Each
command group is a module with its own small parser (`add_commands`): `node` (init, node,
keys, verify-chain), `ledger` (tx, query), `devnet` (devnet, demo), `members`,
`governance`, `records`, `channels` (channel, hub) and `bench`."""

from medledger.cli.main import main

__all__ = ["main"]
