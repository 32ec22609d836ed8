"""Benchmarks and on-device checks that write result files under bench/results/."""
