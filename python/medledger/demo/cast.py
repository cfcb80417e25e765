"""Who takes part in the demo, each with a key of its own and a name to print."""

from __future__ import annotations

from dataclasses import dataclass, field

from medledger.crypto import SigningKey

__all__ = ["Cast"]


@dataclass(frozen=True)
class Cast:
    hospital: SigningKey  # node0's organisation key: its vault's custodian, its channels' payee
    insurer: SigningKey  # funded at genesis
    processor: SigningKey  # runs the channel hub; funded at genesis
    patient: SigningKey  # a pseudonym: the chain never sees a name
    researcher: SigningKey
    names: dict[bytes, str] = field(default_factory=dict)

    @classmethod
    def assemble(cls, hospital: SigningKey, insurer: SigningKey, processor: SigningKey) -> Cast:
        """The organisations as given (their keys are in the genesis), and a new patient
        and researcher."""
        cast = cls(
            hospital=hospital,
            insurer=insurer,
            processor=processor,
            patient=SigningKey.generate(),
            researcher=SigningKey.generate(),
        )
        cast.names.update(
            {
                cast.hospital.public_key: "St. Example General Hospital",
                cast.insurer.public_key: "Northwind Health Insurance",
                cast.processor.public_key: "ClearPay Processing",
                cast.patient.public_key: "the patient",
                cast.researcher.public_key: "Dr. Ada Okafor (researcher)",
            }
        )
        return cast

    def name(self, key: bytes) -> str:
        return self.names.get(key, key.hex()[:16])
