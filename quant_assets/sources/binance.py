"""Binance public data (``data.binance.vision``): spot, USD-M and COIN-M archive zips.

Layout::

    <base>/data/{spot|futures/um|futures/cm}/{monthly|daily}/<dataset>/<SYM>/<SYM>-<dataset>-<period>.zip
    ... and the same path + ``.CHECKSUM``: one line ``<sha256 hex>  <file name>``

Datasets: ``trades`` and ``aggTrades`` (every market), ``bookTicker`` (USD-M and COIN-M; Binance
publishes none for spot) and ``fundingRate`` (USD-M and COIN-M perpetuals, monthly files only).
Binance's ``bookDepth`` (depth at ±% bands) is not an order book the lake can ingest, so it is
not offered.

What is planned for a month M of an entry, at time ``now`` (UTC):

- M before the current month: the monthly file. If it is not out yet (404), the daily files of
  M published by ``now`` are fetched instead (:meth:`BinanceSource.fallback`); once every day of
  M has landed as a daily file the monthly file is no longer needed (the planner skips it).
- M the current month: the daily file of each day D whose next day's ``publish_utc`` has passed.
  ``fundingRate`` has no daily files: the current month's lands as a monthly file next month.

No request is made while planning: availability is learned from 404s, which the fetch ledger
records (``not_published`` / ``missing``). Verification is the ``.CHECKSUM``'s SHA-256.

Markets: ``market`` in the entry (``spot``, ``um``, ``cm``), else from the instrument's kind
(spot -> ``spot``, perpetual or dated future -> ``um``). A COIN-M perpetual ``BTCUSD-PERP`` is
``BTCUSD_PERP`` on Binance; dated futures are ``<PAIR>_<YYMMDD>`` on both futures markets.
"""

from __future__ import annotations

import calendar
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from quant_assets.lake.identity import parse_symbol
from quant_assets.lake.store import file_sha256
from quant_assets.sources.config import FetchEntry, SourceConfig
from quant_assets.sources.model import RemoteFile, VerifyError

NAME = "binance"
MARKETS = {"spot": "spot", "um": "futures/um", "cm": "futures/cm"}
#: Dataset -> markets that publish it.
DATASETS = {
    "trades": ("spot", "um", "cm"),
    "aggTrades": ("spot", "um", "cm"),
    "bookTicker": ("um", "cm"),
    "fundingRate": ("um", "cm"),
}
MONTHLY_ONLY = frozenset({"fundingRate"})
_OPTIONS = {"market"}


def _months(start: str, end: str) -> list[str]:
    y, m = int(start[:4]), int(start[5:])
    out = []
    while f"{y:04d}-{m:02d}" <= end:
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


