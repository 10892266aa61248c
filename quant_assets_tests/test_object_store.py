"""The lake on object storage, against a real S3-compatible server (moto's standalone server on
127.0.0.1: the ``s3_endpoint`` fixture, or the one ``.ci/run`` started).

Checks: ingest -> backtest -> metrics for one slice with the lake at ``s3://bucket/lake`` gives
the same files, byte for byte, as with a local folder, when the steps run on two "machines"
(two working copies that share nothing but the store); DuckDB and Polars read the hive layout
in the store; a push uploads data before each folder's manifest, never rewrites a raw landing
file, and a push cut short before the manifest leaves the store's folder as it was; rows that
two machines add to the trials ledger both survive.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from quant_assets.definitions import ASSETS
from quant_assets.ingest.synthetic import SyntheticSpec, landing_name, write_landing
from quant_assets.lake import duck
from quant_assets.lake.store import Lake
from quant_assets_tests.servers import make_bucket, s3_env
from resources import CriticResource, LakeResource

SLICE = "2024-01|BTCUSDT"
SELECTION_A = ["ticks", "backtest_ema_cross"]
SELECTION_B = ["metrics_ema_cross"]
#: Files whose bytes must not depend on where the lake lives (manifests hold times).
COMPARED = ("ticks/symbol=*/month=*/part-0.parquet", "backtests/strategy=*/symbol=*/month=*/fills.parquet",
            "backtests/strategy=*/symbol=*/month=*/equity.parquet", "metrics/strategy=*/symbol=*/month=*/trades.parquet",
            "metrics/strategy=*/symbol=*/month=*/regimes.parquet", "staging/symbol=*/*.parquet")


@pytest.fixture
def bucket(s3_endpoint, monkeypatch, tmp_path) -> str:
    """A fresh bucket; returns the lake URL ``s3://<bucket>/lake``."""
    for key, value in s3_env(s3_endpoint).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("QUANT_INSTRUMENTS", str(tmp_path / "no-instruments.toml"))
    return make_bucket(s3_endpoint)


def _machine(monkeypatch, tmp_path: Path, name: str) -> Path:
    """Switch to the working copy of "machine" ``name`` (shares nothing with the others)."""
    cache = tmp_path / f"machine_{name}"
    monkeypatch.setenv("QUANT_LAKE_CACHE", str(cache))
    return cache


def _run(instance, root: str, selection: list[str]) -> dg.ExecuteInProcessResult:
    return dg.materialize(ASSETS, selection=selection, partition_key=SLICE, instance=instance,
                          resources={"lake": LakeResource(root=root), "critic": CriticResource()}, raise_on_error=False)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_slice_on_object_store_equals_local_folder_across_two_machines(bucket, instance, tmp_path, monkeypatch):
    spec = SyntheticSpec("BTCUSDT", "2024-01", seed=11, events=20_000)
    local = Lake.at(tmp_path / "local_lake")
    write_landing(local, spec)
    instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
    remote = Lake.at(bucket).remote
    # A user drops the raw file into the bucket's landing zone.
    remote.fs.put_file(str(local.landing_dir("BTCUSDT") / landing_name(spec)),
                       f"{remote.base}/landing/BTCUSDT/{landing_name(spec)}")

    assert _run(instance, str(local.root), [*SELECTION_A, *SELECTION_B]).success

    # Machine A ingests and backtests; machine B, with an empty working copy, computes the
    # metrics from what A pushed to the store.
    cache_a = _machine(monkeypatch, tmp_path, "a")
    result = _run(instance, bucket, SELECTION_A)
    assert result.success
    assert (cache_a / "backtests/strategy=ema_cross/symbol=BTCUSDT/month=2024-01/fills.parquet").exists()
    cache_b = _machine(monkeypatch, tmp_path, "b")
    result = _run(instance, bucket, SELECTION_B)
    assert result.success
    said = [e.message for e in instance.all_logs(result.run_id) if "lake s3://" in (e.message or "")]
    assert "pulled BTCUSDT" in said[0] and " 0 fetched" not in said[0], said
    # Every output went up inside the step as it was published: the closing sweep found nothing.
    assert "pushed" in said[1] and " 0 uploaded" in said[1], said
    assert (cache_b / "backtests/strategy=ema_cross/symbol=BTCUSDT/month=2024-01/fills.parquet").exists()
    assert not (cache_a / "metrics").exists()  # A never saw B's metrics: they came through the store only

    stored = remote.files()
    expected = {str(p.relative_to(local.root)): _sha(p.read_bytes()) for g in COMPARED for p in sorted(local.root.glob(g))}
    assert len(expected) == 6
    got = {rel: _sha(remote.fs.cat_file(f"{remote.base}/{rel}")) for rel in expected if rel in stored}
    assert got == expected
    # Every published file of the local run exists in the store, and nothing private leaked.
    # (versions/refs/ is a local lake's only: a remote lake keeps no refs, lake.versions)
    local_files = {str(p.relative_to(local.root)) for p in local.root.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(local.root).parts)
                   and not str(p.relative_to(local.root)).startswith("versions/refs/")}
    assert local_files <= set(stored), sorted(local_files - set(stored))
    assert not any(rel.startswith((".sync", ".locks", ".scratch")) for rel in stored)

    # DuckDB and Polars read the hive layout in the store itself.
    store_con, local_con = duck.connect(Lake.at(bucket)), duck.connect(local)
    for sql in ("SELECT count(*), sum(bid_px) FROM ticks WHERE symbol = 'BTCUSDT' AND month = '2024-01'",
                "SELECT count(*), sum(fee) FROM fills WHERE strategy = 'ema_cross'",
                "SELECT count(*) FROM trades"):
        assert store_con.execute(sql).fetchall() == local_con.execute(sql).fetchall(), sql
    options = {"aws_endpoint_url": os.environ["AWS_ENDPOINT_URL_S3"], "aws_access_key_id": "testing",
               "aws_secret_access_key": "testing", "aws_region": "us-east-1", "aws_allow_http": "true"}
    frame = pl.scan_parquet(f"{bucket}/ticks/**/*.parquet", hive_partitioning=True, storage_options=options)
    assert frame.select(pl.len()).collect().item() == local_con.execute("SELECT count(*) FROM ticks").fetchone()[0]

    # A re-run on machine B changes nothing in the store: the same inputs give the same bytes.
    assert _run(instance, bucket, SELECTION_B).success
    assert {rel: _sha(remote.fs.cat_file(f"{remote.base}/{rel}")) for rel in expected} == expected

    # Versions (lake.versions): a step never pulls their objects; a third machine reads the
    # recorded ticks version from the store alone, fetching its object on demand.
    from quant_assets.lake import versions

    ticks_sha = expected["ticks/symbol=BTCUSDT/month=2024-01/part-0.parquet"]
    assert not (cache_b / versions.object_rel(ticks_sha)).exists()
    _machine(monkeypatch, tmp_path, "c")
    fresh = Lake.at(bucket)
    v = versions.resolve(fresh, "ticks", ("BTCUSDT", "2024-01"), ticks_sha[:12])
    assert _sha(v.paths(fresh)["part-0.parquet"].read_bytes()) == ticks_sha


