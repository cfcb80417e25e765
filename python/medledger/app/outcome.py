"""The result of applying one transaction."""

from __future__ import annotations

from typing import NamedTuple

from medledger.wire.v1 import tx_pb2

__all__ = ["TxOutcome"]


class TxOutcome(NamedTuple):
    code: tx_pb2.ResultCode.ValueType
    message: str
