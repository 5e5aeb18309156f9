"""Benchmarks: the server against the original design's baseline (one pub/sub connection per
stream), on real processes and a real Redis."""
