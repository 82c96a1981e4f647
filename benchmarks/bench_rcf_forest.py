"""Random cut forest alone: building a forest and scoring rows with ``opensage.algorithms.randomcutforest.forest``.

What a training job does after reading its data (build, then score the training rows for the threshold and the
test rows) and what a served request does (score a few rows), in this process, on the benchmark data of
``bench_builtin_algorithms.py`` (two Gaussian clusters + 1% uniform anomalies, 5 features). Best of
``--repeats`` wall seconds per row count. Compare two trees by running this from a worktree of each (``cd`` into
it: ``PYTHONPATH`` alone would import the main tree's package first).

    .venv/bin/python benchmarks/bench_rcf_forest.py [--trees 100] [--samples 256] [--rows 10000] [--features 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_training_start as common  # noqa: E402  (report helpers)


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from opensage.algorithms.randomcutforest import forest
    from tests.algorithms.test_randomcutforest import _with_anomalies

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--features", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    X, _ = _with_anomalies(n=args.rows, dims=args.features, anomalies=args.rows // 100)
    X = X.astype(np.float64)
    load = os.getloadavg()
    builds = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        model = forest.build(X, args.trees, args.samples, seed=0)
        builds.append(time.perf_counter() - started)
    rows = [f"| what | wall s (best of {args.repeats}) |", "|---|---|",
            f"| build {args.trees} trees × {args.samples} samples, {args.features} features | {min(builds):.3f} |"]
    for n in (1, 10, 2000, len(X)):
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            model.score(X[:n])
            times.append(time.perf_counter() - started)
        rows.append(f"| score {n:,} rows | {min(times):.4f} |")
    print("\n".join(rows))
    print(f"\n{len(model.mass):,} nodes. {common.load_and_command(load, 'bench_rcf_forest.py', argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
