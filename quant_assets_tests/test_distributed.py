"""Several machines, simulated on one: a backfill launched through the Dagster webserver's
GraphQL API (as the UI's "Materialize" of a partition range does), queued and launched by the
daemon of a real ``dagster dev``, its steps run by two Celery workers (Redis broker) that share
nothing but the lake in an S3-compatible store (moto): each worker has its own working copy.

Checks: the backfill completes; every step ran in a worker and both took steps; each worker
fetched its inputs from the store (a slice built by one worker is read by the other); the
store's files equal those of the in-process profile on a local folder, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os

import dagster as dg

from quant_assets.devserver import DevServer
from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
from quant_assets.lake.store import Lake
from quant_assets.settings import _DAGSTER_YAML
from quant_assets_tests.servers import Workers, celery_worker_of, make_bucket, s3_env
from resources import CriticResource, LakeResource

SLICES = [("2024-01", "BTCUSDT"), ("2024-02", "BTCUSDT"), ("2024-01", "ETHUSDT"), ("2024-02", "ETHUSDT")]
SELECTION = ["ticks", "backtest_ema_cross", "metrics_ema_cross"]
COMPARED = ("ticks/symbol=*/month=*/part-0.parquet", "backtests/strategy=*/symbol=*/month=*/fills.parquet",
            "backtests/strategy=*/symbol=*/month=*/equity.parquet", "metrics/strategy=*/symbol=*/month=*/trades.parquet")
LOCATION = '{repositoryLocationName: "quant_assets.definitions", repositoryName: "__repository__"}'


def _stop_sensors(server: DevServer) -> list[str]:
    """Stop the landing and automation sensors, so only the backfill launches runs."""
    found = server.graphql("{ sensorsOrError(repositorySelector: %s) { ... on Sensors { results { id name } } } }"
                           % LOCATION)["sensorsOrError"]["results"]
    for sensor in found:
        done = server.graphql('mutation { stopSensor(id: "%s") { __typename } }' % sensor["id"])
        assert done["stopSensor"]["__typename"] == "StopSensorMutationResult", done
    return sorted(s["name"] for s in found)


def test_backfill_runs_on_two_workers_over_an_object_store_lake(s3_endpoint, celery_urls, tmp_path, monkeypatch):
    url = make_bucket(s3_endpoint)
    broker, backend = celery_urls
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(_DAGSTER_YAML)  # the shipped instance: queued runs, pools, run monitoring
    env = {**os.environ, **s3_env(s3_endpoint), "DAGSTER_HOME": str(home), "QUANT_LAKE": url,
           "QUANT_EXECUTOR": "celery", "QUANT_CELERY_BROKER": broker,
           "QUANT_CELERY_BACKEND": backend, "QUANT_INSTRUMENTS": str(tmp_path / "none.toml"),
           "QUANT_LAKE_CACHE": str(tmp_path / "machine_launcher")}
    env.pop("ANTHROPIC_API_KEY", None)
    for key, value in env.items():
        if key.startswith(("AWS_", "QUANT_", "DAGSTER_HOME")):
            monkeypatch.setenv(key, value)

    # Raw files as a user drops them into the bucket's landing zone, and the same files in a
    # local folder for the in-process reference run.
    local = Lake.at(tmp_path / "local_lake")
    store = Lake.at(url).remote
    for month, symbol in SLICES:
        path = write_landing(local, SyntheticSpec(symbol, month, seed=7, events=20_000))
        store.fs.put_file(str(path), f"{store.base}/landing/{symbol}/{path.name}")

    workers = Workers(env, tmp_path)
    server = DevServer(env, tmp_path / "dagster-dev.log")
    try:
        server.wait_loaded()
        assert _stop_sensors(server) == ["automation_sensor", "landing_sensor"]
        with dg.DagsterInstance.get() as instance:
            instance.add_dynamic_partitions("symbols", sorted({s for _, s in SLICES}))
        workers.start("w1", QUANT_LAKE_CACHE=str(tmp_path / "machine_w1"))
        workers.start("w2", QUANT_LAKE_CACHE=str(tmp_path / "machine_w2"))

        # Two backfills, the ticks then what reads them: a backtest reads the month before too
        # (warm-up), so a backfill rooted at February's ticks would also target March's
        # backtests (README, "Slices that read earlier months"), which have no ticks here.
        runs = []
        for selection in (SELECTION[:1], SELECTION[1:]):
            params = json.dumps({"partitionNames": [f"{m}|{s}" for m, s in SLICES],
                                 "assetSelection": [{"path": [a]} for a in selection]})
            params = params.replace('"partitionNames"', "partitionNames").replace('"assetSelection"', "assetSelection").replace('"path"', "path")
            launched = server.graphql("mutation { launchPartitionBackfill(backfillParams: %s) { __typename "
                                      "... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }" % params)
            backfill_id = launched["launchPartitionBackfill"].get("backfillId")
            assert backfill_id, launched

            with dg.DagsterInstance.get() as instance:
                def finished():
                    backfill = instance.get_backfill(backfill_id)
                    runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
                    ended = all(r.is_finished for r in runs)
                    return backfill.status.value != "REQUESTED" and ended and runs

                server.wait("the backfill", finished, timeout_s=900, poll_s=3)
                backfill = instance.get_backfill(backfill_id)
                these = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
                assert backfill.status.value == "COMPLETED_SUCCESS", (backfill.status, [r.status for r in these], server.tail())
                assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in these)
                # batched (quant_assets/batching.py): one run per month, each building both symbols
                ranges = sorted((r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
                                for r in these)
                assert ranges == [("2024-01|BTCUSDT", "2024-01|ETHUSDT"), ("2024-02|BTCUSDT", "2024-02|ETHUSDT")], ranges
                runs += these
        with dg.DagsterInstance.get() as instance:
            hosts, pulls = set(), []
            for run in runs:
                for rec in instance.get_records_for_run(run.run_id).records:
                    entry = rec.event_log_entry
                    ev = entry.dagster_event
                    if worker := celery_worker_of(ev):
                        hosts.add(worker)
                    if ev is None and "pulled" in (entry.user_message or ""):
                        pulls.append(entry.user_message)
        assert hosts == {"w1", "w2"}, hosts
        # Each step pulled its inputs from the store into its own machine's copy.
        assert any("machine_w1" in p for p in pulls) and any("machine_w2" in p for p in pulls), pulls
        assert not (tmp_path / "machine_launcher" / "ticks").exists()  # the launcher never ran a step
    finally:
        workers.stop_all()
        server.stop()

    # The in-process profile on a local folder gives the same bytes as the store holds.
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home_local"))
    (tmp_path / "home_local").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home_local")) as inst:
        from quant_assets.definitions import ASSETS

        inst.add_dynamic_partitions("symbols", sorted({s for _, s in SLICES}))
        for month, symbol in SLICES:
            assert dg.materialize(ASSETS, selection=SELECTION, partition_key=f"{month}|{symbol}", instance=inst,
                                  resources={"lake": LakeResource(root=str(local.root)), "critic": CriticResource()}).success
    expected = {str(p.relative_to(local.root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for g in COMPARED for p in sorted(local.root.glob(g))}
    assert len(expected) == len(SLICES) * len(COMPARED)
    stored = store.files()
    got = {rel: hashlib.sha256(store.fs.cat_file(f"{store.base}/{rel}")).hexdigest() for rel in expected if rel in stored}
    assert got == expected
