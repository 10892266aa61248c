"""``critique_<strategy>`` and ``oos_validation_<strategy>`` through Dagster: the offline default,
the real Anthropic client on a mocked transport (cache, failures of one slice), out-of-sample
validation on M+1 only, and a scan of the instance and the lake for the API key."""

from __future__ import annotations

import json

import dagster as dg
import httpx2
import polars as pl
import pytest

from quant_assets.analytics import discoveries, trials
from quant_assets.critique.null_critic import null_suggestions
from quant_assets.definitions import ASSETS, SPECS
from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
from quant_assets.lake import duck
from quant_assets_tests.secret_scan import assert_no_secret
from quant_assets_tests.test_critique import GOOD, KEY, Script, _reply
from resources import CriticResource, LakeResource

MONTHS = ("2024-01", "2024-02")
UPSTREAM = ["ticks", "funding", "backtest_ema_cross", "metrics_ema_cross"]


def _run(instance, selection, pk, critic=None):
    resources = {"lake": LakeResource(), "critic": critic or CriticResource()}
    return dg.materialize(ASSETS, selection=selection, partition_key=pk, instance=instance, resources=resources,
                          raise_on_error=False)


@pytest.fixture
def two_months(lake, instance):
    for month in MONTHS:
        write_landing(lake, SyntheticSpec("BTCUSDT", month, seed=9, events=20_000))
    instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
    for month in MONTHS:
        assert _run(instance, UPSTREAM, f"{month}|BTCUSDT").success


def _mocked(script: Script, **config):
    class MockedTransportCritic(CriticResource):
        """The real resource and SDK client; only the HTTP transport is a mock."""

        def http_client(self):
            return httpx2.Client(transport=httpx2.MockTransport(script))

    return MockedTransportCritic(api_key=dg.EnvVar("ANTHROPIC_API_KEY"), max_retries=0, timeout_s=1.0, **config)


