"""Benchmarks. Never part of the test run; `make bench` runs them all (see bench/__main__.py)."""
