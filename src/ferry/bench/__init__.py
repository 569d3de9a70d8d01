"""Benchmarks, each reported against a baseline measured in the same run: live migration in a
running lab, and the evacuation planner on synthetic clusters."""
