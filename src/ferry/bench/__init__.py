"""Benchmarks of a running lab: each reports against a baseline measured in the same run."""