def test_push_commits_manifests_last_and_keeps_raw_files(bucket, tmp_path, monkeypatch):
    from quant_assets.lake import remote as remote_mod

    _machine(monkeypatch, tmp_path, "a")
    lake = Lake.at(bucket)
    store = lake.remote
    slice_dir = lake.backtest_dir("ema_cross", "BTCUSDT", "2024-01")
    slice_dir.mkdir(parents=True)
    for name, text in [("manifest.json", '{"v": 1}'), ("fills.parquet", "fills v1"), ("equity.parquet", "equity v1")]:
        (slice_dir / name).write_text(text)
    raw = lake.landing_dir("BTCUSDT") / "drop.csv"
    raw.parent.mkdir(parents=True)
    raw.write_text("raw as dropped\n")
    first = store.push()
    assert first.uploaded == 4
    rels = [r.rsplit("/", 1)[-1] for r in first.order]
    assert rels.index("manifest.json") > max(rels.index("fills.parquet"), rels.index("equity.parquet"))

    # A local edit of a raw file is never pushed over the store's copy.
    raw.write_text("edited\n")
    # A push cut short before the commit mark: the data went up, the old manifest still stands.
    (slice_dir / "fills.parquet").write_text("fills v2")
    (slice_dir / "manifest.json").write_text('{"v": 2}')

    def boom(name: str) -> None:
        if name == "push:commit":
            raise RuntimeError("killed before the manifest")

    monkeypatch.setattr(remote_mod, "crash_point", boom)
    with pytest.raises(RuntimeError):
        store.push()
    rel = lake.relative(slice_dir)
    assert store.fs.cat_file(f"{store.base}/{rel}/manifest.json") == b'{"v": 1}'
    monkeypatch.setattr(remote_mod, "crash_point", lambda name: None)
    again = store.push()
    assert store.fs.cat_file(f"{store.base}/{rel}/manifest.json") == b'{"v": 2}'
    assert store.fs.cat_file(f"{store.base}/{rel}/fills.parquet") == b"fills v2"
    assert store.fs.cat_file(f"{store.base}/landing/BTCUSDT/drop.csv") == b"raw as dropped\n"
    assert "landing/BTCUSDT/drop.csv" not in again.order

    # A file the copy removed (a folder republished with fewer files) leaves the store too.
    (slice_dir / "equity.parquet").unlink()
    assert store.push().deleted == 1
    assert f"{rel}/equity.parquet" not in store.files()

    # Another machine pulls the slice whole, and a pull removes what left the store.
    _machine(monkeypatch, tmp_path, "b")
    other = Lake.at(bucket)
    other.remote.pull("BTCUSDT")
    assert (other.root / rel / "manifest.json").read_text() == '{"v": 2}'
    assert not (other.root / rel / "equity.parquet").exists()
    store.fs.rm(f"{store.base}/{rel}/fills.parquet")
    assert other.remote.pull("BTCUSDT").deleted == 1
    assert not (other.root / rel / "fills.parquet").exists()
    # A pull for another symbol does not fetch this one's files.
    _machine(monkeypatch, tmp_path, "c")
    assert Lake.at(bucket).remote.pull("ETHUSDT").fetched == 0


