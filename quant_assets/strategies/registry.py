"""The strategy registry: every backtested strategy, its engine and its parameters.

This is the one place to add or tune strategies:

* **tune** a parameter in ``strategies.toml`` at the repository root (or the file named by
  ``$QUANT_STRATEGIES``); only that strategy's slices become stale::

      [ema_cross]
      fast_period = 30

* **add a variant** of an existing strategy under a new name (a new ``backtest_<name>`` asset)::

      [ema_cross_slow]
      base = "ema_cross"
      slow_period = 2000

* **add a new strategy**: write its implementation (a NautilusTrader ``Strategy`` or an
  hftbacktest numba loop, see the existing ones) and append a :class:`StrategySpec` to
  :data:`BUILTIN` below.

Every value is validated when the registry loads, so a bad parameter fails before any engine
starts, with the strategy, parameter and expected range in the message.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from quant_assets.settings import REPO_ROOT
from quant_assets.strategies.spec import Axis, Param, ParamError, StrategySpec, Warmup

CONFIG_ENV = "QUANT_STRATEGIES"

#: Sampling interval of the mark-to-market equity curve, shared by every strategy.
EQUITY_INTERVAL = Param(
    "equity_interval_s", float, 60.0, "interval of the mark-to-market equity samples", "s", 0.1, 86_400.0,
    tunable=False,
)

#: An EMA of length n seeded with its first input still gives that input a weight of
#: (1 - 2/(n+1))^k after k inputs: e^-2 (13.5%) when it reports itself initialised (k = n).
#: Strategies on EMAs warm up for this many lengths of their slowest EMA (weight e^-6, 0.25%).
EMA_WARMUP_LENGTHS = 3


def _ema_cross_warmup(v: dict) -> Warmup:
    count = EMA_WARMUP_LENGTHS * int(v["slow_period"])
    if v["bar_s"]:
        return Warmup(count, "bars", int(v["bar_s"]) * 1_000_000_000)
    return Warmup(count, "quotes")


EMA_CROSS = StrategySpec(
    name="ema_cross",
    engine="nautilus",
    impl="quant_assets.strategies.ema_cross:EmaCross",
    description=(
        "Trend following on the mid price: long when the fast EMA of the mid is above the slow EMA, "
        "short when below; switches with market orders (taker fees) on every cross, one position "
        "of a fixed quote-currency notional. The EMAs run on the closes of time bars of the mid built by "
        "NautilusTrader from the quotes (bar_s seconds, the research layer's bars: the same signal as the "
        "vectorised sweep), and a decision at a bar's close trades at the first quote the order meets; "
        "with bar_s = 0 they run on every quote update. It trades only once the slow EMA has seen "
        f"{EMA_WARMUP_LENGTHS} times its length (warmed up from the previous month's end where there is one). "
        "On a slice with order-book depth its market orders walk the book's levels (NautilusTrader L2/L3 "
        "matching) instead of filling at the quote's touch; its signal is the same."
    ),
    version="2",
    params=(
        Param("fast_period", int, 30, "fast EMA length, in bars of bar_s seconds (quote updates when bar_s = 0)",
              "bars", 2, 100_000, fewer_trades=1),
        Param("slow_period", int, 120, "slow EMA length, in bars of bar_s seconds (quote updates when bar_s = 0)",
              "bars", 3, 1_000_000, fewer_trades=1),
        Param("notional", float, 10_000.0, "position size at entry", "quote currency", 1.0, 1e9),
        Param("bar_s", int, 60, "interval of the time bars the EMAs run on (0: every quote update)", "s", 0, 86_400,
              tunable=False),
        EQUITY_INTERVAL,
    ),
    constraints=((lambda v: v["fast_period"] < v["slow_period"], "fast_period must be below slow_period"),),
    warmup_rule=_ema_cross_warmup,
    # Its market orders walk the book where a slice has one (quant_assets.engines.nautilus_book);
    # on L1 slices nothing changes.
    depth="optional",
)

#: Sweep grids of the strategies with a vectorised form (``sweep_<strategy>`` assets). The
#: vectorised ``ema_cross`` reads its EMA lengths in bars of ``bars_1m``, as the event-driven one
#: does with ``bar_s = 60``: 10 × 10 = 100 combinations per slice; ``bench/sweep_bench.py``
#: sweeps a 1,000-point grid.
SWEEP_GRIDS: dict[str, tuple[Axis, ...]] = {
    "ema_cross": (Axis("fast_period", 10, 100, 10), Axis("slow_period", 150, 2400, 250)),
}

#: The signal each strategy exposes to factor analysis (``factors_<strategy>`` assets, one per
#: symbol across months; see :mod:`quant_assets.research.factors`), computed on bars with the
#: strategy's current parameters.
FACTOR_SIGNALS: dict[str, str] = {"ema_cross": "ema_spread", "mean_reversion": "zscore_reversion"}

MEAN_REVERSION = StrategySpec(
    name="mean_reversion",
    engine="nautilus",
    impl="quant_assets.strategies.mean_reversion:MeanReversion",
    description=(
        "Mean reversion on the mid price: when the z-score of the mid over a rolling window passes "
        "-entry_z (buy) or +entry_z (sell), rest a limit order at the touch; once filled, exit at a "
        "stop loss or a take profit measured from the entry price, or at market after max_hold_s (and "
        "at once should the venue reject the stop or the take-profit); unfilled entries are cancelled "
        "after entry_timeout_s."
    ),
    params=(
        Param("window", int, 500, "rolling window of the mean and standard deviation, in quote updates", "ticks", 10, 1_000_000),
        Param("entry_z", float, 2.5, "z-score that triggers an entry", "standard deviations", 0.5, 10.0, fewer_trades=1),
        Param("stop_bps", float, 25.0, "stop loss distance from the entry price", "bps", 1.0, 2_000.0),
        Param("take_bps", float, 15.0, "take profit distance from the entry price", "bps", 1.0, 2_000.0, fewer_trades=1),
        Param("entry_timeout_s", float, 30.0, "time an unfilled entry order rests before it is cancelled", "s", 0.1, 86_400.0),
        Param("max_hold_s", float, 14_400.0, "a position still open after this long is closed at market", "s", 1.0, 2_678_400.0),
        Param("notional", float, 10_000.0, "position size at entry", "quote currency", 1.0, 1e9),
        EQUITY_INTERVAL,
    ),
    version="2",
    # The rolling mean and deviation are exact once the window is full.
    warmup_rule=lambda v: Warmup(int(v["window"]), "quotes"),
)

MARKET_MAKER = StrategySpec(
    name="market_maker",
    engine="hftbacktest",
    impl="quant_assets.strategies.market_maker:market_maker_loop",
    description=(
        "Grid-free market making on hftbacktest: every decision interval, quote one bid and one ask "
        "around the mid at half_spread_ticks, both shifted against the inventory by skew_ticks per "
        "order of inventory (a linear GLFT-style skew); no new orders on the side that would exceed "
        "max_position_orders. Partial fills, maker/taker fees from the instrument; order latency "
        "and the queue position model are the venue profile's (quant_assets.venues), not parameters. "
        "On a slice with an order book its orders queue behind the book's real depth, and "
        "imbalance_levels > 0 also skews both quotes by the book's imbalance (B - A) / (B + A) over "
        "that many levels per side; on L1 data the result is L1-approximate (conservative queue "
        "model, queue positions not observed) and imbalance_levels > 0 is not applicable."
    ),
    params=(
        Param("half_spread_ticks", float, 2.0, "distance of each quote from the mid", "ticks", 0.0, 10_000.0, fewer_trades=1),
        Param("skew_ticks", float, 1.0, "quote shift per order_notional of inventory, against the inventory", "ticks", 0.0, 1_000.0),
        Param("order_notional", float, 1_000.0, "size of each quote", "quote currency", 1.0, 1e9),
        Param("max_position_orders", int, 5, "inventory limit, in multiples of the order size", "orders", 1, 10_000),
        Param("interval_ms", float, 100.0, "decision interval: quotes are revised at most this often", "ms", 1.0, 60_000.0, fewer_trades=1),
        EQUITY_INTERVAL,
        # Only meaningful on order-book depth: > 0 makes the run not applicable without a book.
        Param("imbalance_levels", int, 0, "price levels per side in the order-book imbalance skew (0: off; > 0 needs "
              "order-book depth: not applicable on a slice without a book)", "levels", 0, 100),
        Param("imbalance_skew_ticks", float, 1.0, "quote shift at full order-book imbalance (all size on one side), "
              "towards the heavier side (used when imbalance_levels > 0)", "ticks", 0.0, 1_000.0),
    ),
    # It reads the slice's book where there is one (queue positions, the imbalance), and runs without.
    depth="optional",
)

#: The market maker's parameters that need order-book depth when set (> 0).
DEPTH_PARAMS = ("imbalance_levels",)

BUILTIN: tuple[StrategySpec, ...] = (EMA_CROSS, MEAN_REVERSION, MARKET_MAKER)


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or REPO_ROOT / "strategies.toml")


def _load_config(path: Path) -> Mapping[str, Mapping[str, object]]:
    if not path.exists():
        return {}
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ParamError(f"{path}: not valid TOML: {exc}") from exc


def universe_builtin() -> tuple[StrategySpec, ...]:
    """The built-in strategies that trade a universe (several instruments in one account, run
    by :mod:`quant_assets.engines.multi`): the basis trade. Apart from :data:`BUILTIN` because
    they have no single-symbol slices (no ``backtest_<name>`` asset, no sweep, no critique per
    symbol); ``universes.toml`` says which universes they run on. Imported here, not at module
    level: :mod:`quant_assets.strategies.basis` reads this module's shared parameters."""
    from quant_assets.strategies.basis import BASIS

    return (BASIS,)


