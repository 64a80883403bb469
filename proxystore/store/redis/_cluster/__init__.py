"""The Redis Cluster client: slot map, per-node pools, striping of large values (private)."""
