"""Masked optimizer step benchmark (same as `pyunlearn bench masked_optim`); see pyunlearn/bench/masked_optim.py.

    python benchmarks/bench_masked_optim.py --size cpu --json masked_optim.json
"""

from pyunlearn.bench.masked_optim import main

if __name__ == "__main__":
    main()