def test_trials_added_on_two_machines_both_survive(bucket, tmp_path, monkeypatch):
    from quant_assets.analytics import trials

    _machine(monkeypatch, tmp_path, "a")
    a = Lake.at(bucket)
    _machine(monkeypatch, tmp_path, "b")
    b = Lake.at(bucket)
    assert trials.record(a, "ema_cross", "ema_cross", {"fast": 10})
    a.remote.push()
    # B started before A pushed (its copy has no trials file), then records its own.
    assert trials.record(b, "ema_cross", "ema_cross", {"fast": 20})
    assert b.remote.push().merged == 1
    _machine(monkeypatch, tmp_path, "c")
    c = Lake.at(bucket)
    c.remote.pull()
    assert sorted(trials.read(c)["params"].to_list()) == ['{"fast": 10}', '{"fast": 20}']
    assert trials.count(c, "ema_cross") == 2

    # A trial recorded on A but not pushed yet survives A's next pull of the newer ledger.
    assert trials.record(a, "ema_cross", "ema_cross", {"fast": 30})
    assert trials.record(c, "ema_cross", "ema_cross", {"fast": 40})
    c.remote.push()
    assert a.remote.pull().merged == 1
    a.remote.push()
    c.remote.pull()
    assert trials.count(c, "ema_cross") == 4

    # A null-critic control run of a parameter set another machine tried is its own row: the
    # merge keeps the trial (it would drop it, keyed without the kind, and the count would fall).
    assert trials.record(a, "ema_cross", "ema_cross", {"fast": 50})
    a.remote.push()
    assert trials.record(c, "ema_cross", "ema_cross", {"fast": 50}, kind=trials.NULL_CRITIC)
    assert c.remote.push().merged == 1
    b.remote.pull()
    assert trials.count(b, "ema_cross") == 5 and trials.read(b).height == 6


def test_landing_sensor_sees_files_dropped_into_the_bucket(bucket, instance, tmp_path, monkeypatch):
    from quant_assets.definitions import defs
    from quant_assets.sensors import landing_sensor

    _machine(monkeypatch, tmp_path, "daemon")
    spec = SyntheticSpec("ETHUSDT", "2024-02", seed=2, events=2_000)
    src = write_landing(Lake.at(tmp_path / "elsewhere"), spec)
    store = Lake.at(bucket).remote
    store.fs.put_file(str(src), f"{store.base}/landing/ETHUSDT/{src.name}")
    with dg.build_sensor_context(instance_ref=instance.get_ref(), definitions=defs,
                                 resources={"lake": LakeResource(root=bucket), "critic": CriticResource()}) as ctx:
        result = landing_sensor(ctx)
    assert [str(r.partition_key) for r in result.run_requests] == ["2024-02|ETHUSDT"]
    # The sensor's survey of the file reached the store's landing manifest, and the raw file
    # is byte for byte what was dropped.
    assert "manifest/landing.parquet" in store.files()
    assert store.fs.cat_file(f"{store.base}/landing/ETHUSDT/{src.name}") == src.read_bytes()


def test_a_missing_bucket_is_named_not_taken_for_an_empty_lake(bucket, tmp_path, monkeypatch):
    from quant_assets.lake.remote import LakeUnavailable

    _machine(monkeypatch, tmp_path, "a")
    missing = bucket.replace("s3://quant-", "s3://nosuch-")
    with pytest.raises(LakeUnavailable, match=r"lake s3://nosuch-.*/lake: 'nosuch-.*' does not exist .*AWS_ENDPOINT_URL_S3"):
        Lake.at(missing).remote.pull()


def test_a_failed_upload_fails_the_step_that_wrote_it(bucket, instance, tmp_path, monkeypatch):
    _machine(monkeypatch, tmp_path, "a")
    lake = Lake.at(bucket)
    write_landing(lake, SyntheticSpec("BTCUSDT", "2024-01", seed=3, events=5_000))
    instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
    assert _run(instance, bucket, ["ticks"]).success
    fs = lake.remote.fs
    real_put = fs.put_file

    def denied(lpath, rpath, *args, **kwargs):
        if "/backtests/" in rpath:
            raise PermissionError(f"Access Denied: {rpath}")
        return real_put(lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(fs, "put_file", denied)
    result = _run(instance, bucket, ["backtest_ema_cross"])
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    said = failure.step_failure_data.error.to_string()
    assert failure.step_key == "backtest_ema_cross"
    assert f"lake {bucket}: could not upload backtests/strategy=ema_cross/symbol=BTCUSDT/month=2024-01/" in said
    assert "Access Denied" in said
    assert not any(rel.startswith("backtests/") for rel in lake.remote.files())
