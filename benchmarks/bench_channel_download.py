"""A job's input data through `opensage up`'s object store (SeaweedFS behind the S3 proxy), as the agent fetches it.

Two cases, each on one fresh ``opensage up`` (``--home`` a temporary directory), with the job agent's own code
(``opensage.runner.channels`` / ``fastfile``, ``opensage.objects.s3.S3Store``) running in this process:

* ``many`` — a File-mode channel of ``--files`` small objects (4 KB each, as a channel of many CSV shards or
  images), ``channels.download_channel`` (8 workers), then the same files uploaded back (8 threads, as the
  agent uploads a processing job's outputs). Side by side in one run, alternating: ``managed`` (what
  ``S3Store.get_to_file`` / ``put_file`` did before: s3transfer's managed transfer for every object — for a
  download a HEAD first — a transfer manager and its threads) and ``one request`` (now: one GET / PutObject
  below the multipart threshold). Wall seconds and this process's CPU seconds.
* ``streamed`` — one ``--mb`` MB object as the built-ins receive a channel (``fastfile.StreamedChannel``: ranged GETs
  written at their offsets while the algorithm reads). Wall seconds and CPU seconds (user + system) of this
  process (the agent's part), the ``opensage up`` process (the S3 proxy relays every byte) and weed. A change to
  the proxy is compared by running this from a worktree of each commit.

    .venv/bin/python benchmarks/bench_channel_download.py [--case many,streamed] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_training_start as common  # noqa: E402  (platform helpers)

from opensage.objects.s3 import S3Store  # noqa: E402
from opensage.runner import channels, fastfile  # noqa: E402
from opensage.runner.channels import ObjectRef  # noqa: E402


class ManagedTransferStore(S3Store):
    """``get_to_file`` / ``put_file`` as they were: s3transfer's managed transfer for every object (the baseline)."""

    def get_to_file(self, bucket: str, key: str, dest: Path) -> None:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._transfer(lambda m: m.download(bucket, key, str(dest)))

    def put_file(self, bucket: str, key: str, src: Path) -> None:
        self._transfer(lambda m: m.upload(str(src), bucket, key))


def _self_cpu() -> float:
    t = os.times()
    return t[0] + t[1]


def _ref(key: str, rel: str, size: int) -> ObjectRef:
    """With the listing's size where ObjectRef carries one (run from an older commit's worktree: without)."""
    extra = {"size": size} if "size" in ObjectRef.__dataclass_fields__ else {}
    return ObjectRef(common.BUCKET, key, rel, **extra)


def _plan(refs: list[ObjectRef]) -> Any:
    return types.SimpleNamespace(channel=types.SimpleNamespace(name="train", compression=None), objects=refs,
                                 manifest_lines=None)


def case_many(p: common.Platform, url: str, creds: dict[str, str], files: int, repeats: int) -> list[str]:
    for i in range(files):
        p.put(common.BUCKET, f"many/part-{i:05d}.csv", os.urandom(4096))
    refs = [_ref(f"many/part-{i:05d}.csv", f"part-{i:05d}.csv", 4096) for i in range(files)]
    names = {"managed (before)": ManagedTransferStore, "one request (now)": S3Store}
    runs: dict[str, list[tuple[float, float]]] = {f"{d}, {n}": [] for d in ("download", "upload") for n in names}
    for _ in range(repeats):
        for name, cls in names.items():
            store = cls(url, creds["access_key"], creds["secret_key"])
            store.client  # noqa: B018 - the client is made once per job, before its channels
            into = Path(tempfile.mkdtemp(prefix="bench-many-"))
            t0, c0 = time.perf_counter(), _self_cpu()
            channels.download_channel(store, _plan(refs), into)
            runs[f"download, {name}"].append((time.perf_counter() - t0, _self_cpu() - c0))
            written = sorted((into / "train").iterdir())
            assert len(written) == files
            t0, c0 = time.perf_counter(), _self_cpu()
            with ThreadPoolExecutor(8) as pool:  # as the agent uploads a processing job's output files
                list(pool.map(lambda f, s=store: s.put_file(common.BUCKET, f"many-out/{f.name}", f), written))
            runs[f"upload, {name}"].append((time.perf_counter() - t0, _self_cpu() - c0))
            shutil.rmtree(into)
    rows = [f"| {name} | {files} × 4 KB | {statistics.median([w for w, _ in v]):.2f} ({', '.join(f'{w:.2f}' for w, _ in v)}) "
            f"| {statistics.median([c for _, c in v]):.2f} |" for name, v in runs.items()]
    return ["| get_to_file / put_file | objects | wall s (median; runs) | agent-side CPU s |", "|---|---|---|---|",
            *rows]


def case_streamed(p: common.Platform, url: str, creds: dict[str, str], mb: int, repeats: int) -> list[str]:
    size = mb << 20
    p.put(common.BUCKET, "streamed/part-0", os.urandom(size))
    weed = common.child_pids(p.pid, "weed")
    assert p.pid is not None
    rows = []
    for r in range(repeats + 1):  # the first is a warm-up (connections, weed's caches)
        store = S3Store(url, creds["access_key"], creds["secret_key"])
        store.client  # noqa: B018
        into = Path(tempfile.mkdtemp(prefix="bench-streamed-"))
        ref = _ref("streamed/part-0", "part-0", size)
        c0 = (_self_cpu(), common.process_cpu(p.pid)[0], sum(common.process_cpu(w)[0] for w in weed))
        t0 = time.perf_counter()
        feeder = fastfile.StreamedChannel(store, _plan([ref]), into)
        feeder.prepare()
        feeder.start()
        feeder.join()
        wall = time.perf_counter() - t0
        c1 = (_self_cpu(), common.process_cpu(p.pid)[0], sum(common.process_cpu(w)[0] for w in weed))
        assert feeder.error is None and (into / "train" / "part-0").stat().st_size == size, feeder.error
        shutil.rmtree(into)
        if r:
            rows.append(f"| {r} | {mb} MB | {wall:.2f} | {c1[0] - c0[0]:.2f} | {c1[1] - c0[1]:.2f} | "
                        f"{c1[2] - c0[2]:.2f} | {sum(c1) - sum(c0):.2f} |")
    return ["| run | object | wall s | agent CPU s | `opensage up` (S3 proxy) CPU s | weed CPU s | total CPU s |",
            "|---|---|---|---|---|---|---|", *rows]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="many,streamed")
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    cases = [c for c in args.case.split(",") if c]
    load = os.getloadavg()
    home = Path(tempfile.mkdtemp(prefix="bench-channel-"))
    out: list[str] = []
    try:
        with common.open_platform("up", home) as p:
            creds = json.loads((home / "credentials.json").read_text())
            url = common._s3_endpoint_from_config(home)
            if "many" in cases:
                out += case_many(p, url, creds, args.files, args.repeats) + [""]
            if "streamed" in cases:
                out += case_streamed(p, url, creds, args.mb, args.repeats) + [""]
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print("\n".join(out))
    print(common.load_and_command(load, "bench_channel_download.py", argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
