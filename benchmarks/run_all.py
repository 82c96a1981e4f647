"""Run every benchmark and print one markdown report (paste it into benchmarks/RESULTS.md).

    .venv/bin/python benchmarks/run_all.py              # ~8 minutes on 2 cores
    .venv/bin/python benchmarks/run_all.py --quick      # a smoke run: few jobs, 100k rows
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_batch_transform  # noqa: E402
import bench_invoke_endpoint  # noqa: E402
import bench_processing_start  # noqa: E402
import bench_training_start  # noqa: E402
import bench_xgboost_builtin  # noqa: E402


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import xgboost

    return (f"{os.cpu_count()} cores ({cpu}), {mem_gb:.0f} GiB RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, xgboost {xgboost.__version__}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start-runs", type=int, default=20, help="measured jobs per kind on `opensage up`")
    ap.add_argument("--inproc-runs", type=int, default=5, help="measured jobs per kind in-process (0: skip)")
    ap.add_argument("--processing-runs", type=int, default=7,
                    help="measured warm processing jobs per image on `opensage up` (0: skip)")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of the XGBoost variants")
    ap.add_argument("--transform-rows", type=int, default=500_000, help="rows of the batch transform CSV")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/opensage-bench-data"))
    ap.add_argument("--quick", action="store_true", help="3 start jobs, 100k rows, 1 repeat, short invoke runs")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.start_runs, args.inproc_runs, args.rows, args.repeats = 3, 2, 100_000, 1
        args.processing_runs = 3
        args.transform_rows = 100_000
    began = time.time()
    raw: dict[str, Any] = {"loadavg_before": os.getloadavg()}
    print(f"Date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}  ")
    print(f"Machine: {machine()}  ")
    print(f"Command: {' '.join([Path(sys.executable).name, *sys.argv])}  ", flush=True)
    start = bench_training_start.run("up", args.start_runs)
    if args.inproc_runs:
        start += bench_training_start.run("inproc", args.inproc_runs)
    raw["start"] = start
    print("\n## Training start: CreateTrainingJob → first log line of the training code\n")
    print(bench_training_start.markdown(start), flush=True)
    if args.processing_runs:
        # The first job per image is reported on its own: on this fresh home it builds the scikit-learn
        # image's environment (cold); pytorch-training runs on the platform's own interpreter (fast path).
        raw["processing_start"] = bench_processing_start.run("up", args.processing_runs, ("sklearn", "pytorch"))
        print("\n## Processing start: CreateProcessingJob → first log line of the user's script\n")
        print(bench_processing_start.markdown(raw["processing_start"]), flush=True)
    raw["xgboost"] = bench_xgboost_builtin.run(args.rows, args.features, args.cache, args.repeats)
    print("\n## Built-in XGBoost: platform job vs in-process xgboost.train\n")
    print(bench_xgboost_builtin.markdown(raw["xgboost"]), flush=True)
    raw["invoke"] = bench_invoke_endpoint.run(**({"requests": 300, "warmup": 50, "seconds": 2.0, "create_runs": 2}
                                                 if args.quick else {}))
    print("\n## Real-time endpoint: InvokeEndpoint vs a bare Starlette app and `mlflow models serve`\n")
    print(bench_invoke_endpoint.markdown(raw["invoke"]) + "\n\n" + bench_invoke_endpoint.verdict(raw["invoke"]), flush=True)
    raw["transform"] = bench_batch_transform.run(args.transform_rows, args.features, args.cache, args.repeats)
    raw["loadavg_after"] = os.getloadavg()
    print("\n## Batch transform: rows/s vs in-process Booster.predict over the same file\n")
    print(bench_batch_transform.markdown(raw["transform"]) + "\n\n" + bench_batch_transform.verdict(raw["transform"]))
    load = " / ".join(" ".join(f"{x:.1f}" for x in raw[k]) for k in ("loadavg_before", "loadavg_after"))
    print(f"\nTotal wall time {(time.time() - began) / 60:.1f} min; load average (1/5/15 min) before / after: "
          f"{load}")
    if args.json:
        args.json.write_text(json.dumps(raw, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
