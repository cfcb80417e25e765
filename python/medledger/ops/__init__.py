"""Operating a node: the operations HTTP port (Prometheus metrics, `/livez`, `/readyz`),
readiness as probes and the gRPC health service report it, and JSON logs."""
