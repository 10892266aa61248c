"""Crashes for real: a pipeline step runs in a subprocess that SIGKILLs itself at a named point
(``quant_assets.lake.faults``), mid-way through publishing a ticks partition, the landing
manifest, a backtest slice, a metric set or a roll-up. Then a reader must see the previous
version whole (or, after the commit point, the new one whole), no temporary debris, and the
next run must complete and equal a run that was never interrupted.

Two processes that publish the same slice at once (the sensor's run and a manual one) must
not interleave: the slice ends up as one of the two results, whole.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from quant_assets.lake import duck
from quant_assets.lake.faults import CRASH_ENV
from quant_assets.lake.store import Lake
from quant_assets_tests import builders as b

pytestmark = pytest.mark.slow

SYMBOL, MONTH = "BTCUSDT", "2024-01"

#: One pipeline step per kind, run in a fresh interpreter (argv: kind, lake root, fast_period).
DRIVER = """
import sys
from quant_assets.lake.store import Lake
kind, root, fast = sys.argv[1], sys.argv[2], int(sys.argv[3])
lake = Lake.at(root)
if kind == "ticks":
    from quant_assets.ingest.build import build_partition
    from quant_assets.ingest.landing import survey
    survey(lake, "BTCUSDT")
    build_partition(lake, "BTCUSDT", "2024-01")
elif kind == "backtest":
    from quant_assets.engines.runner import run_backtest
    from quant_assets.strategies import registry
    run_backtest(lake, registry.load()["ema_cross"].with_values({"fast_period": fast}), "BTCUSDT", "2024-01")
elif kind == "metrics":
    from quant_assets.analytics.slice_metrics import run_metrics
    run_metrics(lake, "ema_cross", "BTCUSDT", "2024-01", 365)
elif kind == "report":
    from quant_assets.analytics.rollup import RollupSettings, run_report
    run_report(lake, "ema_cross", "BTCUSDT", 365, n_trials=2, settings=RollupSettings(reps=50, sims=50))
"""

ORDER = ("ticks", "backtest", "metrics", "report")


def _step(root: Path, kind: str, fast: int = 20, crash_at: str | None = None, wait: bool = True):
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash_at:
        env[CRASH_ENV] = crash_at
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, kind, str(root), str(fast)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=600)
    return proc.returncode, err


def _visible(root: Path) -> dict[str, str]:
    """sha256 of every file a reader can see: nothing under a hidden name (temporary files and
    folders, locks, scratch)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}


def _debris(root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in root.rglob(".tmp-*")]


def _data_equal(a: Path, b_: Path) -> None:
    """Same visible files, and every Parquet file holds the same rows (JSON manifests carry
    wall times, so only their names are compared)."""
    va, vb = _visible(a), _visible(b_)
    assert sorted(va) == sorted(vb)
    for name in va:
        if name.endswith(".parquet") and not name.startswith("trials/"):
            # The landing manifest records when each file was seen: times differ between copies.
            fa, fb = (pl.read_parquet(r / name).drop(["mtime_ns", "updated_at_ns"], strict=False) for r in (a, b_))
            assert fa.equals(fb), name