def _split(config: Mapping[str, Mapping[str, object]]) -> tuple[dict, dict]:
    """(single-instrument tables, universe-strategy tables) of a strategies.toml."""
    names = {s.name for s in universe_builtin()}
    uni = {k: v for k, v in config.items() if k in names or (isinstance(v, Mapping) and v.get("base") in names)}
    return {k: v for k, v in config.items() if k not in uni}, uni


def load(path: Path | None = None, promoted: bool = True) -> dict[str, StrategySpec]:
    """Built-in single-instrument specs with the values and variants of the config file applied,
    then (``promoted``) the variants the research loop promoted into the lake
    (:mod:`quant_assets.strategies.promoted`), by name. Universe strategies: :func:`load_universe`."""
    path = path or config_path()
    specs = {s.name: s for s in BUILTIN}
    _apply(specs, _split(_load_config(path))[0], path)
    if promoted:
        _apply_promoted(specs)
    return specs


def load_universe(path: Path | None = None) -> dict[str, StrategySpec]:
    """The universe strategies (:func:`universe_builtin`) with the values and variants of the
    same config file applied (``[basis]`` tunes it, ``[basis_wide] base = "basis"`` adds one)."""
    path = path or config_path()
    builtin = universe_builtin()
    specs = {s.name: s for s in builtin}
    _apply(specs, _split(_load_config(path))[1], path, builtin=builtin)
    return specs


