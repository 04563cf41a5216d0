"""Developer data: the deterministic demo marketplace (`educonnect seed`, `make run`, the
tests' and benchmarks' datasets)."""
