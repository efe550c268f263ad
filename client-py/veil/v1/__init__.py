"""Veil's wire messages, generated from proto/veil/v1/veil.proto by
scripts/gen-proto (veil_pb2.py: do not edit). The client's API is
`veil.connect()`; these are its encoding."""
