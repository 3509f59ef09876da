"""Forget Vectors and forget-vector arithmetic (spec image_mu.md §3.14); docs/forget_vectors.md."""

from pyunlearn.unlearn.forget_vector._learn import (
    DEFAULT_B,
    ForgetVector,
    ForgetVectorConfig,
    FVRecord,
    learn_coefficients,
    learn_delta,
    wrap,
)
from pyunlearn.unlearn.forget_vector._run import (
    BASELINES,
    Task,
    add_cli,
    class_vectors,
    cmd_forget_vector,
    evaluate_task,
    make_task,
    plot_deltas,
    run_forget_vectors,
)

__all__ = [
    "BASELINES",
    "DEFAULT_B",
    "FVRecord",
    "ForgetVector",
    "ForgetVectorConfig",
    "Task",
    "add_cli",
    "class_vectors",
    "cmd_forget_vector",
    "evaluate_task",
    "learn_coefficients",
    "learn_delta",
    "make_task",
    "plot_deltas",
    "run_forget_vectors",
    "wrap",
]
