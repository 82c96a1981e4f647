"""Decode time of SDK-written dense recordIO-protobuf: per-record protobuf path vs ``recordio_dense`` (issue 12).

    .venv/bin/python benchmarks/bench_recordio_decode.py [--repeats 5] [--rows 20000,100000] [--cols 50]

Files are written by the SDK's ``write_numpy_to_dense_tensor`` (float32 features + float32 label, as
``record_set()`` writes them; ``--int`` for int32 features, whose varint records differ in length and take the
walker path). Best-of and median seconds per decode; the arrays are checked identical. Prints the load average.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from opensage.algorithms import recordio  # noqa: E402


def _time(fn, repeats: int) -> tuple[float, float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", default="20000,100000")
    parser.add_argument("--cols", type=int, default=50)
    parser.add_argument("--int", action="store_true", help="int32 features (varint, walker path)")
    args = parser.parse_args()
    from sagemaker.amazon.common import write_numpy_to_dense_tensor

    print(f"load average before: {os.getloadavg()}")
    print("| rows x cols | MB | per-record protobuf (best / median s) | recordio_dense (best / median s) | speed-up |")
    print("|---|---|---|---|---|")
    for rows in (int(r) for r in args.rows.split(",")):
        rng = np.random.default_rng(0)
        features = (rng.integers(-1000, 1000, (rows, args.cols)) if args.int
                    else rng.standard_normal((rows, args.cols)).astype(np.float32))
        buf = io.BytesIO()
        write_numpy_to_dense_tensor(buf, features, np.arange(rows, dtype=np.float32))
        data = buf.getvalue()
        old_best, old_median, old = _time(lambda data=data: recordio.records_to_matrix(recordio.read_records(data)),
                                          args.repeats)
        new_best, new_median, new = _time(lambda data=data: recordio.decode_matrix(data), args.repeats)
        assert all(a.tobytes() == b.tobytes() and a.dtype == b.dtype for a, b in zip(old, new, strict=True))
        print(f"| {rows} x {args.cols} | {len(data) / 1e6:.1f} | {old_best:.3f} / {old_median:.3f} | "
              f"{new_best:.4f} / {new_median:.4f} | {old_median / new_median:.0f}x |")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
