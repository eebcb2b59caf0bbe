"""Metrics with an explicit empty-mask policy, per-case/site tables, efficiency."""
