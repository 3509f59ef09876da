"""Micro-benchmarks of each kernel family against the best peers (`pyunlearn bench <family>`)."""

FAMILIES = ("masked_optim", "gat", "gatv2", "zo")
