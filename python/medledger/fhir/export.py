"""Ledger state as FHIR R5: consents as Consent, access events as AuditEvent. Every
document is validated with the `fhir.resources` models before it is returned."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fhir.resources.auditevent import AuditEvent
from fhir.resources.consent import Consent

from medledger.wire.v1 import records_pb2

__all__ = ["access_event_to_fhir", "consent_to_fhir"]

KEY_SYSTEM = "urn:medledger:public-key"
RECORD_SYSTEM = "urn:medledger:record"
CONSENT_SYSTEM = "urn:medledger:consent"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PURPOSE_CODES: dict[int, str] = {
    records_pb2.PURPOSE_TREATMENT: "TREAT",
    records_pb2.PURPOSE_PAYMENT: "HPAYMT",
    records_pb2.PURPOSE_RESEARCH: "HRESCH",
    records_pb2.PURPOSE_OPERATIONS: "HOPERAT",
    records_pb2.PURPOSE_PUBLIC_HEALTH: "PUBHLTH",
    records_pb2.PURPOSE_EMERGENCY: "ETREAT",
}


def _key(public_key: bytes) -> dict[str, Any]:
    return {"identifier": {"system": KEY_SYSTEM, "value": public_key.hex()}}


def _instant(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _purpose(code: int) -> dict[str, Any]:
    return {"system": ACT_REASON, "code": PURPOSE_CODES.get(code, "HOPERAT")}


def consent_to_fhir(state: records_pb2.ConsentState) -> dict[str, Any]:
    grant = state.grant
    scope = grant.scope
    provision: dict[str, Any] = {
        "period": {"start": _instant(grant.valid_from_ms), "end": _instant(grant.valid_until_ms)},
        "actor": [
            {
                "role": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                            "code": "IRCP",
                        }
                    ]
                },
                "reference": _key(grant.grantee),
            }
        ],
        "action": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/consentaction",
                        "code": "access",
                    }
                ]
            }
        ],
        "purpose": [_purpose(p) for p in grant.purposes],
    }
    if scope.resource_types:
        provision["resourceType"] = [
            {"system": "http://hl7.org/fhir/fhir-types", "code": t} for t in scope.resource_types
        ]
    if scope.security_labels:
        provision["securityLabel"] = [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": label}
            for label in scope.security_labels
        ]
    if scope.record_ids:
        provision["data"] = [
            {
                "meaning": "instance",
                "reference": {"identifier": {"system": RECORD_SYSTEM, "value": r.hex()}},
            }
            for r in scope.record_ids
        ]
    document = {
        "resourceType": "Consent",
        "identifier": [{"system": CONSENT_SYSTEM, "value": grant.consent_id.hex()}],
        "status": "active" if state.status == records_pb2.CONSENT_STATUS_ACTIVE else "inactive",
        "subject": _key(grant.patient),
        "grantor": [_key(grant.patient)],
        "grantee": [_key(grant.grantee)],
        "decision": "permit" if grant.decision == records_pb2.CONSENT_DECISION_PERMIT else "deny",
        "provision": [provision],
        "meta": {"versionId": str(state.version)},
    }
    return json.loads(Consent.model_validate(document).model_dump_json(exclude_none=True))  # type: ignore[no-any-return]


def access_event_to_fhir(event: records_pb2.AccessEvent) -> dict[str, Any]:
    access = event.access
    released = access.outcome == records_pb2.ACCESS_OUTCOME_RELEASED
    document: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "code": {
            "coding": [
                {
                    "system": "http://dicom.nema.org/resources/ontology/DCM",
                    "code": "110106",
                    "display": "Export",
                }
            ]
        },
        "action": "R",
        "recorded": _instant(access.time_ms),
        "outcome": {
            "code": {
                "system": "http://terminology.hl7.org/CodeSystem/audit-event-outcome",
                "code": "0" if released else "4",
            },
            "detail": [{"text": access.reason}],
        },
        "authorization": [{"coding": [_purpose(access.purpose)]}],
        "patient": _key(event.patient),
        "agent": [{"who": _key(access.requester), "requestor": True}],
        "source": {"observer": _key(event.custodian)},
        "entity": [
            {
                "what": {
                    "identifier": {
                        "system": RECORD_SYSTEM,
                        "value": f"{access.record_id.hex()}/_history/{access.version}",
                    }
                }
            }
        ],
    }
    if access.consent_id:
        document["entity"].append(
            {"what": {"identifier": {"system": CONSENT_SYSTEM, "value": access.consent_id.hex()}}}
        )
    if access.break_glass:
        document["authorization"].append(
            {
                "coding": [{"system": ACT_REASON, "code": "ETREAT"}],
                "text": "break-glass; the declared reason is held by the custodian, SHA-256 "
                + access.emergency_reason_hash.hex(),
            }
        )
        document["category"] = [{"text": "break-glass"}]
    return json.loads(AuditEvent.model_validate(document).model_dump_json(exclude_none=True))  # type: ignore[no-any-return]