class BinanceSource:
    """The Binance public-data source (see the module docstring)."""

    name = NAME

    def __init__(self, config: SourceConfig) -> None:
        self.config = config

    # ---- configuration ----------------------------------------------------------------
    def market_of(self, entry: FetchEntry, instrument: str) -> str:
        market = entry.options.get("market")
        if market is not None:
            return str(market)
        kind = parse_symbol(instrument)[1]
        return "spot" if kind == "spot" else "um"

    def check_entry(self, entry: FetchEntry) -> None:
        bad = set(entry.options) - _OPTIONS
        if bad:
            raise ValueError(f"{entry.where}: unknown field(s) {sorted(bad)} for Binance; allowed: instruments, datasets, "
                             "start, end, landing, market")
        market = entry.options.get("market")
        if market is not None and market not in MARKETS:
            raise ValueError(f"{entry.where} market: {market!r} is not a Binance market; expected one of {', '.join(MARKETS)}")
        for ds in entry.datasets:
            if ds not in DATASETS:
                raise ValueError(f"{entry.where} datasets: {ds!r} is not a Binance public dataset; expected one of "
                                 f"{', '.join(DATASETS)}")
        for inst in entry.instruments:
            m = self.market_of(entry, inst)
            kind = parse_symbol(inst)[1]
            if kind == "fx":
                raise ValueError(f"{entry.where} instruments: {inst!r} is an FX pair; Binance publishes none")
            if m == "spot" and kind != "spot":
                raise ValueError(f"{entry.where} market: {inst!r} is a {kind}, but market is spot")
            for ds in entry.datasets:
                if m not in DATASETS[ds]:
                    raise ValueError(f"{entry.where} datasets: Binance publishes no {ds!r} for market {m!r} "
                                     f"(only {', '.join(DATASETS[ds])})")
                if ds == "fundingRate" and parse_symbol(entry.landing_for(inst))[1] != "perpetual":
                    raise ValueError(f"{entry.where} datasets: fundingRate applies to perpetuals only, and "
                                     f"{entry.landing_for(inst)!r} is not one (expected a landing folder ending in -PERP)")

    # ---- names ------------------------------------------------------------------------
    @staticmethod
    def remote_symbol(instrument: str, market: str) -> str:
        """Binance's name of ``instrument`` on ``market`` (``BTCUSD-PERP`` on cm: ``BTCUSD_PERP``)."""
        raw, kind = parse_symbol(instrument)
        if market == "cm" and kind == "perpetual" and "_" not in raw:
            return f"{raw}_PERP"
        return raw

    def _file(self, market: str, granularity: str, dataset: str, sym: str, period: str, landing: str,
              month: str) -> RemoteFile:
        name = f"{sym}-{dataset}-{period}.zip"
        url = f"{self.config.base_url}/data/{MARKETS[market]}/{granularity}/{dataset}/{sym}/{name}"
        return RemoteFile(source=NAME, dataset=dataset, symbol=landing, period=period, months=(month,), url=url,
                          name=name, checksum_url=url + ".CHECKSUM",
                          extra=(("market", market), ("granularity", granularity), ("remote", sym)))

    def _day_published(self, day: date, now: datetime) -> bool:
        """A UTC day's daily file is expected once ``publish_utc`` of the next day has passed."""
        out = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1, minutes=self.config.publish_minutes)
        return now >= out

    def _days(self, market: str, dataset: str, sym: str, month: str, landing: str, now: datetime) -> list[RemoteFile]:
        y, m = int(month[:4]), int(month[5:])
        out = []
        for d in range(1, calendar.monthrange(y, m)[1] + 1):
            day = date(y, m, d)
            if not self._day_published(day, now):
                break
            out.append(self._file(market, "daily", dataset, sym, day.isoformat(), landing, month))
        return out

    # ---- the Source protocol ----------------------------------------------------------
    def plan(self, entry: FetchEntry, now: datetime) -> list[RemoteFile]:
        current = now.astimezone(timezone.utc).strftime("%Y-%m")
        last = min(entry.end or current, current)
        months = _months(entry.start, last) if entry.start <= last else []
        out: list[RemoteFile] = []
        for inst in entry.instruments:
            market = self.market_of(entry, inst)
            sym = self.remote_symbol(inst, market)
            landing = entry.landing_for(inst)
            for ds in entry.datasets:
                for month in months:
                    if month < current:
                        out.append(self._file(market, "monthly", ds, sym, month, landing, month))
                    elif ds not in MONTHLY_ONLY:
                        out.extend(self._days(market, ds, sym, month, landing, now))
        return out

    def fallback(self, rf: RemoteFile, now: datetime) -> list[RemoteFile]:
        """The daily files of a month whose monthly file is not out (none for ``fundingRate``)."""
        if rf.get("granularity") != "monthly" or rf.dataset in MONTHLY_ONLY:
            return []
        return self._days(rf.get("market") or "spot", rf.dataset, rf.get("remote") or rf.symbol, rf.period, rf.symbol, now)

    def verify(self, path: Path, rf: RemoteFile) -> None:
        if not rf.sha256:
            raise VerifyError(f"{rf.url}: no SHA-256 known (its .CHECKSUM was not read); refusing an unverified file")
        got = file_sha256(path)
        if got != rf.sha256:
            raise VerifyError(f"{rf.url}: SHA-256 {got} does not match the published .CHECKSUM {rf.sha256}")

    def auth_headers(self) -> dict[str, str]:
        return {}  # public data: no key


def make(config: SourceConfig) -> BinanceSource:
    return BinanceSource(config)
