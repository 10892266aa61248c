"""Month × symbol partitions shared by every asset.

Keys are joined in dimension-name order (``month`` before ``symbol``): ``2024-01|BTCUSDT``.
The symbol dimension is dynamic (``symbols``): the landing sensor and ``quant-assets sync``
register symbols as files arrive.
"""

from __future__ import annotations

import warnings

import dagster as dg

from quant_assets.lake.symbols import normalise_symbol
from quant_assets.settings import start_month

MONTH_FMT = "%Y-%m"

symbol_partitions = dg.DynamicPartitionsDefinition(name="symbols")

#: end_offset=1 includes the running month: data keeps landing there.
month_partitions = dg.MonthlyPartitionsDefinition(
    start_date=start_month(), fmt=MONTH_FMT, end_offset=1
)

month_symbol_partitions = dg.MultiPartitionsDefinition(
    {"month": month_partitions, "symbol": symbol_partitions}
)


def partition_key(month: str, symbol: str) -> dg.MultiPartitionKey:
    """The multi-partition key for (month ``YYYY-MM``, symbol)."""
    return dg.MultiPartitionKey({"month": month, "symbol": normalise_symbol(symbol)})


def split_key(key: str | dg.MultiPartitionKey) -> tuple[str, str]:
    """(month, symbol) from a key, whether Dagster hands us a MultiPartitionKey or a plain str."""
    dims = month_symbol_partitions.get_partition_key_from_str(str(key)).keys_by_dimension
    return dims["month"], normalise_symbol(dims["symbol"])


def months_window(start: int, end: int) -> dg.MultiPartitionMapping:
    """The mapping of a month × symbol asset reading months ``start``..``end`` (inclusive, relative
    to its own month) of the same symbol: ``months_window(-1, 0)`` reads M−1 and M,
    ``months_window(-3, -1)`` the three months before M. Months outside the partitions (before
    the first month, after the running one) are left out, not an error
    (``allow_nonexistent_upstream_partitions``): the first month of the lake has no previous
    month, and reads only what exists.

    What the orchestration makes of it (quant_assets/automation.py, staleness.py): the month
    itself (offset 0, when the window holds it) is a required input, as with the identity; the
    other months are optional inputs (missing is fine, in progress is not); a new data version of
    any month of the window makes the slice stale and requests it."""
    if start > end:
        raise ValueError(f"months_window({start}, {end}): start must be <= end")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # MultiPartitionMapping is beta in Dagster 1.13
        return dg.MultiPartitionMapping({
            "month": dg.DimensionPartitionMapping("month", dg.TimeWindowPartitionMapping(
                start_offset=start, end_offset=end, allow_nonexistent_upstream_partitions=True)),
            "symbol": dg.DimensionPartitionMapping("symbol", dg.IdentityPartitionMapping()),
        })


#: (M, S) reads (M−1, S) and (M, S): a backtest warming its indicators on the previous month's tail.
WITH_PREVIOUS_MONTH = months_window(-1, 0)


# ---- month × universe (issue 24) ------------------------------------------------------------
#
# A universe's assets are partitioned month × universe, one asset per (strategy, universe), the
# universe dimension holding that universe alone. The members' month × symbol slices are read
# through a MultiPartitionMapping whose symbol dimension maps onto the universe with a
# SpecificPartitionsPartitionMapping of the members. Why not one asset over every universe: the
# symbol -> universes correspondence would need a custom PartitionMapping, which Dagster cannot
# serialise for the daemon and the UI, and StaticPartitionMapping refuses a dynamic upstream
# dimension. With built-in mappings only, a member's new month makes exactly that month of its
# universes stale, and a non-member's nothing.


def month_universe_partitions(universe: str) -> dg.MultiPartitionsDefinition:
    """Month × ``universe`` (a one-key universe dimension): keys ``2024-01|btc_basis``."""
    return dg.MultiPartitionsDefinition(
        {"month": month_partitions, "universe": dg.StaticPartitionsDefinition([universe])}
    )


def members_of_month(members: list[str], previous: bool = False) -> dg.MultiPartitionMapping:
    """(M, universe) reads (M, S) of every member S, and only those; with ``previous`` also
    (M−1, S) (warm-up; absent before the first month, as :func:`months_window`)."""
    month = (dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=0, allow_nonexistent_upstream_partitions=True)
             if previous else dg.IdentityPartitionMapping())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.MultiPartitionMapping({
            "month": dg.DimensionPartitionMapping("month", month),
            "symbol": dg.DimensionPartitionMapping(
                "universe", dg.SpecificPartitionsPartitionMapping([normalise_symbol(s) for s in members])),
        })
