"""The landing sensor against a real (temporary) Dagster instance."""

from __future__ import annotations

import os
import time

import dagster as dg

from quant_assets.definitions import defs
from quant_assets.sensors import landing_sensor
from quant_assets_tests import builders as b
from resources import CriticResource, LakeResource


def _evaluate(instance, cursor=None):
    with dg.build_sensor_context(
        instance_ref=instance.get_ref(), definitions=defs, cursor=cursor, resources={"lake": LakeResource(), "critic": CriticResource()}
    ) as ctx:
        return landing_sensor(ctx)


def _settled(path):
    old = time.time() - 60
    os.utime(path, (old, old))
    return path


def _keys(result):
    return sorted(str(r.partition_key) for r in result.run_requests)


def test_new_files_request_exactly_the_partitions_they_touch(lake, instance):
    _settled(b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-trades-2024-01.zip",
                     b.zipped("BTCUSDT-trades-2024-01.csv", b.binance_trades_csv(3, t0_ms=b.JAN_END_MS, step_ms=1000))))
    _settled(b.write(lake.landing_dir("EURUSD") / "eurusd.csv", b.fx_truefx_csv(3)))
    res = _evaluate(instance)
    assert _keys(res) == ["2024-01|BTCUSDT", "2024-01|EURUSD", "2024-02|BTCUSDT"]
    assert sorted(res.dynamic_partitions_requests[0].partition_keys) == ["BTCUSDT", "EURUSD"]
    assert len({r.run_key for r in res.run_requests}) == 3

    # the same content is never requested twice
    again = _evaluate(instance, cursor=res.cursor)
    assert again.run_requests == [] and again.dynamic_partitions_requests == []

    # a changed file requests its partitions again, with a new run key
    _settled(b.write(lake.landing_dir("EURUSD") / "eurusd.csv", b.fx_truefx_csv(4)))
    changed = _evaluate(instance, cursor=res.cursor)
    assert _keys(changed) == ["2024-01|EURUSD"]
    assert changed.run_requests[0].run_key not in {r.run_key for r in res.run_requests}


def _aged(path, seconds):
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def test_a_file_still_being_written_waits(lake, instance):
    path = b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-trades-2024-01.csv", b.binance_trades_csv(3))
    res = _evaluate(instance)
    assert res.run_requests == []  # just modified: may be half written
    _aged(path, 5)  # a stalled writer: old enough, but no earlier tick saw this size
    res = _evaluate(instance, cursor=res.cursor)
    assert res.run_requests == []
    with open(path, "a") as f:  # the writer goes on between two ticks
        f.write(b.binance_trades_csv(6).splitlines()[-1] + "\n")
    _aged(path, 5)
    res = _evaluate(instance, cursor=res.cursor)
    assert res.run_requests == []  # the size changed since the last tick: wait again
    res = _evaluate(instance, cursor=res.cursor)  # unchanged across two ticks: complete
    assert _keys(res) == ["2024-01|BTCUSDT"]
    assert _evaluate(instance, cursor=res.cursor).run_requests == []


def test_bad_files_and_folders_request_nothing(lake, instance):
    _settled(b.write(lake.landing_dir("BTCUSDT") / "junk.txt", "not ticks at all\n"))
    bad_folder = lake.landing / "bad name"
    bad_folder.mkdir()
    _settled(b.write(bad_folder / "x.csv", b.binance_trades_csv(2)))
    res = _evaluate(instance)
    assert res.run_requests == [] and res.dynamic_partitions_requests == []
    from quant_assets.lake.manifest import read_manifest

    assert read_manifest(lake)["landing/BTCUSDT/junk.txt"].status == "failed"


def test_sensor_runs_materialise_the_requested_partitions(lake, instance):
    _settled(b.write(lake.landing_dir("BTCUSDT") / "binance_quotes.csv", b.tardis_quotes_csv()))
    res = _evaluate(instance)
    instance.add_dynamic_partitions("symbols", list(res.dynamic_partitions_requests[0].partition_keys))
    (req,) = res.run_requests
    job = defs.resolve_job_def(landing_sensor.job_name)
    out = job.execute_in_process(partition_key=str(req.partition_key), instance=instance)
    assert out.success
    mat = instance.fetch_materializations(dg.AssetKey("ticks"), limit=1).records[0].asset_materialization
    assert mat.partition == "2024-01|BTCUSDT" and mat.metadata["dagster/row_count"].value == 4
    assert landing_sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_partitions_already_built_from_the_same_files_are_not_requested_again(lake, instance):
    from quant_assets.cli import main

    # Settled, so the first tick takes it whatever the time sync took (a fresh file that sync
    # outlived QUIET_SECONDS would otherwise be taken only by the second tick, and lose the race).
    _settled(b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-bookTicker-2024-01.csv", b.binance_bookticker_csv(4)))
    assert main(["sync"]) == 0  # built headless, before any sensor tick
    tick0 = _evaluate(instance)
    assert tick0.run_requests == []  # the sensor's first tick: nothing new
    b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-trades-2024-01.csv", b.binance_trades_csv(5))
    time.sleep(2.5)  # let the new file settle
    first = _evaluate(instance, cursor=tick0.cursor)
    assert first.run_requests == []  # seen once: wait for a second look at the same size
    assert [str(r.partition_key) for r in _evaluate(instance, cursor=first.cursor).run_requests] == ["2024-01|BTCUSDT"]
