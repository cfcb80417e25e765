"""The blocking client."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType

import grpc

from medledger.block import ValidatorSet
from medledger.client.errors import from_rpc_error, translated_errors
from medledger.client.proofs import verify_transaction_proof
from medledger.client.reads import R, sign_read
from medledger.crypto import SigningKey
from medledger.transport.credentials import FROM_ENVIRONMENT, Transport, sync_channel
from medledger.transport.grpc_common import channel_options
from medledger.wire.v1 import envelope_pb2, ledger_pb2, ledger_pb2_grpc, tx_pb2

__all__ = ["LedgerClient"]

DEFAULT_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.05


class LedgerClient:
    """A connection to one node. Every call has a deadline; refusals raise `Rejected`."""

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        reader: SigningKey | None = None,
        tls: Transport = FROM_ENVIRONMENT,
    ) -> None:
        """`reader` signs reads of health metadata (whole blocks, transaction bodies,
        memberships): the node serves what that key is entitled to. Without it, blocks
        come as headers and transactions as receipts. `tls`: the consortium's CA bundle
        to verify the node against (`ClientTls.from_file`; by default $MEDLEDGER_TLS_CA);
        None speaks clear text, which only a node run `--insecure` accepts."""
        self.timeout_s = timeout_s
        self.reader = reader
        self.target = target
        self.tls = tls
        self._chain_id: str | None = None
        self._channel = sync_channel(target, tls, channel_options())
        self._stub = ledger_pb2_grpc.LedgerServiceStub(self._channel)

    def _signed(self, request: R) -> R:
        """`request` signed by the reader, if this client has one."""
        if self.reader is None:
            return request
        if self._chain_id is None:
            self._chain_id = self.status().chain_id
        return sign_read(request, self.reader, self._chain_id)

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def status(self) -> ledger_pb2.GetStatusResponse:
        with translated_errors():
            return self._stub.GetStatus(ledger_pb2.GetStatusRequest(), timeout=self.timeout_s)

    def submit(
        self,
        tx: envelope_pb2.SignedTransaction,
        *,
        wait: bool = True,
        timeout_s: float | None = None,
    ) -> tx_pb2.Receipt:
        """Submits one transaction; with `wait`, returns once it is durably committed."""
        request = ledger_pb2.SubmitRequest(tx=tx, wait_for_commit=wait)
        with translated_errors():
            response = self._stub.Submit(request, timeout=timeout_s or self.timeout_s)
        return response.receipt

    def submit_batches(
        self,
        batches: Iterable[Sequence[envelope_pb2.SignedTransaction]],
        *,
        timeout_s: float | None = None,
    ) -> Iterator[list[tx_pb2.Receipt]]:
        """Streams batches on one call; yields each batch's receipts, in order, once all of
        its transactions are committed or refused."""
        requests = (
            ledger_pb2.SubmitBatch(batch_id=i, txs=list(batch)) for i, batch in enumerate(batches)
        )
        with translated_errors():
            for result in self._stub.SubmitStream(requests, timeout=timeout_s or self.timeout_s):
                yield list(result.receipts)

    def get_transaction(
        self, *, tx_id: bytes = b"", tx_hash: bytes = b""
    ) -> ledger_pb2.GetTransactionResponse:
        """The receipt; with the transaction and its proof when the reader signed it or
        is an auditor or a validator."""
        request = self._signed(ledger_pb2.GetTransactionRequest(tx_id=tx_id, tx_hash=tx_hash))
        with translated_errors():
            return self._stub.GetTransaction(request, timeout=self.timeout_s)

    def wait_for_commit(self, tx_id: bytes, *, timeout_s: float | None = None) -> tx_pb2.Receipt:
        """Polls until the transaction is committed; raises TimeoutError past the deadline."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            receipt = self.get_transaction(tx_id=tx_id).receipt
            if receipt.status in (tx_pb2.TX_STATUS_COMMITTED, tx_pb2.TX_STATUS_REJECTED):
                return receipt
            if time.monotonic() >= deadline:
                raise TimeoutError(f"transaction {tx_id.hex()} not committed in time")
            time.sleep(POLL_INTERVAL_S)

    def get_block(self, height: int = 0) -> ledger_pb2.GetBlockResponse:
        request = self._signed(ledger_pb2.GetBlockRequest(height=height))
        with translated_errors():
            return self._stub.GetBlock(request, timeout=self.timeout_s)

    def get_account(self, owner: bytes) -> ledger_pb2.Account:
        with translated_errors():
            response = self._stub.GetAccount(
                ledger_pb2.GetAccountRequest(owner=owner), timeout=self.timeout_s
            )
        return response.account

    def get_member(self, public_key: bytes) -> ledger_pb2.GetMemberResponse:
        """A key's organisation and roles; raises Rejected NOT_FOUND if none enrolled it."""
        request = self._signed(ledger_pb2.GetMemberRequest(public_key=public_key))
        with translated_errors():
            return self._stub.GetMember(request, timeout=self.timeout_s)

    def get_channel(self, channel_id: bytes) -> ledger_pb2.GetChannelResponse:
        with translated_errors():
            return self._stub.GetChannel(
                ledger_pb2.GetChannelRequest(channel_id=channel_id), timeout=self.timeout_s
            )

    def stream_blocks(
        self, from_height: int = 1, *, timeout_s: float | None = None
    ) -> Iterator[ledger_pb2.GetBlockResponse]:
        """Committed blocks from `from_height` on, then new ones as they commit, until the
        deadline. Resume after a disconnect from the last height seen plus one."""
        request = self._signed(ledger_pb2.StreamBlocksRequest(from_height=from_height))
        try:
            yield from self._stub.StreamBlocks(request, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return
            raise from_rpc_error(error) from error

    def verify_transaction(self, tx_id: bytes, validators: ValidatorSet, chain_id: str) -> bytes:
        """Fetches a committed transaction's proof and checks it locally; returns the
        block hash. Raises `ProofError` if any part fails."""
        return verify_transaction_proof(self.get_transaction(tx_id=tx_id), validators, chain_id)
