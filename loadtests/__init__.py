"""Benchmarks and load tests (Locust), with the machine they ran on described."""
