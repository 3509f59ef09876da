"""GAT layer benchmark (same as `pyunlearn bench gat`); see pyunlearn/bench/gat.py.

    python benchmarks/bench_gat.py --size cpu --json gat.json
"""

from pyunlearn.bench.gat import main

if __name__ == "__main__":
    main()
