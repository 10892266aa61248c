"""``sync.plan`` from bulk facts gives what the per-slice plan gave (kept here as
:func:`reference_plan`: Dagster's ``CachingStaleStatusResolver`` and one query per asset and
slice), on a small instance holding every kind of state, cold and with its cache warm.

The instance is populated with Dagster's own runless events (as in ``test_automation``): some
carry the provenance a run records (code version, input data versions and event pointers), as
runs do, others none, as runless reports; both staleness paths are compared.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from quant_assets import latest, staleness, sync
from quant_assets.assets.backtests import backtest_assets
from quant_assets.assets.book import book
from quant_assets.assets.critiques import critique_asset, oos_asset
from quant_assets.assets.funding import funding
from quant_assets.assets.sensitivity import sensitivity_asset
from quant_assets.assets.metrics import metrics_asset
from quant_assets.assets.reports import report_asset
from quant_assets.assets.research import research_assets
from quant_assets.assets.ticks import ticks
from quant_assets.assets.venues import venue_profile_asset
from quant_assets.book.build import NO_SOURCES as NO_BOOK_SOURCES, expected_fingerprint as expected_book_fingerprint
from quant_assets.funding.build import NO_SOURCES, expected_fingerprint as expected_funding_fingerprint
from quant_assets.ingest.build import expected_fingerprint
from quant_assets.partitions import partition_key
from quant_assets.strategies import registry
from quant_assets_tests import builders as b

try:  # the main developer's bulk writer (quant_assets_tests/bulk.py): one SQLite transaction
    from quant_assets_tests.bulk import bulk_writes
except ImportError:  # not on this branch yet: the same events, written one by one (~10 s more)
    import contextlib

    def bulk_writes(instance):
        return contextlib.nullcontext()
from resources import CriticResource, DuckDBResource, LakeResource

QUOTED = ("BTCUSDT", "ETHUSDT")  # quotes + trades
TRADES_ONLY = "SOLUSDT"
MONTHS = ("2024-01", "2024-02", "2024-03")


# ---- the per-slice plan, as it was before the bulk plan ------------------------------------
def _last_materialization(instance, key, pk):
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[pk]), limit=1).records
    return records[0].asset_materialization if records else None


def reference_plan(lake, instance, slices, definitions=None) -> list[sync.SliceState]:
    """The plan of ``quant_assets.sync`` before issue 18, unchanged but for its helpers' new
    signatures: per asset and slice one ``fetch_materializations``, Dagster's resolver per
    partition, a landing survey per fingerprinted slice."""
    from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._time import get_current_datetime

    from quant_assets.engines.fidelity import not_applicable

    fingerprint_of = {dg.AssetKey("ticks"): expected_fingerprint, dg.AssetKey("funding"): expected_funding_fingerprint,
                      dg.AssetKey("book"): expected_book_fingerprint}
    graph = (definitions or sync.defs).resolve_asset_graph()
    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                          instance=instance, asset_graph=graph)
    resolver = CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)
    keys = [k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable]
    slice_keys = [k for k in keys if graph.get(k).partitions_def == sync.month_symbol_partitions]
    rollup_keys = [k for k in keys if graph.get(k).partitions_def == sync.symbol_partitions]
    targets = [(month, symbol, str(partition_key(month, symbol)), slice_keys) for month, symbol in slices]
    targets += [(sync.ALL_MONTHS, symbol, symbol, rollup_keys) for symbol in sorted({s for _, s in slices})]
    engines = sync._strategy_engines()
    ticks_key = dg.AssetKey("ticks")
    mats, fidelity = {}, {}
    for month, symbol in slices:
        pk = str(partition_key(month, symbol))
        mats[(ticks_key, pk)] = mat = _last_materialization(instance, ticks_key, pk)
        fidelity[(month, symbol)] = sync._fidelity({k: v.value for k, v in mat.metadata.items()} if mat else None)

    def n_a(key, month, symbol):
        engine = engines.get(key.path[-1])
        if engine is None:
            return None
        months = [fidelity.get((month, symbol))] if month != sync.ALL_MONTHS else [f for (m, s), f in fidelity.items() if s == symbol]
        reasons = [not_applicable(engine, f) if f else None for f in months]
        return reasons[0] if reasons and all(reasons) else None

    out = []
    for month, symbol, pk, target_keys in targets:
        for key in target_keys:
            mat = mats[(key, pk)] if (key, pk) in mats else _last_materialization(instance, key, pk)
            rows = None
            reason = n_a(key, month, symbol)
            if mat is None and reason is not None:
                out.append(sync.SliceState(key, month, symbol, "n/a", None, reason))
                continue
            if mat is None:
                state = "waiting" if sync._waits(lake, key, symbol, month) else "missing"
            else:
                row_meta = mat.metadata.get("dagster/row_count")
                rows = int(row_meta.value) if row_meta is not None else None
                state = "materialized"
                fingerprint_fn = fingerprint_of.get(key)
                recorded = mat.metadata.get("source_fingerprint")
                if fingerprint_fn and month != sync.ALL_MONTHS and (recorded is None or recorded.value != fingerprint_fn(lake, symbol, month)):
                    state = "sources changed"
                elif resolver.get_status(key, pk) == StaleStatus.STALE:
                    state = "stale"
            out.append(sync.SliceState(key, month, symbol, state, rows))
    return out


# ---- an instance with every kind of state --------------------------------------------------
def _defs(specs=None) -> dg.Definitions:
    """The project's assets for ``specs``, as ``definitions.py`` builds them, but with the
    roll-ups (and research) of ema_cross and the market maker only: the per-slice plan asks
    Dagster ~170 queries per roll-up (every month of two dependencies), which would make this
    test minutes long, and every roll-up follows the same rules."""
    specs = specs or registry.load()
    some = {name: specs[name] for name in ("ema_cross", "market_maker")}
    assets = [ticks, funding, book, venue_profile_asset(), *backtest_assets(specs), *(sensitivity_asset(s) for s in specs.values()),
              *(metrics_asset(s) for s in specs.values()),
              *(report_asset(s) for s in some.values()), *(critique_asset(s) for s in specs.values()),
              *(oos_asset(s) for s in specs.values()), *research_assets({"ema_cross": specs["ema_cross"]})]
    return dg.Definitions(assets=assets, resources={"lake": LakeResource(), "duckdb": DuckDBResource(), "critic": CriticResource()})


def _month_ms(month: str) -> int:
    y, m = map(int, month.split("-"))
    return int(datetime(y, m, 1, tzinfo=UTC).timestamp() * 1000)


class Reporter:
    """Runless materializations in dependency order; with ``provenance`` each one records
    the tags a run would: the asset's code version, and for each dependency the asset-wide
    latest storage id (the input event pointer) and a data version."""

    def __init__(self, instance, definitions):
        self.instance, self.graph = instance, definitions.resolve_asset_graph()
        self.last: dict[dg.AssetKey, int] = {}  # asset -> storage id of its latest materialization

    def report(self, name: str, pk: str, version: str = "v1", provenance: bool = True, metadata=None) -> None:
        key = dg.AssetKey(name)
        tags = {"dagster/data_version": f"{name}-{pk}-{version}"}
        if provenance:
            node = self.graph.get(key)
            tags["dagster/code_version"] = node.code_version
            for parent in node.parent_keys:
                pointer = self.last.get(parent)
                tags[f"dagster/input_data_version/{parent.to_user_string()}"] = f"in-{version}"
                tags[f"dagster/input_event_pointer/{parent.to_user_string()}"] = str(pointer) if pointer else "NULL"
        self.instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=pk, tags=tags, metadata=metadata or {}))
        if self.graph.get(key).child_keys:
            self.last[key] = self.instance.fetch_materializations(key, limit=1).records[0].storage_id

    def ticks(self, lake, month: str, symbol: str, version: str = "v1", fingerprint: str | None = None) -> None:
        pk = f"{month}|{symbol}"
        fidelity = "trades-only" if symbol == TRADES_ONLY else "quotes+trades"
        self.report("ticks", pk, version, metadata={
            "dagster/row_count": 4, "fidelity": fidelity,
            "source_fingerprint": fingerprint or expected_fingerprint(lake, symbol, month)})
        self.report("funding", pk, "not-applicable", metadata={"source_fingerprint": NO_SOURCES})
        self.report("book", pk, "none", metadata={"source_fingerprint": NO_BOOK_SOURCES})  # L1 only

    def chain(self, month: str, symbol: str, provenance: bool = True, stages=("backtest", "sensitivity", "metrics", "critique")) -> None:
        pk = f"{month}|{symbol}"
        strategies = ("ema_cross", "mean_reversion") if symbol == TRADES_ONLY else ("ema_cross", "mean_reversion", "market_maker")
        for stage in stages:
            for s in strategies:
                self.report(f"{stage}_{s}", pk, provenance=provenance)
        self.report("bars_1m", pk, provenance=provenance, metadata={"dagster/row_count": 3})
        self.report("sweep_ema_cross", pk, provenance=provenance)


@pytest.fixture
def populated(lake, instance):
    """3 months of two quoted symbols and a trades-only one, with (per slice):
    everything built, with provenance, for January; February of BTCUSDT without provenance
    (a runless report); February of ETHUSDT built but its ticks re-reported since with a new
    data version, and SOLUSDT's with the same one; March with ticks only (the chain missing),
    BTCUSDT's March with a landing file changed since (sources changed); out-of-sample
    validations of January, roll-ups of two symbols."""
    symbols = [*QUOTED, TRADES_ONLY]
    instance.add_dynamic_partitions("symbols", symbols)
    for symbol in symbols:
        for month in MONTHS:
            t0 = _month_ms(month)
            if symbol == TRADES_ONLY:
                b.write(lake.landing_dir(symbol) / f"{symbol}-trades-{month}.csv", b.binance_trades_csv(5, t0_ms=t0))
            else:
                b.write(lake.landing_dir(symbol) / f"{symbol}-bookTicker-{month}.csv", b.binance_bookticker_csv(4, t0_ms=t0))
    rep = Reporter(instance, _defs())
    with bulk_writes(instance):  # ~100 events: a second in one transaction, eight one by one
        _populate(lake, rep, symbols)
    slices = [(m, s) for s in symbols for m in MONTHS]
    return rep, slices


def _populate(lake, rep: Reporter, symbols: list[str]) -> None:
    for symbol in symbols:  # the symbols' venue settings come first (sync builds them before the slices)
        rep.report("venue_profile", symbol)
    for symbol in symbols:
        for month in MONTHS:
            rep.ticks(lake, month, symbol)
        rep.chain("2024-01", symbol)
        rep.chain("2024-02", symbol, provenance=symbol != "BTCUSDT")
    for symbol in symbols:
        for s in ("ema_cross", "mean_reversion", "market_maker"):
            if symbol != TRADES_ONLY or s != "market_maker":
                rep.report(f"oos_validation_{s}", f"2024-01|{symbol}")
    for symbol in QUOTED:  # (the market maker's roll-ups: missing, n/a for the trades-only symbol)
        rep.report("report_ema_cross", symbol)
    rep.report("factors_ema_cross", "BTCUSDT", provenance=False)
    rep.ticks(lake, "2024-02", "ETHUSDT", version="v2")  # a re-reported slice, new data version
    rep.ticks(lake, "2024-02", TRADES_ONLY, version="v1")  # re-reported, same data version
    b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-bookTicker-2024-03.csv", b.binance_bookticker_csv(6, t0_ms=_month_ms("2024-03")))


def _count_queries(monkeypatch, instance) -> list[str]:
    """Names of the instance's record queries made from now on (``ids``: the latest storage
    id of every partition of an asset)."""
    calls: list[str] = []
    for name in ("fetch_materializations", "get_latest_data_version_record"):
        real = getattr(instance, name)
        monkeypatch.setattr(instance, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    storage = instance.event_log_storage
    real_ids = storage.get_latest_storage_id_by_partition
    monkeypatch.setattr(storage, "get_latest_storage_id_by_partition", lambda *a, **k: calls.append("ids") or real_ids(*a, **k))
    return calls


def _assert_same(lake, instance, slices, definitions) -> list[sync.SliceState]:
    got = sync.plan(lake, instance, slices, definitions=definitions)
    expected = reference_plan(lake, instance, slices, definitions=definitions)
    assert [s for s in got if s not in expected] == [] and got == expected
    return got


def test_the_bulk_plan_equals_the_per_slice_plan_in_every_state(lake, instance, populated, tmp_path, monkeypatch):
    rep, slices = populated
    definitions = _defs()
    states = _assert_same(lake, instance, slices, definitions)  # cold: no cache yet
    by = {(s.asset.to_user_string(), s.month, s.symbol): s for s in states}
    kinds = {s.state for s in states}
    assert kinds == {"materialized", "missing", "stale", "sources changed", "waiting", "n/a"}, kinds
    assert by[("ticks", "2024-03", "BTCUSDT")].state == "sources changed"
    assert by[("metrics_ema_cross", "2024-02", "ETHUSDT")].state == "stale"  # new upstream data version
    assert by[("backtest_ema_cross", "2024-01", "ETHUSDT")].state == "materialized"
    assert by[("backtest_market_maker", "2024-01", TRADES_ONLY)].reason.startswith("not applicable on trades-only")
    assert by[("report_market_maker", sync.ALL_MONTHS, TRADES_ONLY)].state == "n/a"
    assert by[("ticks", "2024-01", "BTCUSDT")].rows == 4

    # warm: the same plan from the cache, with a few queries per asset whatever the slices
    assert (latest.cache_dir(instance) / "ticks.pickle").exists()
    with monkeypatch.context() as patched:
        calls = _count_queries(patched, instance)
        assert sync.plan(lake, instance, slices, definitions=definitions) == states
    assert calls.count("ids") == 0  # every asset's record says nothing changed: not even that query
    # nothing deserialised again but the data versions the cached chain cannot give (ETHUSDT's
    # and SOLUSDT's February ticks, and the book reported with them, were re-reported before the
    # cache existed): one query per dependency partition and pointer (here 3 per partition at
    # most: January's validations and February's assets were reported under different ones),
    # whatever the assets reading it
    asked = calls.count("get_latest_data_version_record")
    assert 1 <= asked <= 12 and calls.count("fetch_materializations") == asked, calls
    # then events the cache reads incrementally: a new data version after the first plan (its
    # superseded event enters the cached history), a strategy parameter change (code version),
    # a new partition, a wiped asset
    rep.ticks(lake, "2024-01", "BTCUSDT", version="v2")
    rep.ticks(lake, "2024-01", "BTCUSDT", version="v3")  # twice: read past the cursor in two pages
    # January of SOLUSDT changes, and its bars: February's backtests, sensitivities and sweep read
    # them (a window of M-1 and M, warm-up) and were built with provenance
    rep.ticks(lake, "2024-01", TRADES_ONLY, version="v2")
    rep.report("bars_1m", f"2024-01|{TRADES_ONLY}", version="v2", metadata={"dagster/row_count": 3})
    monkeypatch.setattr(latest, "CHUNK", 1)
    rep.report("backtest_ema_cross", "2024-03|ETHUSDT")
    instance.wipe_assets([dg.AssetKey("factors_ema_cross")])  # (SQLite cannot wipe single partitions)
    cfg = tmp_path / "strategies.toml"
    cfg.write_text("[mean_reversion]\nentry_z = 3.0\n")
    tuned = _defs(registry.load(cfg))
    states = _assert_same(lake, instance, slices, tuned)
    by = {(s.asset.to_user_string(), s.month, s.symbol): s for s in states}
    assert by[("backtest_mean_reversion", "2024-01", "ETHUSDT")].state == "stale"  # code version
    assert by[("backtest_ema_cross", "2024-01", "BTCUSDT")].state == "stale"  # new ticks data version
    assert by[("backtest_ema_cross", "2024-03", "ETHUSDT")].state == "materialized"
    for name in ("backtest_ema_cross", "sensitivity_mean_reversion", "sweep_ema_cross"):
        assert by[(name, "2024-02", TRADES_ONLY)].state == "stale", name  # its previous month changed
    assert by[("bars_1m", "2024-02", TRADES_ONLY)].state == "materialized"  # reads its own month only
    assert by[("factors_ema_cross", sync.ALL_MONTHS, "BTCUSDT")].state == "missing"  # wiped
    # a slice planned alone, and the definitions of test_backtest_assets (funding external)
    _assert_same(lake, instance, [("2024-02", "ETHUSDT")], definitions)
    partial = dg.Definitions(assets=[ticks, *backtest_assets(registry.load())], resources={"lake": LakeResource()})
    _assert_same(lake, instance, slices, partial)


def test_the_bulk_partition_mappings_are_dagsters(instance):
    graph = sync.defs.resolve_asset_graph()
    instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
    months = sync.month_partitions.get_partition_keys()
    from dagster._core.definitions.partitions.context import partition_loading_context

    with partition_loading_context(dynamic_partitions_store=instance):
        for child in graph.get_all_asset_keys():
            if not graph.get(child).is_partitioned:
                continue  # the unpartitioned ledger (discoveries) is not planned: sync runs it at the end
            if child in sync.universe_assets(graph):
                continue  # month x universe: planned apart, by Dagster's staleness (sync.universe_states)
            for parent in graph.get(child).parent_keys:
                fn = staleness.mapper(graph, child, parent)
                assert fn is not None, (child, parent)
                pks = ["BTCUSDT"] if graph.get(child).partitions_def == sync.symbol_partitions else [
                    f"{m}|BTCUSDT" for m in (months[0], months[len(months) // 2], months[-1])]
                for pk in pks:
                    expected = graph.get_parent_partition_keys_for_child(pk, parent, child).partitions_subset.get_partition_keys()
                    assert sorted(fn(pk)) == sorted(expected), (child, parent, pk)
