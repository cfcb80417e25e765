"""A FHIR Bundle into the parts the vault stores and the ledger anchors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fhir.resources.bundle import Bundle
from pydantic import ValidationError

__all__ = ["BundleError", "Resource", "resources_of_bundle"]


class BundleError(ValueError):
    """Not a valid FHIR Bundle; the message names what is wrong."""


@dataclass(frozen=True)
class Resource:
    resource_type: str
    category: str
    security_labels: tuple[str, ...]
    content: bytes  # canonical JSON of the resource: what the commitment covers


def _category(resource: dict[str, Any]) -> str:
    """The first category code (Observation, Condition and most clinical resources have
    `category`, a CodeableConcept or a list of them); empty when none."""
    category = resource.get("category")
    if isinstance(category, list):
        category = category[0] if category else None
    if isinstance(category, dict):
        for coding in category.get("coding", []):
            if coding.get("code"):
                return str(coding["code"])
    return ""


def _labels(resource: dict[str, Any]) -> tuple[str, ...]:
    meta = resource.get("meta") or {}
    return tuple(str(s["code"]) for s in meta.get("security", []) if s.get("code"))


def resources_of_bundle(raw: bytes) -> list[Resource]:
    """Validates `raw` as a FHIR R5 Bundle and returns its entries' resources."""
    try:
        document = json.loads(raw)
    except ValueError as error:
        raise BundleError(f"bundle: not JSON ({error})") from None
    try:
        bundle = Bundle.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BundleError(f"bundle.{where}: {first['msg']}") from None
    out = []
    for index, entry in enumerate(bundle.entry or []):
        if entry.resource is None:
            raise BundleError(f"bundle.entry.{index}.resource: missing")
        resource = json.loads(entry.resource.model_dump_json(exclude_none=True))
        content = json.dumps(resource, sort_keys=True, separators=(",", ":")).encode()
        out.append(
            Resource(resource["resourceType"], _category(resource), _labels(resource), content)
        )
    if not out:
        raise BundleError("bundle.entry: no resources")
    return out
