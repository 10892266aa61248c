"""Month x symbol partitions and symbol validation."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
import pytest

from quant_assets.lake.store import Lake
from quant_assets.lake.symbols import InvalidSymbolError, normalise_symbol
from quant_assets.partitions import month_partitions, month_symbol_partitions, partition_key, split_key


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