def test_offline_critique_then_out_of_sample_validation_on_the_next_month_only(lake, instance, two_months):
    for month in MONTHS:
        assert _run(instance, ["critique_ema_cross"], f"{month}|BTCUSDT").success
    record = json.loads((lake.critique_dir("ema_cross", "BTCUSDT", "2024-01") / "critique.json").read_text())
    assert record["rule_based"] and record["critic"] == "rules" and record["critique"]["verdict"]
    prompt = (lake.critique_dir("ema_cross", "BTCUSDT", "2024-01") / "prompt.json").read_text()
    assert "BTCUSDT" not in prompt  # the alias, by default
    assert "2024-0" not in prompt and json.loads(prompt)["data"]["history"]["month_index"] == 1  # no calendar
    later = json.loads((lake.critique_dir("ema_cross", "BTCUSDT", "2024-02") / "critique.json").read_text())
    assert later["month"] == "2024-02" and later["month_index"] == 2  # the calendar stays for people
    assert record["training_cutoff"]["applicable"] is False  # the rules remember nothing

    result = _run(instance, ["oos_validation_ema_cross"], "2024-01|BTCUSDT")
    assert result.success
    (mat,) = result.asset_materializations_for_node("oos_validation_ema_cross")
    assert mat.metadata["oos_month"].value == "2024-02"
    both = pl.read_parquet(lake.oos_dir("ema_cross", "BTCUSDT", "2024-01") / "validation.parquet")
    table, null = both.filter(pl.col("arm") == "critic"), both.filter(pl.col("arm") == "null")
    assert len(table) == len(null) == len(record["accepted_suggestions"]) >= 1  # the null critic: as many
    assert set(both["critic"]) == {"rules"} and set(both["model"]) == {"rules-v1"}  # null rows: their slice's critic
    assert set(table["oos_month"]) == {"2024-02"} and set(table["critique_month"]) == {"2024-01"}
    baseline = pl.read_parquet(lake.metrics_dir("ema_cross", "BTCUSDT", "2024-02") / "metrics.parquet")
    assert table["oos_baseline_sharpe"][0] == pytest.approx(baseline["sharpe"][0])  # the published M+1 slice
    for k, row in enumerate(table.iter_rows(named=True)):
        run = lake.oos_dir("ema_cross", "BTCUSDT", "2024-01") / "runs" / f"{k}-{row['name']}"
        oos_manifest = json.loads((run / "2024-02" / "manifest.json").read_text())
        assert oos_manifest["ticks_path"] == "ticks/symbol=BTCUSDT/month=2024-02/part-0.parquet"  # M+1, never M
        assert oos_manifest["params"][row["name"]] == json.loads(row["value"])  # the suggestion, one change
        assert {k: v for k, v in oos_manifest["params"].items() if k != row["name"]} == {
            k: v for k, v in record["params"].items() if k != row["name"]}
        assert row["tested"] and row["suggestion_index"] == k and row["local_bar"] == pytest.approx(0.05 / len(table))
        assert (row["p_value"] is not None and 0.0 <= row["p_value"] <= 1.0) or row["reason"].startswith("no p-value: ")
        assert row["clears_local_bar"] == (row["p_value"] is not None and row["p_value"] <= row["local_bar"])
    # the null arm: its seeded proposals (recorded in the manifest), run on M+1 only against the same baseline,
    # in the trials ledger as control runs the deflated Sharpe does not count
    oos_manifest = json.loads((lake.oos_dir("ema_cross", "BTCUSDT", "2024-01") / "manifest.json").read_text())
    fidelity = json.loads((lake.backtest_dir("ema_cross", "BTCUSDT", "2024-01") / "manifest.json").read_text())["fidelity"]
    drawn = null_suggestions(SPECS["ema_cross"], record["params"], "BTCUSDT", "2024-01", len(table), fidelity)
    assert oos_manifest["null_critic"]["suggestions"] == [s.as_dict() for s in drawn]
    assert [(r["name"], json.loads(r["value"])) for r in null.iter_rows(named=True)] == [(s.name, s.value) for s in drawn]
    ledger = trials.read(lake)
    tried = set(ledger.filter(pl.col("kind") == trials.PARAMETERS)["params_hash"])
    controls = set(ledger.filter(pl.col("kind") == trials.NULL_CRITIC)["params_hash"])
    for k, row in enumerate(null.iter_rows(named=True)):
        run = lake.oos_dir("ema_cross", "BTCUSDT", "2024-01") / "runs" / f"null-{k}-{row['name']}"
        params = json.loads((run / "2024-02" / "manifest.json").read_text())["params"]
        assert params == {**record["params"], row["name"]: json.loads(row["value"])} and not (run / "2024-01").exists()
        assert row["tested"] and row["is_candidate_sharpe"] is None and "in-sample run on 2024-01 skipped" in row["reason"]
        assert row["oos_baseline_sharpe"] == table["oos_baseline_sharpe"][0]  # the same baseline
        assert trials.params_hash(params) in controls and trials.params_hash(params) not in tried
    assert trials.params_hash({**record["params"], table["name"][0]: json.loads(table["value"][0])}) in tried
    assert trials.count(lake, SPECS["ema_cross"].impl) == len(tried)
    assert duck.connect(lake).sql("SELECT count(*) FROM suggestions WHERE fdr_status LIKE 'not judged yet%' AND improved IS NULL"
                                  ).fetchall() == [(len(table),)]
    # the FDR ledger judges them: the view's improved is its verdict, the slice's own file is unchanged
    before = (lake.oos_dir("ema_cross", "BTCUSDT", "2024-01") / "validation.parquet").read_bytes()
    ledger = _run(instance, ["discoveries"], None)
    assert ledger.success
    (mat,) = ledger.asset_materializations_for_node("discoveries")
    judged = pl.read_parquet(lake.discoveries_dir / "discoveries.parquet")
    assert mat.metadata["summary"].value == f"{int(judged['improved'].sum())} of {len(table)} tested changes survive FDR at q=0.1"
    view = duck.connect(lake).sql("SELECT suggestion_index, improved FROM suggestions ORDER BY suggestion_index").fetchall()
    assert view == list(zip(judged.sort("test_index")["test_index"].to_list(), judged.sort("test_index")["improved"].to_list()))
    assert (lake.oos_dir("ema_cross", "BTCUSDT", "2024-01") / "validation.parquet").read_bytes() == before
    # the judge's scorecard: the rule critic against the null critic on this slice
    card = _run(instance, ["critic_scorecard"], None)
    assert card.success
    (row,) = pl.read_parquet(lake.scorecard_dir / "scorecard.parquet").iter_rows(named=True)
    assert row["critic"] == "rules" and row["slices"] == 1
    assert (row["critic_tested"], row["null_tested"]) == (int(table["tested"].sum()), int(null["tested"].sum()))
    assert row["critic_improved"] == int((table["oos_delta_sharpe"] > 0).sum())
    assert row["null_improved"] == int((null["oos_delta_sharpe"] > 0).sum())

    # lineage: from the validation back to the landed files, every step current
    from quant_assets.lineage import trace

    root = trace(instance, "oos_validation_ema_cross", "2024-01|BTCUSDT")
    chain, node = [], root
    while node.parents:
        chain.append((node.asset, node.partition))
        data = ("ticks", "funding", "book")  # follow the strategy's chain down to its ticks
        node = next(p for p in node.parents if p.asset not in data) if any(p.asset not in data for p in node.parents) \
            else next(p for p in node.parents if p.asset == "ticks")
    chain.append((node.asset, node.partition))
    assert chain == [("oos_validation_ema_cross", "2024-01|BTCUSDT"), ("critique_ema_cross", "2024-01|BTCUSDT"),
                     ("metrics_ema_cross", "2024-01|BTCUSDT"), ("backtest_ema_cross", "2024-01|BTCUSDT"),
                     ("ticks", "2024-01|BTCUSDT")]
    assert node.sources and node.sources[0]["path"].startswith("landing/BTCUSDT/")
    assert {(p.asset, p.partition) for p in root.parents} == {
        ("critique_ema_cross", "2024-01|BTCUSDT"), ("metrics_ema_cross", "2024-02|BTCUSDT"), ("ticks", "2024-02|BTCUSDT")}
    assert root.current is True and all(p.data_version and p.code_version for p in root.parents)
    assert _run(instance, ["critique_ema_cross"], "2024-01|BTCUSDT").success  # a newer critique of January
    assert trace(instance, "oos_validation_ema_cross", "2024-01|BTCUSDT").current is False

    # the last month has no next month yet: the step succeeds and materialises nothing
    waiting = _run(instance, ["oos_validation_ema_cross"], "2024-02|BTCUSDT")
    assert waiting.success and not waiting.asset_materializations_for_node("oos_validation_ema_cross")
    assert not (lake.oos_dir("ema_cross", "BTCUSDT", "2024-02") / "validation.parquet").exists()


