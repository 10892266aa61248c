"""The ``celery`` execution profile for real: a Redis broker (Debian's ``redis-server``), two
Celery worker processes (``quant-assets worker``) and runs launched with Dagster's own CLI
(``dagster asset materialize``) for four slices, two at a time.

Checks: every step ran in a worker, never in the launching process, and both workers took
steps; the engine pool's limit (1 here) held across the workers (sampled from the pool's claims); the lake equals the one the
in-process profile builds from the same landing files, byte for byte; a worker process killed
in the middle of a backtest (SIGKILL) fails the run with the step named, leaves the published
slice untouched, its pool slot is released (``quant-assets free-slots``), and a re-run completes;
a step whose whole worker (parent and pool) is lost is handed to another worker after the
redelivery timeout and the run completes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from quant_assets_tests.servers import Workers, celery_worker_of

SLICES = [("2024-01", "BTCUSDT"), ("2024-01", "ETHUSDT"), ("2024-02", "BTCUSDT"), ("2024-02", "ETHUSDT")]
SELECTION = ["ticks", "bars_1m", "sweep_ema_cross", "backtest_ema_cross", "backtest_mean_reversion", "metrics_ema_cross"]
ENGINE_STEPS = {"sweep_ema_cross", "backtest_ema_cross", "backtest_mean_reversion"}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _materialize(env: dict[str, str], selection: list[str], key: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "quant_assets.definitions",
           "--select", ",".join(selection), "--partition", key]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _lake_files(root: Path) -> dict[str, str]:
    """Every data file whose bytes must not depend on where the steps ran."""
    globs = ["ticks/symbol=*/month=*/part-0.parquet", "bars/interval=*/symbol=*/month=*/part-0.parquet",
             "sweeps/strategy=*/symbol=*/month=*/grid.parquet", "backtests/strategy=*/symbol=*/month=*/fills.parquet",
             "backtests/strategy=*/symbol=*/month=*/equity.parquet", "metrics/strategy=*/symbol=*/month=*/trades.parquet"]
    return {str(p.relative_to(root)): _sha(p) for g in globs for p in sorted(root.glob(g))}


def test_celery_workers_run_the_steps_and_build_the_same_lake(celery_urls, tmp_path, monkeypatch):
    import dagster as dg

    from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
    from quant_assets.lake.store import Lake

    broker, backend = celery_urls
    home = tmp_path / "home"
    home.mkdir()
    # One engine step at a time across every worker: the pool limit lives in the shared instance.
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n")
    lakes = {"celery": tmp_path / "lake_celery", "local": tmp_path / "lake_local"}
    for root in lakes.values():
        for month, symbol in SLICES:
            write_landing(Lake.at(root), SyntheticSpec(symbol, month, seed=3, events=20_000))
    env = {**os.environ, "DAGSTER_HOME": str(home), "QUANT_LAKE": str(lakes["celery"]), "QUANT_EXECUTOR": "celery",
           "QUANT_CELERY_BROKER": broker, "QUANT_CELERY_BACKEND": backend,
           "QUANT_INSTRUMENTS": str(tmp_path / "none.toml")}
    workers = Workers(env, tmp_path)
    try:
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        with dg.DagsterInstance.get() as instance:
            instance.add_dynamic_partitions("symbols", sorted({s for _, s in SLICES}))
        workers.start("w1")
        workers.start("w2")

        # Four slices through Dagster's CLI, two runs at a time, while a probe samples the
        # engine pool's claims (the claim is what lets a step start; event times carry the
        # sqlite instance's write latency, seconds under load, so they cannot show the limit).
        claims, done = [], threading.Event()

        def probe() -> None:
            with dg.DagsterInstance.get() as inst:
                while not done.is_set():
                    claims.append({(c.run_id, c.step_key) for c in inst.event_log_storage.get_concurrency_info("engines").claimed_slots})
                    time.sleep(0.05)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        launchers = {}
        try:
            for i in range(0, len(SLICES), 2):
                procs = [_materialize(env, SELECTION, f"{m}|{s}") for m, s in SLICES[i:i + 2]]
                for proc in procs:
                    out, _ = proc.communicate(timeout=600)
                    assert proc.returncode == 0, out[-4000:]
                    launchers[proc.pid] = out
        finally:
            done.set()
            prober.join(timeout=30)

        with dg.DagsterInstance.get() as instance:
            runs = instance.get_runs()
            assert len(runs) == len(SLICES) and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
            step_pids, hosts = set(), set()
            for run in runs:
                for rec in instance.get_records_for_run(run.run_id).records:
                    ev = rec.event_log_entry.dagster_event
                    if ev is None:
                        continue
                    if ev.event_type == dg.DagsterEventType.STEP_SUCCESS:
                        step_pids.add(ev.pid)
                    if worker := celery_worker_of(ev):
                        hosts.add(worker)
        assert step_pids and not step_pids & set(launchers), "a step ran in the launching process"
        assert hosts == {"w1", "w2"}, hosts
        # The engine steps of the celery runs claimed the pool's one slot, never two at once.
        claimed = set().union(*claims)
        assert {step for _, step in claimed} <= ENGINE_STEPS and len({run for run, _ in claimed}) >= 2, claimed
        assert max(len(c) for c in claims) == 1

        # The same landing files through the in-process profile give the same bytes.
        from quant_assets.definitions import ASSETS
        from resources import CriticResource, LakeResource

        local_home = tmp_path / "home_local"
        local_home.mkdir()
        monkeypatch.setenv("DAGSTER_HOME", str(local_home))
        monkeypatch.setenv("QUANT_LAKE", str(lakes["local"]))
        monkeypatch.setenv("QUANT_INSTRUMENTS", str(tmp_path / "none.toml"))
        with dg.instance_for_test(temp_dir=str(local_home)) as local:
            local.add_dynamic_partitions("symbols", sorted({s for _, s in SLICES}))
            for month, symbol in SLICES:
                assert dg.materialize(ASSETS, selection=SELECTION, partition_key=f"{month}|{symbol}", instance=local,
                                      resources={"lake": LakeResource(), "critic": CriticResource()}).success
        celery_files, local_files = _lake_files(lakes["celery"]), _lake_files(lakes["local"])
        assert len(celery_files) == 4 * (1 + 1 + 1 + 2 * 2 + 1) and celery_files == local_files

        # A worker process killed mid-step (SIGKILL as it publishes a backtest): the run fails
        # naming the step, the published slice is untouched, and a re-run completes.
        workers.stop_all()
        fills = lakes["celery"] / "backtests/strategy=ema_cross/symbol=BTCUSDT/month=2024-01/fills.parquet"
        before = _sha(fills)
        workers.start("doomed", QUANT_CRASH_AT="publish:backtest")
        proc = _materialize(env, ["backtest_ema_cross"], "2024-01|BTCUSDT")
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode != 0
        assert "[backtest_ema_cross]" in out and "Worker exited prematurely: signal 9 (SIGKILL)" in out, out[-4000:]
        assert _sha(fills) == before
        workers.stop_all()
        # The killed step may still hold its slot in the engine pool (whether the orchestrator
        # releases it on the way out depends on timing); without a daemon to free the slots of
        # ended runs, the re-run would then wait for it forever.
        freed = subprocess.run([sys.executable, "-m", "quant_assets.cli", "free-slots"], env=env, capture_output=True,
                               text=True, timeout=120)
        assert freed.returncode == 0 and "slot(s) freed" in freed.stdout, freed.stdout + freed.stderr
        with dg.DagsterInstance.get() as instance:
            assert instance.event_log_storage.get_concurrency_info("engines").claimed_slots == []
        workers.start("w3")
        proc = _materialize(env, ["backtest_ema_cross"], "2024-01|BTCUSDT")
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-4000:]
        assert _sha(fills) == before  # same code, same ticks: the same fills
    finally:
        workers.stop_all()


def test_a_step_lost_with_its_whole_worker_is_handed_to_another_worker(celery_urls, tmp_path, monkeypatch):
    """The worker's whole process group dies mid-step (a lost machine: nothing is left to report
    the task). The task was not acknowledged (``task_acks_late``), so after the redelivery
    timeout the broker hands it to another worker, and the run completes with the same bytes."""
    import dagster as dg

    from quant_assets.definitions import ASSETS
    from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
    from quant_assets.lake.store import Lake
    from resources import CriticResource, LakeResource

    broker, backend = celery_urls
    redeliver_s = 5
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n")
    lakes = {"celery": tmp_path / "lake_celery", "local": tmp_path / "lake_local"}
    env = {**os.environ, "DAGSTER_HOME": str(home), "QUANT_LAKE": str(lakes["celery"]), "QUANT_EXECUTOR": "celery",
           "QUANT_CELERY_BROKER": broker, "QUANT_CELERY_BACKEND": backend, "QUANT_CELERY_REDELIVER_S": str(redeliver_s),
           "QUANT_INSTRUMENTS": str(tmp_path / "none.toml")}
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("QUANT_INSTRUMENTS", str(tmp_path / "none.toml"))
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
        for root in lakes.values():
            write_landing(Lake.at(root), SyntheticSpec("BTCUSDT", "2024-01", seed=5, events=20_000))
            assert dg.materialize(ASSETS, selection=["ticks"], partition_key="2024-01|BTCUSDT", instance=instance,
                                  resources={"lake": LakeResource(root=str(root)), "critic": CriticResource()}).success
        assert dg.materialize(ASSETS, selection=["backtest_ema_cross"], partition_key="2024-01|BTCUSDT", instance=instance,
                              resources={"lake": LakeResource(root=str(lakes["local"])), "critic": CriticResource()}).success

    workers = Workers(env, tmp_path)
    try:
        workers.start("doomed", QUANT_CRASH_AT="group:publish:backtest")
        proc = _materialize(env, ["backtest_ema_cross"], "2024-01|BTCUSDT")
        workers.procs["doomed"].wait(timeout=300)  # the whole worker went down with the step
        # A worker that starts after the timeout restores the unacknowledged task at once.
        time.sleep(redeliver_s + 2)
        workers.start("heir")
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-4000:]
        with dg.DagsterInstance.get() as instance:
            run = instance.get_runs(limit=1)[0]  # the newest: the celery run
            assert run.status == dg.DagsterRunStatus.SUCCESS
            events = [rec.event_log_entry.dagster_event for rec in instance.get_records_for_run(run.run_id).records
                      if rec.event_log_entry.dagster_event is not None]
        hosts = {celery_worker_of(ev) for ev in events} - {None}
        assert hosts == {"doomed", "heir"}, hosts
        # The step started twice: in the doomed worker, whose events up to the kill reached the
        # instance, then in the heir, which finished it.
        assert [ev.step_key for ev in events if ev.event_type == dg.DagsterEventType.STEP_START] == ["backtest_ema_cross"] * 2
        rel = "backtests/strategy=ema_cross/symbol=BTCUSDT/month=2024-01/fills.parquet"
        assert _sha(lakes["celery"] / rel) == _sha(lakes["local"] / rel)
    finally:
        workers.stop_all()


def test_free_slots_releases_the_slot_of_an_ended_run_only(instance):
    import dagster as dg

    from quant_assets.slots import free_ended_run_slots

    storage = instance.event_log_storage
    storage.set_concurrency_slots("engines", 1)
    job = dg.GraphDefinition("g").to_job()
    ended, running = instance.create_run_for_job(job), instance.create_run_for_job(job)  # running: not ended
    instance.report_run_failed(ended)
    assert storage.claim_concurrency_slot("engines", ended.run_id, "backtest_ema_cross").is_claimed
    assert not storage.claim_concurrency_slot("engines", running.run_id, "backtest_ema_cross").is_claimed  # waits
    assert free_ended_run_slots(instance) == [(ended.run_id, "FAILURE", 1)]
    info = storage.get_concurrency_info("engines")
    assert ended.run_id not in {c.run_id for c in info.claimed_slots} | {p.run_id for p in info.pending_steps}
    # The waiting step of the run still going gets the slot on its next try; its claim is not touched.
    assert storage.claim_concurrency_slot("engines", running.run_id, "backtest_ema_cross").is_claimed
    assert free_ended_run_slots(instance) == []


def test_the_redelivery_timeout_is_read_and_checked(monkeypatch):
    import pytest

    from quant_assets.settings import celery_config

    monkeypatch.setenv("QUANT_CELERY_REDELIVER_S", "900")
    config = celery_config()
    assert config["task_acks_late"] is True and config["broker_transport_options"] == {"visibility_timeout": 900}
    monkeypatch.delenv("QUANT_CELERY_REDELIVER_S")
    assert celery_config()["broker_transport_options"] == {"visibility_timeout": 6 * 3600}
    for bad in ("soon", "0", "-5"):
        monkeypatch.setenv("QUANT_CELERY_REDELIVER_S", bad)
        with pytest.raises(ValueError, match=rf"QUANT_CELERY_REDELIVER_S='{bad}': expected a whole number of seconds > 0"):
            celery_config()
