"""Thin gRPC adapters: decode the request, call the node, encode the reply."""