def test_anthropic_critique_is_cached_and_one_failing_slice_fails_alone(lake, instance, two_months, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    script = Script(_reply(GOOD))
    first = _run(instance, ["critique_ema_cross"], "2024-01|BTCUSDT", critic=_mocked(script))
    assert first.success and len(script.requests) == 1
    (mat,) = first.asset_materializations_for_node("critique_ema_cross")
    assert mat.metadata["critic"].value == "anthropic claude-sonnet-4-6"
    assert mat.metadata["input_tokens"].value == 1_500 and mat.metadata["cache_write_tokens"].value == 2_000
    assert mat.metadata["cost_usd"].value == pytest.approx((1_500 * 3 + 2_000 * 3.75 + 400 * 15) / 1e6)
    record = json.loads((lake.critique_dir("ema_cross", "BTCUSDT", "2024-01") / "critique.json").read_text())
    assert record["accepted_suggestions"] == [{"name": "slow_period", "value": 400, "hypothesis": "fewer crosses"}]
    # January 2024 is before the model's training-data cutoff: recorded beside the critique, flagged
    assert record["training_cutoff"]["data_before_training_cutoff"] is True and record["training_cutoff"]["warning"]
    assert mat.metadata["data_before_training_cutoff"].value is True and "Warning:" in mat.metadata["critique"].value

    again = _run(instance, ["critique_ema_cross"], "2024-01|BTCUSDT", critic=_mocked(script))
    assert again.success and len(script.requests) == 1  # unchanged slice: no second call
    (mat2,) = again.asset_materializations_for_node("critique_ema_cross")
    assert mat2.metadata["from_cache"].value is True and mat2.metadata["cost_usd"].value == 0.0
    assert mat2.tags["dagster/data_version"] == mat.tags["dagster/data_version"]

    timeout = Script(httpx2.ReadTimeout("read timed out"))
    failed = _run(instance, ["critique_ema_cross"], "2024-02|BTCUSDT", critic=_mocked(timeout))
    assert not failed.success
    (failure,) = [e for e in failed.all_events if e.is_step_failure]
    assert "critique_ema_cross 2024-02|BTCUSDT" in failure.step_failure_data.user_failure_data.description
    assert "timeout" in failure.step_failure_data.user_failure_data.description
    assert not (lake.critique_dir("ema_cross", "BTCUSDT", "2024-02") / "critique.json").exists()
    assert (lake.critique_dir("ema_cross", "BTCUSDT", "2024-01") / "critique.json").exists()  # the other slice stands


def test_a_two_round_critique_sends_the_round_one_results_back(lake, instance, two_months, monkeypatch):
    from quant_assets.analytics import trials

    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    final = {**GOOD, "suggestions": [{"name": "slow_period", "value": 300, "hypothesis": "between the two"}]}
    script = Script(_reply(GOOD), _reply(final))
    result = dg.materialize(ASSETS, selection=["critique_ema_cross"], partition_key="2024-01|BTCUSDT", instance=instance,
                            resources={"lake": LakeResource(), "critic": _mocked(script)}, raise_on_error=False,
                            run_config={"ops": {"critique_ema_cross": {"config": {"max_rounds": 2}}}})
    assert result.success and len(script.requests) == 2
    # round 2's request: the prompt, round 1's answer as its tool call, and its in-sample results as the tool's result
    messages = script.body(1)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"] == script.body(0)["messages"][0]["content"]
    call, back = messages[1]["content"][0], messages[2]["content"][0]
    assert call["type"] == "tool_use" and call["input"]["suggestions"] == GOOD["suggestions"]
    assert back["type"] == "tool_result" and back["tool_use_id"] == call["id"]
    (res,) = json.loads(back["content"])["in_sample_results"]
    record = json.loads((lake.critique_dir("ema_cross", "BTCUSDT", "2024-01") / "critique.json").read_text())
    assert (res["name"], res["value"], res["baseline_value"], res["ran"]) == ("slow_period", 400, record["params"]["slow_period"], True)
    assert res["delta_sharpe"] == pytest.approx(res["sharpe"] - res["baseline_sharpe"], abs=5e-3)  # 4 significant digits each
    # only the final round's suggestions go on to the out-of-sample test; every round is recorded
    assert record["accepted_suggestions"] == final["suggestions"] and [r["round"] for r in record["rounds"]] == [1, 2]
    assert record["rounds"][0]["in_sample"] == [res] and record["usage"]["input_tokens"] == 2 * 1_500
    # round 1's candidate ran on January itself and entered the trials ledger
    run = lake.critique_dir("ema_cross", "BTCUSDT", "2024-01") / "rounds" / "1-0-slow_period"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["params"]["slow_period"] == 400 and manifest["ticks_path"] == "ticks/symbol=BTCUSDT/month=2024-01/part-0.parquet"
    assert any(json.loads(p)["slow_period"] == 400 for p in trials.read(lake)["params"])

    # a later round is a paid call like the first: a run budget that covers round 1 only stops before round 2
    calls = len(script.requests)
    per_run = _mocked(script, budget_usd_per_run=0.3)  # one call's worst case is about 0.28 USD
    waiting = dg.materialize(ASSETS, selection=["critique_ema_cross"], partition_key="2024-02|BTCUSDT", instance=instance,
                             resources={"lake": LakeResource(), "critic": per_run}, raise_on_error=False,
                             run_config={"ops": {"critique_ema_cross": {"config": {"max_rounds": 2}}}})
    assert waiting.success and not waiting.asset_materializations_for_node("critique_ema_cross")
    assert len(script.requests) == calls + 1  # round 1 was asked; round 2 was not sent
    assert not (lake.critique_dir("ema_cross", "BTCUSDT", "2024-02") / "critique.json").exists()


def test_the_api_key_leaves_no_trace_in_the_instance_or_the_lake(lake, instance, two_months, monkeypatch, tmp_path):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    bad_then_good = Script(_reply(dict(GOOD, verdict="excellent")), _reply(GOOD))
    assert _run(instance, ["critique_ema_cross"], "2024-01|BTCUSDT", critic=_mocked(bad_then_good)).success
    echo = httpx2.Response(401, json={"type": "error", "error": {"type": "authentication_error", "message": f"invalid x-api-key {KEY}"}})
    assert not _run(instance, ["critique_ema_cross"], "2024-02|BTCUSDT", critic=_mocked(Script(echo))).success
    # what the API received did carry the key (so the scan below can fail)
    assert bad_then_good.requests[0].headers["authorization"] == f"Bearer {KEY}"
    needles = [KEY.encode(), KEY[-8:].encode()]
    records = instance.get_event_records(dg.EventRecordsFilter(event_type=dg.DagsterEventType.STEP_FAILURE))
    assert records
    for run in instance.get_runs():
        for entry in instance.all_logs(run.run_id):
            text = json.dumps(str(entry.dagster_event) + entry.user_message)
            assert not any(n.decode() in text for n in needles), text[:300]
        assert KEY not in json.dumps(run.run_config, default=str)
    assert_no_secret([lake.root, tmp_path / "dagster_home"], [KEY], min_files=21)  # the fetch keys' scan too


def test_a_suggestion_the_account_cannot_carry_is_recorded_as_untestable(lake, instance, two_months):
    # A notional inside the parameter's range but past what 100,000 of spot cash carries at 1x:
    # the validation records it (not improved, with the reason) instead of failing the slice.
    for month in MONTHS:
        assert _run(instance, ["critique_ema_cross"], f"{month}|BTCUSDT").success
    path = lake.critique_dir("ema_cross", "BTCUSDT", "2024-01") / "critique.json"
    record = json.loads(path.read_text())
    record["accepted_suggestions"] = [{"name": "notional", "value": 500_000.0, "hypothesis": "size up"}]
    path.write_text(json.dumps(record))
    assert _run(instance, ["oos_validation_ema_cross"], "2024-01|BTCUSDT").success
    both = pl.read_parquet(lake.oos_dir("ema_cross", "BTCUSDT", "2024-01") / "validation.parquet")
    (row,) = both.filter(pl.col("arm") == "critic").iter_rows(named=True)
    assert both.filter(pl.col("arm") == "null").height == 1  # one random change beside it
    assert row["tested"] is False and row["p_value"] is None and row["oos_candidate_sharpe"] is None
    assert row["clears_local_bar"] is False
    assert "cannot be run" in row["reason"] and "more than the account can carry" in row["reason"]
    # the FDR ledger lists it but it is not in the family, and it never counts as an improvement
    ledger = discoveries.run_discoveries(lake, 0.1)
    assert ledger.manifest["tested"] == 0 and ledger.manifest["not_tested"] == 1
    assert ledger.table["improved"].to_list() == [False]


def test_the_budget_stops_paid_calls_at_its_limit_and_a_cached_answer_needs_none(lake, instance, two_months, monkeypatch,
                                                                                    capsys):
    import datetime as dt

    from quant_assets.critique import budget

    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setattr(budget, "_utc_now", lambda: dt.datetime(2026, 3, 14, 12, tzinfo=dt.UTC))  # the ledger's clock
    script = Script(_reply(GOOD))
    cost = (1_500 * 3 + 2_000 * 3.75 + 400 * 15) / 1e6  # what each mocked answer costs

    def logs(result) -> str:
        return "\n".join(e.user_message for e in instance.all_logs(result.run_id))


    # Less than one call's worst case: the slice waits (not failed, not materialised), nothing is sent.
    tiny = _run(instance, ["critique_ema_cross"], "2024-01|BTCUSDT", critic=_mocked(script, budget_usd_per_run=0.001))
    assert tiny.success and not tiny.asset_materializations_for_node("critique_ema_cross") and script.requests == []
    (waited,) = tiny.asset_observations_for_node("critique_ema_cross")
    estimate = waited.metadata["estimate_usd"].value
    assert waited.metadata["waiting_for"].value == "critic budget" and estimate > cost
    assert "budget exhausted: spent 0.0000 of 0.0010 USD in this run" in logs(tiny)

    # A run allowed one call: the first slice is critiqued, the second waits, with its reason.
    per_run = _mocked(script, budget_usd_per_run=estimate + cost / 2)
    both = dg.materialize(ASSETS, selection=["critique_ema_cross"], instance=instance, raise_on_error=False,
                          resources={"lake": LakeResource(), "critic": per_run},
                          tags={"dagster/asset_partition_range_start": "2024-01|BTCUSDT",
                                "dagster/asset_partition_range_end": "2024-02|BTCUSDT"})
    assert both.success and len(script.requests) == 1
    assert [m.partition for m in both.asset_materializations_for_node("critique_ema_cross")] == ["2024-01|BTCUSDT"]
    assert f"critique_ema_cross 2024-02|BTCUSDT: budget exhausted: spent {cost:.4f} of {estimate + cost / 2:.4f} USD in this run" in logs(both)
    assert "waits until the next run" in logs(both)
    assert not (lake.critique_dir("ema_cross", "BTCUSDT", "2024-02") / "critique.json").exists()

    # A new run has its own run budget, but the day's is shared through the ledger: that run's call counts.
    per_day = _mocked(script, budget_usd_per_day=estimate + cost / 2)
    day = _run(instance, ["critique_ema_cross"], "2024-02|BTCUSDT", critic=per_day)
    assert day.success and not day.asset_materializations_for_node("critique_ema_cross") and len(script.requests) == 1
    (waited,) = day.asset_observations_for_node("critique_ema_cross")  # February's own worst case
    assert (f"budget exhausted: spent {cost:.4f} of {estimate + cost / 2:.4f} USD today (UTC 2026-03-14); the next critique "
            f"may cost up to {waited.metadata['estimate_usd'].value:.4f} USD; the critique waits until 2026-03-15 00:00 UTC"
            ) in logs(day)
    # status: the day's spend, and the slice waiting (sync leaves it) while the limit it waited under holds
    from quant_assets import sync
    from quant_assets.cli import _print_critic_budget

    def critique_state(month: str) -> str:
        states = sync.plan(lake, instance, [(m, "BTCUSDT") for m in MONTHS])
        return next(s.state for s in states if s.asset.to_user_string() == "critique_ema_cross" and s.month == month)

    monkeypatch.setenv("QUANT_CRITIC_BUDGET_USD_DAY", str(estimate + cost / 2))
    assert critique_state("2024-02") == "waiting"
    _print_critic_budget(lake)
    out = capsys.readouterr().out
    assert f"critic spend today (UTC 2026-03-14): {cost:.4f} USD in 1 paid call(s)" in out
    assert "budget exhausted: 1 critique(s) wait until 2026-03-15 00:00 UTC" in out and "critique_ema_cross 2024-02|BTCUSDT" in out
    monkeypatch.setenv("QUANT_CRITIC_BUDGET_USD_DAY", "5")  # a raised limit releases it
    assert critique_state("2024-02") == "missing"

    # An unchanged slice's answer comes from the cache: no budget needed, no request.
    cached = _run(instance, ["critique_ema_cross"], "2024-01|BTCUSDT", critic=per_day)
    assert cached.success and len(script.requests) == 1
    (mat,) = cached.asset_materializations_for_node("critique_ema_cross")
    assert mat.metadata["from_cache"].value is True