def _readable(root: Path) -> None:
    """DuckDB's views over the lake still read every table."""
    con = duck.connect(Lake.at(root))
    for view in ("ticks", "fills", "equity", "metrics", "trades"):
        assert con.execute(f"SELECT count(*) FROM {view}").fetchone()[0] > 0, view


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A lake with one month ingested, backtested (fast_period=20), measured and rolled up."""
    from quant_assets.ingest.synthetic import SyntheticSpec, write_landing

    root = tmp_path_factory.mktemp("crash") / "lake"
    root.mkdir()
    write_landing(Lake.at(root), SyntheticSpec(SYMBOL, MONTH, seed=11, events=20_000))
    for kind in ORDER:
        rc, err = _step(root, kind, fast=20)
        assert rc == 0, err
    return root


def _copy(base: Path, tmp_path: Path, name: str) -> Path:
    dest = tmp_path / name
    shutil.copytree(base, dest, ignore=shutil.ignore_patterns(".locks", ".scratch"))
    return dest


def _new_version(root: Path, kind: str) -> None:
    """Make the inputs of ``kind`` change, so its next run publishes a different version."""
    if kind == "ticks":
        b.write(root / "landing" / SYMBOL / f"{SYMBOL}-trades-2024-01-late.csv", b.binance_trades_csv(50, t0_ms=b.JAN_MS + 86_400_000, start_id=10**9))
        return
    for step in ORDER[1: ORDER.index(kind)]:  # the upstream steps, run cleanly with new parameters
        rc, err = _step(root, step, fast=35)
        assert rc == 0, err


#: (crash point, step, the lake folder it was publishing, whether the new version was already
#: committed when the kill came)
CRASH_POINTS = [
    ("replace:part-0.parquet", "ticks", "ticks/", False),
    ("replace:landing.parquet", "ticks", "manifest/", False),
    ("replace:equity.parquet", "backtest", "backtests/", False),  # fills written, equity not
    ("publish:backtest", "backtest", "backtests/", False),  # every file written, not yet swapped in
    ("published:backtest", "backtest", "backtests/", True),  # swapped in, the old folder not yet deleted
    ("replace:trades.parquet", "metrics", "metrics/", False),
    ("publish:metrics", "metrics", "metrics/", False),
    ("replace:daily.parquet", "report", "reports/", False),
    ("publish:report", "report", "reports/", False),
]
#: Bookkeeping a step completes (each file atomically) before it publishes its result.
EARLIER_COMMITS = ("manifest/", "staging/", "quarantine/", "trials/")


@pytest.fixture(scope="module")
def prepared(base, tmp_path_factory):
    """Per step kind: (the lake with that step's inputs changed, the same lake after the step
    ran uninterrupted), made once and copied by each case."""
    cache: dict[str, tuple[Path, Path]] = {}

    def get(kind: str) -> tuple[Path, Path]:
        if kind not in cache:
            d = tmp_path_factory.mktemp(f"prepared-{kind}")
            inputs = _copy(base, d, "inputs")
            _new_version(inputs, kind)
            clean = _copy(inputs, d, "clean")
            rc, err = _step(clean, kind, fast=35)
            assert rc == 0, err
            cache[kind] = (inputs, clean)
        return cache[kind]

    return get


@pytest.mark.parametrize(("point", "kind", "target", "committed"), CRASH_POINTS, ids=[p[0] for p in CRASH_POINTS])
def test_a_kill_mid_publish_loses_nothing_and_the_next_run_completes(prepared, tmp_path, point, kind, target, committed):
    inputs, clean = prepared(kind)
    crashed = _copy(inputs, tmp_path, "crashed")
    before = _visible(crashed)

    rc, err = _step(crashed, kind, fast=35, crash_at=point)
    assert rc == -signal.SIGKILL, f"the step did not reach {point}: rc={rc}\n{err[-2000:]}"

    if committed:
        _data_equal(crashed, clean)  # the new version, whole
    else:
        after = _visible(crashed)
        # The previous version of what was being published, byte for byte, and nothing else
        # changed but the bookkeeping the step had already committed.
        assert {k: v for k, v in after.items() if k.startswith(target)} == {k: v for k, v in before.items() if k.startswith(target)}
        assert {k: v for k, v in after.items() if not k.startswith(EARLIER_COMMITS)} == \
            {k: v for k, v in before.items() if not k.startswith(EARLIER_COMMITS)}
    _readable(crashed)

    rc, err = _step(crashed, kind, fast=35)  # the next run
    assert rc == 0, err
    _data_equal(crashed, clean)
    assert _debris(crashed) == []  # the next writer swept what the killed one left


def test_two_runs_of_one_slice_at_once_do_not_interleave(base, tmp_path):
    """Two processes publish the same backtest slice with different parameters at the same
    moment: the slice ends up as exactly one of the two results, with a matching manifest."""
    import json

    root = _copy(base, tmp_path, "both")
    alone = {fast: _copy(base, tmp_path, f"alone-{fast}") for fast in (35, 60)}
    for fast, r in alone.items():
        assert _step(r, "backtest", fast=fast)[0] == 0
    procs = [_step(root, "backtest", fast=fast, wait=False) for fast in (35, 60)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    rel = f"backtests/strategy=ema_cross/symbol={SYMBOL}/month={MONTH}"
    manifest = json.loads((root / rel / "manifest.json").read_text())
    winner = alone[manifest["params"]["fast_period"]] / rel
    for name in ("fills.parquet", "equity.parquet"):
        assert pl.read_parquet(root / rel / name).equals(pl.read_parquet(winner / name)), name
        assert hashlib.sha256((root / rel / name).read_bytes()).hexdigest() == manifest["files"][name]
    assert _debris(root) == []
