"""Test graphs for the GAT ops: awkward structure on purpose."""

from __future__ import annotations

import torch


def graph(kind: str, n: int = 12, seed: int = 0) -> torch.Tensor:
    """edge_index [2, E] (row 0 sources, row 1 destinations)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.randint(0, n, (2, 4 * n), generator=g)
    if kind == "isolated":  # nodes n-3.. have no edges at all
        return torch.randint(0, n - 3, (2, 3 * n), generator=g)
    if kind == "selfloops_dups":  # self-loops and duplicated edges
        e = torch.randint(0, n, (2, 2 * n), generator=g)
        loops = torch.arange(0, n, 2).repeat(2, 1)
        return torch.cat([e, e[:, :5], loops], 1)
    if kind == "powerlaw":  # a hub receives most edges
        src = torch.randint(0, n, (6 * n,), generator=g)
        dst = torch.where(torch.rand(6 * n, generator=g) < 0.7, torch.zeros(6 * n, dtype=torch.long),
                          torch.randint(0, n, (6 * n,), generator=g))
        return torch.stack([src, dst])
    if kind == "empty":
        return torch.empty(2, 0, dtype=torch.long)
    raise ValueError(kind)


KINDS = ["random", "isolated", "selfloops_dups", "powerlaw", "empty"]
