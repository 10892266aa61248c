"""Month × symbol partitions shared by every asset.

Keys are joined in dimension-name order (``month`` before ``symbol``): ``2024-01|BTCUSDT``.
The symbol dimension is dynamic (``symbols``): the landing sensor and ``quant-assets sync``
register symbols as files arrive.
"""

from __future__ import annotations

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
