"""The `medledger bench` benchmarks, each on real node processes over TLS: `node` (one
validator or a local cluster: committed transfers/s and latency), `records` (anchors and
consent-checked fetches) and `channels` (acknowledged micropayments), on one harness."""
