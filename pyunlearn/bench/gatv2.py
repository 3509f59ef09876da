"""`pyunlearn bench gatv2`: pyunlearn.nn.GATv2Conv vs torch_geometric's GATv2Conv (see pyunlearn.bench.gat)."""

from __future__ import annotations

from pyunlearn.bench import gat


def main(argv: list[str] | None = None):
    return gat.main(argv, variant="gatv2")


if __name__ == "__main__":
    main()
