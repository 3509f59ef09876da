"""Drop-in modules: pyunlearn.nn.GATConv / GATv2Conv for torch_geometric.nn.GATConv / GATv2Conv."""

from pyunlearn.nn.gat import GATConv
from pyunlearn.nn.gatv2 import GATv2Conv

__all__ = ["GATConv", "GATv2Conv"]
