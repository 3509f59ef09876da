"""Drop-in modules: pyunlearn.nn.GATConv for torch_geometric.nn.GATConv."""

from pyunlearn.nn.gat import GATConv

__all__ = ["GATConv"]
