"""Events in motion: the broker interface, its Redis, Redis Cluster and memory implementations, and the per-process fan-out."""
