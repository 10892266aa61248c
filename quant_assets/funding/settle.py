"""Funding settlement of a backtest: pure functions over the stored tables, engine-agnostic.

Sign convention: ``rate`` is a fraction per interval, positive when longs pay shorts. At a
funding time ``ts`` a position of ``position`` base units (signed: long > 0) marked at
``mark_px`` (quote currency per base unit) RECEIVES

    amount = -position * mark_px * rate      (quote currency)

so a long pays (amount < 0) when the rate is positive, a short receives, and a flat position
neither pays nor receives (amount exactly 0.0).

Invariants:
- one row per funding time ``run_start <= ts <= run_end`` (the run span defaults to the first
  and last equity sample), sorted by ``ts``;
- ``position`` is the position held at ``ts``: fills stamped exactly ``ts`` count as done
  before the funding (the same rule as ``engines.result.equity_curve`` for samples);
- ``mark_px`` is the funding row's own mark when the source has one (``mark_source =
  "funding"``), else the last mid sample at or before ``ts`` (``"mid"``); null with
  ``mark_source`` null when neither exists (then ``amount`` is null unless flat);
- ``funding_pnl`` = sum of ``amount``; equity and cash after :func:`apply_funding` include
  every amount with ``ts`` at or before the sample time.
"""

from __future__ import annotations

import polars as pl

from quant_assets.funding.build import APPLIED, MISSING, NOT_APPLICABLE
from quant_assets.funding.schema import FUNDING_SCHEMA, is_perpetual

#: Positions smaller than this (base units) count as flat (matches ``engines.result.FLAT_EPS``).
FLAT_EPS = 1e-9

SETTLEMENT_SCHEMA: dict[str, pl.DataType] = {
    "ts": pl.Int64(),            # ns, the funding time
    "position": pl.Float64(),    # base units held at ts
    "mark_px": pl.Float64(),     # quote currency per base unit
    "mark_source": pl.String(),  # "funding" | "mid"
    "rate": pl.Float64(),        # fraction per interval, positive: longs pay
    "amount": pl.Float64(),      # quote currency received (negative: paid)
}


def settle_funding(
    fills: pl.DataFrame,
    samples: pl.DataFrame,
    funding: pl.DataFrame | None,
    run_start_ns: int | None = None,
    run_end_ns: int | None = None,
) -> pl.DataFrame:
    """The funding frame of one run (:data:`SETTLEMENT_SCHEMA`).

    ``fills``: the stored fills (``ts`` ns, ``position`` base units after each fill; more
    columns are ignored). ``samples``: equity samples or raw mid samples (``ts`` ns, ``mid``
    quote currency). ``funding``: the month's funding rows (``quant_assets.funding.schema``);
    None or empty gives an empty frame. The run span defaults to the samples' first and last
    ``ts``; with no samples and no explicit span no funding time is inside the run.
    """
    if funding is None or funding.is_empty():
        return pl.DataFrame(schema=SETTLEMENT_SCHEMA)
    samples = samples.select("ts", "mid").sort("ts")
    start = run_start_ns if run_start_ns is not None else (samples["ts"].min() if len(samples) else None)
    end = run_end_ns if run_end_ns is not None else (samples["ts"].max() if len(samples) else None)
    if start is None or end is None:
        return pl.DataFrame(schema=SETTLEMENT_SCHEMA)
    events = (
        funding.select("ts", "rate", "mark_px").cast({k: FUNDING_SCHEMA[k] for k in ("ts", "rate", "mark_px")})
        .filter((pl.col("ts") >= start) & (pl.col("ts") <= end)).sort("ts")
    )
    # Several fills in one ns: the last one's position is what is held after all of them.
    held = fills.select("ts", "position").sort("ts", maintain_order=True).unique("ts", keep="last", maintain_order=True)
    # join_asof "backward" matches right rows with ts <= left ts: a fill at exactly the funding
    # time is done before it, and so is a mid sampled at that ns.
    out = (
        events.join_asof(held.cast({"ts": pl.Int64, "position": pl.Float64}), on="ts", strategy="backward")
        .join_asof(samples.cast({"ts": pl.Int64, "mid": pl.Float64}), on="ts", strategy="backward")
        .with_columns(position=pl.col("position").fill_null(0.0))
    )
    flat = pl.col("position").abs() <= FLAT_EPS
    out = out.select(
        "ts",
        position=pl.when(flat).then(0.0).otherwise(pl.col("position")),
        mark_px=pl.coalesce("mark_px", "mid"),
        mark_source=pl.when(pl.col("mark_px").is_not_null()).then(pl.lit("funding"))
        .when(pl.col("mid").is_not_null()).then(pl.lit("mid")),
        rate="rate",
    ).with_columns(
        amount=pl.when(flat).then(0.0).otherwise(-pl.col("position") * pl.col("mark_px") * pl.col("rate")),
    )
    return out.select(list(SETTLEMENT_SCHEMA)).cast(SETTLEMENT_SCHEMA)  # type: ignore[arg-type]


def apply_funding(equity: pl.DataFrame, settlement: pl.DataFrame) -> pl.DataFrame:
    """``equity`` (``engines.result.EQUITY_SCHEMA``: ts ns, equity, position, mid, cash) with the
    funding received up to each sample added to ``equity`` and ``cash`` (quote currency).

    A funding at exactly a sample's ``ts`` is included in that sample. Same columns, same rows,
    same order; with an empty settlement the frame is returned unchanged."""
    if settlement.is_empty() or equity.is_empty():
        return equity
    cum = settlement.select("ts", cum=pl.col("amount").fill_null(0.0).cum_sum()).unique("ts", keep="last", maintain_order=True)
    cols = equity.columns
    joined = equity.with_row_index("_i").sort("ts", "_i").join_asof(cum, on="ts", strategy="backward")
    received = pl.col("cum").fill_null(0.0)
    return (
        joined.with_columns(equity=pl.col("equity") + received, cash=pl.col("cash") + received)
        .sort("_i").select(cols).cast(dict(equity.schema))
    )


def funding_summary(symbol: str, settlement: pl.DataFrame, funding: pl.DataFrame | None) -> dict[str, object]:
    """Headline funding numbers of a run, for metadata and manifests.

    ``funding_status``: ``not applicable`` for a spot instrument (``funding_pnl`` 0.0); for a
    perpetual ``missing`` when the month has no funding data (``funding_pnl`` None: unknown,
    never a silent zero), else ``applied``. ``funding_pnl`` is the sum of ``amount`` (quote
    currency received), ``funding_events`` the funding times inside the run."""
    if not is_perpetual(symbol):
        return {"funding_status": NOT_APPLICABLE, "funding_pnl": 0.0, "funding_events": 0}
    if funding is None or funding.is_empty():
        return {"funding_status": MISSING, "funding_pnl": None, "funding_events": 0}
    return {
        "funding_status": APPLIED,
        "funding_pnl": float(settlement["amount"].fill_null(0.0).sum()),
        "funding_events": len(settlement),
    }


def settle_run(
    symbol: str, fills: pl.DataFrame, equity: pl.DataFrame, funding: pl.DataFrame | None,
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, object]]:
    """One call for a runner: (funding frame to store as ``funding.parquet``, equity including
    funding, summary). ``equity`` is the stored equity frame (its ``ts``/``mid`` are the samples);
    ``funding`` the month's rows from ``build.load_funding`` (None: missing / spot)."""
    frame = settle_funding(fills, equity, funding if is_perpetual(symbol) else None)
    return frame, apply_funding(equity, frame), funding_summary(symbol, frame, funding)
