"""The lake on object storage (issue 9): what the store's pull and push add to a slice.

    uv run python bench/object_store_bench.py            # writes bench/RESULTS.md
    uv run python bench/object_store_bench.py --no-results

Starts moto's S3 server on 127.0.0.1 (stopped after). One slice of synthetic ticks goes through
``ticks``, ``backtest_ema_cross`` and ``metrics_ema_cross`` in-process, once per setting, after
a warm-up run on another month (imports, numba compilation):

- a local folder (reference);
- an ``s3://`` lake with an empty working copy (a new machine: the raw file is fetched, every
  output pushed);
- the same again with the working copy kept (only outputs pushed);
- a second empty copy that pulls the whole lake (transfer rate to the store).

moto on the same host has no network latency and stores objects in memory: the figures are a
floor for a real store, where the transfer rate is the network's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import emit, machine, machine_line  # noqa: E402

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work" / "object_store_bench"
SECTION = "## Object-store lake (issue 9)"
COMMAND = "uv run python bench/object_store_bench.py"
SELECTION = ["ticks", "backtest_ema_cross", "metrics_ema_cross"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=500_000, help="ticks in the slice (default 500,000)")
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args(argv)
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    from quant_assets_tests.servers import make_bucket, s3_env, start_moto, stop

    moto, endpoint = start_moto(WORK / "moto.log")
    os.environ.update({**s3_env(endpoint), "DAGSTER_HOME": str(WORK / "home"),
                       "QUANT_INSTRUMENTS": str(WORK / "none.toml")})
    (WORK / "home").mkdir()
    try:
        import dagster as dg

        from quant_assets.definitions import ASSETS
        from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
        from quant_assets.lake.store import Lake
        from resources import CriticResource, LakeResource

        url = make_bucket(endpoint)
        local = Lake.at(WORK / "local")
        store = Lake.at(url).remote

        def run(root: str, key: str) -> float:
            t0 = time.perf_counter()
            ok = dg.materialize(ASSETS, selection=SELECTION, partition_key=key, instance=instance,
                                resources={"lake": LakeResource(root=root), "critic": CriticResource()}).success
            assert ok
            return time.perf_counter() - t0

        with dg.instance_for_test(temp_dir=str(WORK / "home")) as instance:
            instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
            for month in ("2024-01", "2024-02"):
                path = write_landing(local, SyntheticSpec("BTCUSDT", month, seed=1, events=args.events))
                if month == "2024-02":
                    store.fs.put_file(str(path), f"{store.base}/landing/BTCUSDT/{path.name}")
            print("warm-up ...", flush=True)
            run(str(local.root), "2024-01|BTCUSDT")
            print("local folder ...", flush=True)
            t_local = run(str(local.root), "2024-02|BTCUSDT")
            os.environ["QUANT_LAKE_CACHE"] = str(WORK / "copy_a")
            print("object store, empty working copy ...", flush=True)
            t_cold = run(url, "2024-02|BTCUSDT")
            print("object store, kept working copy ...", flush=True)
            t_warm = run(url, "2024-02|BTCUSDT")
        os.environ["QUANT_LAKE_CACHE"] = str(WORK / "copy_b")
        t0 = time.perf_counter()
        pulled = Lake.at(url).remote.pull()
        t_pull = time.perf_counter() - t0
        stored_mib = pulled.bytes / 2**20
    finally:
        stop(moto)
    shutil.rmtree(WORK, ignore_errors=True)

    lines = [
        SECTION, "",
        f"- command: `{COMMAND}`",
        machine_line(machine(("dagster", "s3fs", "moto"))),
        f"- date: {time.strftime('%Y-%m-%d')}",
        f"- work: one slice ({args.events:,} synthetic ticks) through {', '.join(SELECTION)}, in-process, after a "
        "warm-up run on another month; store: moto's S3 server on 127.0.0.1 (in memory, no network)",
        "",
        "| setting | wall | against the local folder |",
        "|---|---:|---:|",
        f"| local folder | {t_local:.2f} s | 1.00× |",
        f"| `s3://` lake, empty working copy (new machine) | {t_cold:.2f} s | {t_cold / t_local:.2f}× |",
        f"| `s3://` lake, working copy kept | {t_warm:.2f} s | {t_warm / t_local:.2f}× |",
        "",
        f"A fresh copy pulling the whole lake ({pulled.fetched} files, {stored_mib:.1f} MiB) took {t_pull:.2f} s "
        f"({stored_mib / t_pull:.0f} MiB/s). A real store adds its network: at 100 MB/s the same pull takes about "
        f"{pulled.bytes / 100e6:.1f} s.",
        "",
    ]
    emit(SECTION, lines, write=not args.no_results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
