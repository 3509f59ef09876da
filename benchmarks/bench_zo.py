"""ZO estimators benchmark (same as `pyunlearn bench zo`); see pyunlearn/bench/zo.py.

    python benchmarks/bench_zo.py --size cpu --no-compile --json zo.json
"""

from pyunlearn.bench.zo import main

if __name__ == "__main__":
    main()
