"""Venue profiles from ``venues.toml``: bad settings fail naming the file and the setting, a
recorded latency file is checked row by row, each profile is versioned on its own, and a
relative latency file is found next to ``venues.toml``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quant_assets.venues import latency, profile

S = 1_000_000_000


def _write(tmp_path: Path, text: str, name: str = "venues.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _latency_file(path: Path, req: list[int], entry_ns: int = 5_000_000, resp_ns: int = 5_000_000) -> Path:
    rows = np.zeros(len(req), latency.LATENCY_DTYPE)
    rows["req_ts"] = req
    rows["exch_ts"] = rows["req_ts"] + entry_ns
    rows["resp_ts"] = rows["exch_ts"] + resp_ns
    if path.suffix == ".npz":
        np.savez(path, data=rows)
    else:
        pl.DataFrame({c: rows[c] for c in ("req_ts", "exch_ts", "resp_ts")}).write_parquet(path)
    return path


@pytest.mark.parametrize(
    ("body", "setting", "reason"),
    [
        ("entry_latency_ms = -1.0", "entry_latency_ms", "expected a finite number ≥ 0"),
        ("entry_latency_ms = nan", "entry_latency_ms", "expected a finite number"),
        ("response_latency_ms = inf", "response_latency_ms", "expected a finite number"),
        ('latency_model = "lognormal"\nlatency_sigma = 0.5', "latency_seed", "needs latency_seed"),
        ('queue_model = "fifo"', "queue_model", "unknown"),
        ('stop_fill = "somewhere"', "stop_fill", "expected one of next_touch, trigger"),
        ("prob_slippage = 1.5", "prob_slippage", "≤ 1"),
        ("synthetic_depth = 0.0", "synthetic_depth", "> 0"),
        ("order_latency = 3", "order_latency", "unknown setting"),
    ],
    ids=["negative", "nan", "inf", "lognormal-without-seed", "unknown-queue-model", "stop-fill", "probability", "depth", "unknown-setting"],
)
def test_a_bad_setting_names_the_file_the_table_and_the_setting(tmp_path: Path, body: str, setting: str, reason: str) -> None:
    path = _write(tmp_path, f"[BINANCE.perpetual]\n{body}\n")
    with pytest.raises(ValueError) as err:
        profile.configured(path)
    message = str(err.value)
    assert str(path) in message and "[BINANCE.perpetual]" in message
    assert setting in message and reason in message


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_a_recorded_latency_file_with_unsorted_timestamps_names_the_file_the_setting_and_the_row(tmp_path: Path, suffix: str) -> None:
    bad = _latency_file(tmp_path / f"lat{suffix}", [0, 10 * S, 5 * S, 20 * S])
    with pytest.raises(ValueError, match=r"row 2: req_ts 5000000000 is before the previous row's 10000000000") as err:
        latency.read_recorded(bad, "venues.toml [X.spot] latency_file")
    assert str(bad) in str(err.value) and "latency_file" in str(err.value)

    path = _write(tmp_path, f'[BINANCE.perpetual]\nlatency_model = "recorded"\nlatency_file = "lat{suffix}"\n')
    with pytest.raises(ValueError, match="row 2") as err:
        profile.configured(path)
    assert str(path) in str(err.value) and "latency_file" in str(err.value) and str(bad) in str(err.value)


def test_a_recorded_row_answered_before_it_was_sent_is_refused(tmp_path: Path) -> None:
    bad = _latency_file(tmp_path / "lat.npz", [0, S, 2 * S], entry_ns=-1)
    with pytest.raises(ValueError, match=r"row 0: expected req_ts ≤ exch_ts ≤ resp_ts"):
        latency.read_recorded(bad, "latency_file")


def test_editing_one_profile_changes_only_its_version(tmp_path: Path) -> None:
    base = "[BINANCE.perpetual]\nentry_latency_ms = 5.0\n\n[BINANCE.spot]\nentry_latency_ms = 20.0\n"
    before = _write(tmp_path, base, "a.toml")
    after = _write(tmp_path, base.replace("20.0", "25.0"), "b.toml")
    perp = (profile.profile_for("BINANCE", "perpetual", before), profile.profile_for("BINANCE", "perpetual", after))
    spot = (profile.profile_for("BINANCE", "spot", before), profile.profile_for("BINANCE", "spot", after))
    other = (profile.profile_for("TARDIS", "perpetual", before), profile.profile_for("TARDIS", "perpetual", after))
    assert perp[0].version == perp[1].version  # untouched table: same version (the file name does not count)
    assert other[0].version == other[1].version == profile.builtin("TARDIS", "perpetual").version
    assert spot[0].version != spot[1].version and spot[1].entry_latency_ms == 25.0
    assert profile.digest(before) != profile.digest(after)  # the file as a whole did change


def test_a_relative_latency_file_resolves_against_the_venues_file_folder(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "conf"
    (folder / "latency").mkdir(parents=True)
    _latency_file(folder / "latency" / "perp.npz", [0, S, 2 * S], entry_ns=7_000_000)
    path = _write(folder, '[BINANCE.perpetual]\nlatency_model = "recorded"\nlatency_file = "latency/perp.npz"\n')
    monkeypatch.chdir(tmp_path)  # not the folder of venues.toml: the path must not depend on the cwd
    p = profile.configured(path)[("BINANCE", "perpetual")]
    assert Path(p.latency_file) == folder / "latency" / "perp.npz"
    assert p.latency_file_sha256
    assert latency.nautilus_entry_ns(p)[0] == 7_000_000
    # the version follows the file's rows, not its path: a copy elsewhere has the same version
    other = tmp_path / "elsewhere"
    (other / "latency").mkdir(parents=True)
    (other / "latency" / "perp.npz").write_bytes((folder / "latency" / "perp.npz").read_bytes())
    copy = _write(other, path.read_text())
    assert profile.configured(copy)[("BINANCE", "perpetual")].version == p.version


def test_a_symbol_s_venue_settings_come_from_its_landing_files_before_its_first_ingest(lake):
    from quant_assets.venues.scope import UnknownVenueError, symbol_venue
    from quant_assets_tests import builders as b

    with pytest.raises(UnknownVenueError, match=r"ETHUSDT: no instrument record.*landing/ETHUSDT/"):
        symbol_venue(lake, "ETHUSDT")
    b.write(lake.landing_dir("ETHUSDT") / "ETHUSDT-trades-2024-01.csv", b.binance_trades_csv(10))
    sv = symbol_venue(lake, "ETHUSDT")
    assert (sv.venue, sv.kind, sv.fee_tier, sv.venue_from) == ("BINANCE", "spot", "VIP0", "landing formats")
    assert sv.profile["label"] == profile.profile_for("BINANCE", "spot").label
    assert sv.fees and sv.margin["max_leverage"] == 1.0  # Binance spot's built-in schedule; spot is unlevered
    assert sv.version == symbol_venue(lake, "ETHUSDT").version  # a digest of the settings: stable
