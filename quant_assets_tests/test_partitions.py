"""Month x symbol partitions and symbol validation."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
import pytest

from quant_assets.lake.store import Lake
from quant_assets.lake.symbols import InvalidSymbolError, normalise_symbol
from quant_assets.partitions import (
    WITH_PREVIOUS_MONTH,
    month_partitions,
    month_symbol_partitions,
    months_window,
    partition_key,
    split_key,
)


def test_keys_join_month_then_symbol():
    assert str(partition_key("2024-01", "btcusdt")) == "2024-01|BTCUSDT"
    assert split_key("2024-01|BTCUSDT") == ("2024-01", "BTCUSDT")
    assert split_key(dg.MultiPartitionKey({"month": "2024-02", "symbol": "ETHUSDT"})) == ("2024-02", "ETHUSDT")
    assert [d.name for d in month_symbol_partitions.partitions_defs] == ["month", "symbol"]


def test_months_start_in_2020_and_include_the_running_month():
    keys = month_partitions.get_partition_keys()
    assert keys[0] == "2020-01"
    from datetime import datetime, timezone

    assert keys[-1] == datetime.now(timezone.utc).strftime("%Y-%m")


def test_start_month_comes_from_the_environment():
    code = "from quant_assets.partitions import month_partitions as m; print(m.get_partition_keys()[0])"
    out = subprocess.run([sys.executable, "-c", code], env={"QUANT_START_MONTH": "2023-06", "PATH": ""}, capture_output=True, text=True)
    assert out.stdout.strip() == "2023-06", out.stderr
    bad = subprocess.run([sys.executable, "-c", code], env={"QUANT_START_MONTH": "2023/06"}, capture_output=True, text=True)
    assert bad.returncode != 0 and "QUANT_START_MONTH" in bad.stderr


@pytest.mark.parametrize("raw,norm", [("btcusdt", "BTCUSDT"), ("EUR.USD", "EUR.USD"), ("es_f-1", "ES_F-1"), (" SOLUSDT ", "SOLUSDT")])
def test_symbols_are_normalised(raw, norm):
    assert normalise_symbol(raw) == norm


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "..", ".", "x" * 33, "BTC USDT", "ÄBC", "a\\b"])
def test_symbols_that_could_escape_the_lake_are_refused(bad, tmp_path):
    with pytest.raises(InvalidSymbolError, match="invalid symbol"):
        normalise_symbol(bad)
    with pytest.raises(InvalidSymbolError):
        Lake.at(tmp_path).ticks_path(bad, "2024-01")


def test_a_window_of_months_reads_the_months_that_exist_of_the_same_symbol(instance):
    instance.add_dynamic_partitions("symbols", ["BTCUSDT"])

    def upstream(mapping, pk: str) -> list[str]:
        subset = month_symbol_partitions.empty_subset().with_partition_keys([pk])
        result = mapping.get_upstream_mapped_partitions_result_for_partitions(
            subset, month_symbol_partitions, month_symbol_partitions, dynamic_partitions_store=instance)
        return sorted(str(k) for k in result.partitions_subset.get_partition_keys())

    assert upstream(WITH_PREVIOUS_MONTH, "2024-03|BTCUSDT") == ["2024-02|BTCUSDT", "2024-03|BTCUSDT"]
    assert upstream(WITH_PREVIOUS_MONTH, "2020-01|BTCUSDT") == ["2020-01|BTCUSDT"]  # the first month: nothing before it
    assert upstream(months_window(-3, -1), "2024-03|BTCUSDT") == ["2023-12|BTCUSDT", "2024-01|BTCUSDT", "2024-02|BTCUSDT"]
    with pytest.raises(ValueError, match="start must be <= end"):
        months_window(0, -1)
