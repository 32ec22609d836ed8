"""Benchmarks and on-device checks; each run writes one result set under results/ (see results.py, index.py)."""
