"""Past versions of published slices (:mod:`quant_assets.lake.versions`): ``asof`` by time and by
data version reads the replaced bytes exactly, a backtest's manifest leads to the ticks it read,
retention prunes without freeing a shared object, gc repairs, and unknown versions say so."""

from __future__ import annotations

import hashlib
import json
import os
import time

import dagster as dg
import polars as pl
import pytest

from quant_assets import cli
from quant_assets.definitions import ASSETS
from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
from quant_assets.lake import duck, versions
from quant_assets_tests import builders as b
from resources import CriticResource, LakeResource

PK = "2024-01|BTCUSDT"


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _materialize(instance, selection):
    res = dg.materialize(ASSETS, selection=selection, partition_key=PK, instance=instance,
                         resources={"lake": LakeResource(), "critic": CriticResource()}, raise_on_error=False)
    assert res.success
    return res


def test_a_replaced_ticks_month_and_the_backtest_that_read_it_stay_readable(lake, instance, tmp_path, capsys):
    write_landing(lake, SyntheticSpec("BTCUSDT", "2024-01", seed=3, events=3_000))
    instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
    first = _materialize(instance, ["ticks", "backtest_ema_cross"])
    ticks_path = lake.ticks_path("BTCUSDT", "2024-01")
    first_bytes, first_frame = ticks_path.read_bytes(), pl.read_parquet(ticks_path)
    (mat,) = first.asset_materializations_for_node("ticks")
    dv1 = mat.tags["dagster/data_version"]
    meta = mat.metadata["version_files"].value
    assert meta["data_version"] == dv1 and meta["files"]["part-0.parquet"]["sha256"] == hashlib.sha256(first_bytes).hexdigest()
    (bt_mat,) = first.asset_materializations_for_node("backtest_ema_cross")
    between = versions.iso(time.time_ns())

    b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-trades-2024-01.csv", b.binance_trades_csv(5, t0_ms=b.JAN_MS + 86_400_000))
    (mat2,) = _materialize(instance, ["ticks"]).asset_materializations_for_node("ticks")
    dv2 = mat2.tags["dagster/data_version"]
    assert dv2 != dv1 and ticks_path.read_bytes() != first_bytes

    slc = versions.Slice("ticks", "BTCUSDT", "2024-01")
    assert [v.data_version for v in versions.versions(lake, slc)] == [dv1, dv2]
    at_then = versions.resolve(lake, "ticks", ("BTCUSDT", "2024-01"), between)
    by_dv = versions.resolve(lake, "ticks", ("BTCUSDT", "2024-01"), dv1[:8])
    assert at_then == by_dv and at_then.data_version == dv1
    assert at_then.paths(lake)["part-0.parquet"].read_bytes() == first_bytes
    assert versions.scan(lake, at_then).collect().equals(first_frame)
    assert versions.resolve(lake, "ticks", ("BTCUSDT", "2024-01"), versions.iso(time.time_ns())).data_version == dv2
    con = duck.connect(lake)
    duck.asof(con, lake, "ticks", PK, between)
    assert con.sql("SELECT count(*) FROM ticks_asof").fetchall()[0][0] == first_frame.height

    # the backtest names the ticks data version it read: its inputs are the first bytes, not today's
    bt = versions.resolve(lake, "backtest_ema_cross", ("BTCUSDT", "2024-01"), bt_mat.tags["dagster/data_version"])
    manifest = json.loads(bt.paths(lake)["manifest.json"].read_text())
    assert manifest["ticks_data_version"] == dv1
    (read,) = [i for i in versions.inputs(lake, bt) if i["role"] == "ticks"]
    assert read["version"].data_version == dv1 and _sha(read["version"].paths(lake)["part-0.parquet"]) == hashlib.sha256(first_bytes).hexdigest()

    out = tmp_path / "out"
    assert cli.main(["asof", "backtest_ema_cross", PK, bt.data_version, "--inputs", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert bt.data_version in printed and dv1 in printed and "read ticks" in printed
    assert (out / "inputs" / "ticks" / "part-0.parquet").read_bytes() == first_bytes
    assert (out / "fills.parquet").read_bytes() == (lake.backtest_dir("ema_cross", "BTCUSDT", "2024-01") / "fills.parquet").read_bytes()


def _publish(lake, symbol: str, payload: bytes) -> str:
    """Replace a ticks file by rename (as the lake does) and record it; its data version."""
    final = lake.ticks_path(symbol, "2024-01")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(".tmp-x")
    tmp.write_bytes(payload)
    os.replace(tmp, final)
    dv = hashlib.sha256(payload).hexdigest()[:24]
    versions.record(lake, "ticks", (symbol, "2024-01"), dv)
    return dv


def test_retention_prunes_but_keeps_shared_objects_and_gc_repairs(lake, monkeypatch):
    monkeypatch.setenv("QUANT_KEEP_VERSIONS", "2")
    a, c = _publish(lake, "BTCUSDT", b"A" * 100), hashlib.sha256(b"C").hexdigest()
    obj_a = lake.root / versions.object_rel(hashlib.sha256(b"A" * 100).hexdigest())
    assert obj_a.stat().st_ino == lake.ticks_path("BTCUSDT", "2024-01").stat().st_ino  # a hard link: no bytes copied
    bb = _publish(lake, "BTCUSDT", b"B" * 100)
    assert _publish(lake, "BTCUSDT", b"B" * 100) == bb  # the same data version again: nothing new
    _publish(lake, "ETHUSDT", b"A" * 100)  # another slice with A's bytes: one object, two marks
    slc = versions.Slice("ticks", "BTCUSDT", "2024-01")
    obj = {d: lake.root / versions.object_rel(hashlib.sha256(p).hexdigest()) for d, p in ((a, b"A" * 100), (bb, b"B" * 100))}

    _publish(lake, "BTCUSDT", b"C")
    assert [v.data_version for v in versions.versions(lake, slc)] == [bb, c[:24]]  # A dropped from BTCUSDT's index
    assert obj[a].read_bytes() == b"A" * 100  # ... but ETHUSDT's index still names its bytes
    _publish(lake, "BTCUSDT", b"D")
    assert not obj[bb].exists()  # named by no index any more: freed at once

    monkeypatch.setenv("QUANT_KEEP_VERSIONS", "all")
    _publish(lake, "BTCUSDT", b"E")
    assert len(versions.versions(lake, slc)) == 3
    stray = lake.root / versions.object_rel("ab" * 32)
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"orphan")
    (lake.root / "versions" / "refs" / c[:2] / c / slc.key).unlink()
    counts = versions.gc(lake)
    assert counts["objects_removed"] == 1 and counts["marks_fixed"] == 1 and not stray.exists()
    assert (lake.root / "versions" / "refs" / c[:2] / c / slc.key).exists() and obj[a].exists()

    monkeypatch.setenv("QUANT_KEEP_VERSIONS", "ten")
    with pytest.raises(ValueError, match="QUANT_KEEP_VERSIONS='ten'"):
        _publish(lake, "BTCUSDT", b"F")


def test_unknown_times_and_versions_list_what_exists(lake, capsys):
    dv = _publish(lake, "BTCUSDT", b"A")
    with pytest.raises(versions.VersionNotFound, match=rf"nothing was published at or before 2001-01-01T00:00:00.000000Z; versions: {dv} published"):
        versions.resolve(lake, "ticks", ("BTCUSDT", "2024-01"), "2001-01-01")
    with pytest.raises(versions.VersionNotFound, match=rf"no version has data version 'ffff'.*{dv}"):
        versions.resolve(lake, "ticks", ("BTCUSDT", "2024-01"), "ffff")
    with pytest.raises(versions.VersionNotFound, match="no versions recorded"):
        versions.resolve(lake, "ticks", ("ETHUSDT", "2024-01"), "2024-02-01")
    assert cli.main(["asof", "ticks", PK, "2001-01-01"]) == 2
    assert dv in capsys.readouterr().out
    with pytest.raises(RuntimeError, match="published again since"):
        versions.record(lake, "ticks", ("BTCUSDT", "2024-01"), "0" * 24)


def test_a_book_month_keeps_its_day_files_and_manifest(lake):
    from quant_assets.book.build import build_book
    from quant_assets_tests.book_builders import DAY_NS, JAN_NS, Script, land

    s = Script().snapshot({100.0: 1.0}, {101.0: 1.0}, seq=10)
    s.update([(1, 100.0, 2.0)], seq=11, first=11)
    land(lake, "BTCUSDT", s.frame())
    one = build_book(lake, "BTCUSDT", "2024-01")
    v1 = versions.record(lake, "book", ("BTCUSDT", "2024-01"), one.sha256[:24])
    days1 = pl.concat([pl.read_parquet(p) for p in lake.book_days("BTCUSDT", "2024-01")])
    assert sorted(v1.files) == ["day=01/part-0.parquet", "manifest.json"]

    s.update([(-1, 101.5, 0.5)], seq=12, first=12, t=JAN_NS + DAY_NS + 5)
    land(lake, "BTCUSDT", s.frame())
    two = build_book(lake, "BTCUSDT", "2024-01")
    assert two.sha256 != one.sha256
    versions.record(lake, "book", ("BTCUSDT", "2024-01"), two.sha256[:24])
    old = versions.resolve(lake, "book", ("BTCUSDT", "2024-01"), v1.data_version)
    assert versions.scan(lake, old).collect().equals(days1)
    manifest = lake.root / versions.object_rel(old.files["manifest.json"]["sha256"])
    assert versions.by_file(lake, old.slice, "manifest.json", _sha(manifest)) == old