def _apply(specs: dict[str, StrategySpec], config: Mapping[str, Mapping[str, object]], path: Path,
           described: Mapping[str, str] | None = None, builtin: tuple[StrategySpec, ...] = BUILTIN) -> None:
    for name, table in config.items():
        if not isinstance(table, Mapping):
            raise ParamError(f"{path}: [{name}] must be a table of parameter values")
        values = dict(table)
        base = values.pop("base", None)
        if base is None and name not in specs:
            raise ParamError(f"{path}: [{name}] is not a registered strategy; add base = \"<strategy>\" to make a variant of one ({', '.join(specs)})")
        if base is not None:
            if base not in {s.name for s in builtin}:
                raise ParamError(f"{path}: [{name}] base = {base!r} is not a built-in strategy ({', '.join(s.name for s in builtin)})")
            if not name.isidentifier() or not name.islower():
                raise ParamError(f"{path}: [{name}]: a variant name must be a lower-case identifier (it names the asset backtest_{name})")
            if described is not None and name in specs:
                raise ParamError(f"{path}: [{name}] is also defined in {config_path()}: rename or retire one")
            template = next(s for s in builtin if s.name == base)
            extra = (described or {}).get(name)
            specs[name] = replace(template, name=name, values={},
                                  description=template.description + (f"\n\n{extra}" if extra else ""))
        try:
            specs[name] = specs[name].with_values(values)
        except ParamError as exc:
            raise ParamError(f"{path}: {exc}") from exc


def _apply_promoted(specs: dict[str, StrategySpec]) -> None:
    """The lake's promoted variants (a variant that no longer validates, e.g. after a range
    changed, fails the load with its file named, like a user variant)."""
    from quant_assets.lake.store import Lake
    from quant_assets.settings import lake_root
    from quant_assets.strategies import promoted

    lake = Lake.at(lake_root())
    config = promoted.read_toml(lake)
    if not config:
        return
    lineage = promoted.read_lineage(lake)
    _apply(specs, config, promoted.toml_path(lake), {n: promoted.describe(lineage.get(n, {})) for n in config})


__all__ = ["BUILTIN", "load", "load_universe", "universe_builtin"]
