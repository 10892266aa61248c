"""What ``lake.versions.record`` adds to a publish: wall time and disk, for a ticks month and a
backtest slice (``uv run python bench/versions_bench.py [events]``; a throw-away lake under /tmp;
writes its section of bench/RESULTS.md).

Disk is counted as the blocks of files under ``versions/`` that no published file shares (a hard
link to a current file costs no bytes until that file is replaced)."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from quant_assets.engines.runner import run_backtest
from quant_assets.ingest.build import build_partition
from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
from quant_assets.lake import versions
from quant_assets.lake.store import Lake
from quant_assets.strategies import registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, machine_line  # noqa: E402

SECTION = "## Versions: what keeping every published slice costs a publish (issue 23)"


def own_bytes(root: Path) -> tuple[int, int]:
    """(bytes of files under root/versions held only there, bytes of hard links shared with the lake)."""
    only, shared = 0, 0
    for p in (root / "versions").rglob("*"):
        if p.is_file():
            st = p.stat()
            if st.st_nlink > 1:
                shared += st.st_size
            else:
                only += st.st_blocks * 512
    return only, shared


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(events: int = 200_000) -> None:
    lines: list[str] = []
    print = lines.append  # noqa: A001 (each figure goes to the report)
    root = Path(tempfile.mkdtemp(prefix="versions-bench-"))
    lake = Lake.at(root)
    write_landing(lake, SyntheticSpec("BTCUSDT", "2024-01", seed=1, events=events))
    res, build_s = timed(lambda: build_partition(lake, "BTCUSDT", "2024-01"))
    _, rec_s = timed(lambda: versions.record(lake, "ticks", ("BTCUSDT", "2024-01"), res.sha256[:24], known={"part-0.parquet": res.sha256}))
    print(f"ticks {events:,} events, {res.path.stat().st_size / 2**20:.1f} MiB: build {build_s:.2f} s, record {rec_s * 1e3:.1f} ms, "
          f"versions/ holds {own_bytes(root)[0]:,} B of its own (+{own_bytes(root)[1]:,} B hard-linked)")
    spec = registry.load()["ema_cross"]
    out, bt_s = timed(lambda: run_backtest(lake, spec, "BTCUSDT", "2024-01", ticks_version=res.sha256[:24]))
    before = own_bytes(root)[0]
    _, rec_bt = timed(lambda: versions.record(lake, "backtests", ("BTCUSDT", "2024-01", "ema_cross"), out.data_version))
    size = sum(p.stat().st_size for p in out.directory.iterdir())
    print(f"backtest ema_cross ({size / 2**10:.0f} KiB folder): run {bt_s:.2f} s, record {rec_bt * 1e3:.1f} ms, "
          f"versions/ own bytes +{own_bytes(root)[0] - before:,} B")
    # a second version of the month (new landing data): the first one's bytes are now kept by the store alone
    write_landing(lake, SyntheticSpec("BTCUSDT", "2024-01", seed=2, events=events // 10)).rename(
        lake.landing_dir("BTCUSDT") / "extra.parquet")
    res2 = build_partition(lake, "BTCUSDT", "2024-01")
    _, rec2 = timed(lambda: versions.record(lake, "ticks", ("BTCUSDT", "2024-01"), res2.sha256[:24], known={"part-0.parquet": res2.sha256}))
    only, shared = own_bytes(root)
    print(f"second ticks version: record {rec2 * 1e3:.1f} ms; versions/ holds {only / 2**20:.2f} MiB of its own, "
          f"{shared / 2**20:.1f} MiB hard-linked (the replaced month stays linked to its staging file while that exists)")
    os.system(f"rm -rf {root}")
    emit(SECTION, [SECTION, "", f"`uv run python bench/versions_bench.py {events}` (one run; a synthetic month, ema_cross on NautilusTrader)",
                   "", machine_line(machine()), "", *(f"- {line}" for line in lines)])


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
