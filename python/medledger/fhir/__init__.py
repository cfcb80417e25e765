"""FHIR (R5) at medledger's edges, validated with the `fhir.resources` models: Bundle
ingest for the vault, Consent and AuditEvent export of ledger state."""
