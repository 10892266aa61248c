"""Calendar coverage of a ticks partition: the UTC days of the month that have rows of each
kind, and the holes a backtest of the month would run on. Plain Python and Polars, no Dagster.

Judged from the published partition itself (``ticks/symbol=S/month=M/part-0.parquet``), so it
works the same for a hand-dropped file and a fetched one. A day is a UTC calendar day, read from
``ts_event`` (the venue's time, int64 ns). Per kind (``quote``, ``trade``) present in the month:

- **missing days**: days the instrument's calendar expects (up to the *horizon*, below) with no
  row of that kind. A kind absent from the whole month is not a gap here (a trades-only month is
  a fidelity, :mod:`quant_assets.engines.fidelity`, not a hole).
- **stopped**: a kind whose last row is on a day followed by two or more expected days without
  it, up to the later of the month's last judged day and the other kinds' last day that is over
  (one missing last day is a missing day; more is a dataset that stopped updating, like Binance's
  USD-M ``bookTicker``, no longer published since 2024 while its trades go on).
- **empty days**: expected days with no row of any kind: the month has fewer days than its
  calendar (a source day never published, a file that ends early, a listing that began late).

Calendars (:func:`calendar_of`), each a rule over UTC days:

- ``crypto`` (spot, perpetuals and dated futures on crypto venues): every day; a dated future's
  days after its expiry are not expected.
- ``fx``: the interbank week, taken as Sunday 22:00 -> Friday 22:00 UTC all year (the New York
  17:00 roll in winter; in summer it is an hour earlier, which moves no whole day). Monday to
  Friday are expected (Friday has 22 h of session); Saturday is closed; Sunday holds only the
  first two hours of the week, so it is optional: counted when it has ticks, never a gap.
- ``exchange`` (exchange-listed futures, e.g. Databento's CME Globex): Monday to Friday
  expected; Saturday and Sunday optional (Globex opens on Sunday evening). Exchange holidays are
  not known here: a holiday shows as a missing day (a limit; the check's default is a warning).

The horizon: a day is judged once it is over by a day of publication grace, i.e. day ``d`` is
judged when ``d + 1 day <= now - 1 day`` (UTC). A month whose last day is not yet judged is
``in_progress`` and says through which day it was judged; days after that are never called
missing. Nothing about a past month depends on ``now`` or on a later month.

Cost: one Polars pass over two columns (``ts_event``, ``kind``; projection pushdown skips the
other ten), a group-by to (kind, day) counts on the streaming engine: bounded memory, whatever the
month's size (bench: see README "Availability checks").
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from quant_assets.lake.identity import expiry_of
from quant_assets.lake.store import Lake

NS_PER_DAY = 86_400 * 1_000_000_000
COVERAGE_NAME = "coverage.json"

CALENDARS: dict[str, str] = {
    "crypto": "every UTC day (crypto venues trade around the clock); a dated future's days after its expiry are not expected",
    "fx": "Sun 22:00 -> Fri 22:00 UTC: Mon-Fri expected, Saturday closed, Sunday (2 h of session) optional; holidays not known",
    "exchange": "Mon-Fri expected, Sat-Sun optional (e.g. Globex's Sunday-evening open); exchange holidays not known: a holiday shows as missing",
}

#: Venue names (instruments.toml ``venue``) of exchanges whose listed futures follow the
#: ``exchange`` calendar: MIC codes and Databento dataset prefixes of the futures exchanges.
EXCHANGE_VENUES = frozenset({"GLBX", "XCME", "XCBT", "XNYM", "XCEC", "CME", "CBOT", "NYMEX", "COMEX",
                             "IFEU", "IFUS", "ICE", "XEUR", "EUREX", "DATABENTO"})


def calendar_of(kind: str, venue: str | None = None, formats: list[str | None] | tuple = ()) -> str:
    """The calendar (a key of :data:`CALENDARS`) of an instrument of ``kind`` (identity kinds)
    on ``venue``, whose partition was built from landing files of ``formats``: ``fx`` for FX
    pairs; ``exchange`` for a venue in :data:`EXCHANGE_VENUES` or data from Databento (its
    datasets are exchange feeds); else ``crypto``."""
    if kind == "fx":
        return "fx"
    if (venue or "").upper() in EXCHANGE_VENUES or any(f and f.startswith("databento") for f in formats):
        return "exchange"
    return "crypto"


def _month_days(month: str) -> list[dt.date]:
    y, m = (int(x) for x in month.split("-"))
    first = dt.date(y, m, 1)
    nxt = dt.date(y + (m == 12), m % 12 + 1, 1)
    return [first + dt.timedelta(days=i) for i in range((nxt - first).days)]


def expected(calendar: str, day: dt.date) -> bool | None:
    """True: the calendar expects rows on ``day``; None: optional (counted if present, never a
    gap); False: closed."""
    wd = day.weekday()  # Monday 0 .. Sunday 6
    if calendar == "crypto":
        return True
    if calendar == "fx":
        return True if wd < 5 else (None if wd == 6 else False)
    if calendar == "exchange":
        return True if wd < 5 else None
    raise ValueError(f"calendar {calendar!r}: expected one of {', '.join(CALENDARS)}")


def judged_through(month: str, now: dt.datetime) -> dt.date | None:
    """The last day of ``month`` that is judged at ``now`` (UTC): over, plus a day of grace for
    publication; None when no day of the month is judged yet."""
    horizon = (now.astimezone(dt.UTC) if now.tzinfo else now.replace(tzinfo=dt.UTC)) - dt.timedelta(days=1)
    last = horizon.date() - dt.timedelta(days=1)  # day d is over at d+1 00:00 <= horizon
    days = _month_days(month)
    if last < days[0]:
        return None
    return min(last, days[-1])


def ranges(days: list[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` -> ``"1-3, 7, 9-10"`` (days of the month); ``""`` for none."""
    runs: list[list[int]] = []
    for d in sorted(days):
        if runs and d == runs[-1][1] + 1:
            runs[-1][1] = d
        else:
            runs.append([d, d])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


@dataclass
class Coverage:
    """Coverage of one symbol-month (days are days of the month, 1-based, UTC).

    ``expected_days``: the judged days the calendar expects; ``missing``: kind -> expected days
    without a row of it; ``stopped``: kind -> where it stopped; ``empty_days``: expected days
    without any row; ``gaps``: any of these. ``book``: days with order-book depth against the
    days with ticks (coverage, never a gap)."""

    symbol: str
    month: str
    calendar: str
    days_in_month: int
    judged_through: str | None  # YYYY-MM-DD, or None: no day of the month is over yet
    in_progress: bool
    expected_days: list[int]
    days_covered: list[int]
    kinds: dict[str, dict]  # kind -> {"days": [...], "rows": n, "first_day": d, "last_day": d}
    missing: dict[str, list[int]]
    stopped: dict[str, dict]
    empty_days: list[int]
    rows_outside_month: int
    gaps: bool
    book: dict | None = None
    ticks_sha256: str | None = None
    rule: str = ""
    expiry: str | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for people: what is missing, or that nothing is."""
        parts = []
        for kind, days in sorted(self.missing.items()):
            stop = self.stopped.get(kind)
            if stop:
                parts.append(f"{kind} stopped after day {stop['last_day']}"
                             + (f" ({stop['others']} continue to day {stop['others_last_day']})" if stop.get("others") else ""))
                before = [d for d in days if d <= stop["last_day"]]
                if before:
                    parts.append(f"{kind} missing on days {ranges(before)}")
            elif days:
                parts.append(f"{kind} missing on day{'s' if len(days) > 1 else ''} {ranges(days)}")
        if self.empty_days:
            parts.append(f"no row at all on days {ranges(self.empty_days)}")
        head = f"{self.symbol} {self.month} ({self.calendar} calendar"
        head += f", in progress, judged through {self.judged_through})" if self.in_progress else ")"
        return f"{head}: " + ("; ".join(parts) if parts else "every expected day covered")

    def to_json(self) -> dict:
        return asdict(self)


def day_counts(path: Path, month: str) -> pl.DataFrame:
    """(kind, day, rows) of a ticks file: one streaming pass over ``ts_event`` and ``kind`` only;
    ``day`` is the day of ``month`` (1-based; <1 or past the month's end for rows outside it)."""
    from quant_assets.ingest.validate import month_start_ns

    t0 = month_start_ns(month)
    try:
        lf = pl.scan_parquet(path).select(
            kind=pl.col("kind").cast(pl.String),
            day=((pl.col("ts_event") - t0) // NS_PER_DAY + 1).cast(pl.Int32),
        )
        return lf.group_by("kind", "day").agg(rows=pl.len()).collect(engine="streaming")
    except (pl.exceptions.ColumnNotFoundError, pl.exceptions.SchemaError) as exc:
        raise ValueError(f"{path}: expected the ticks columns ts_event (int64 ns) and kind (quote|trade): {exc}") from None


def compute(counts: pl.DataFrame, symbol: str, month: str, calendar: str, *, now: dt.datetime | None = None,
            book_days: list[int] | None = None) -> Coverage:
    """Coverage of ``symbol``'s ``month`` from its (kind, day, rows) counts (:func:`day_counts`),
    on ``calendar`` (:data:`CALENDARS`), judged at ``now`` (UTC; default: the clock).
    ``book_days``: the days with published depth, or None when the month has no book."""
    if calendar not in CALENDARS:
        raise ValueError(f"calendar {calendar!r}: expected one of {', '.join(CALENDARS)}")
    now = now or dt.datetime.now(dt.UTC)
    days = _month_days(month)
    n = len(days)
    through = judged_through(month, now)
    expiry = expiry_of(symbol)
    last_day = 0 if through is None else through.day  # the last judged day of the month
    inside = counts.filter(pl.col("day").is_between(1, n))
    outside = int(counts["rows"].sum() - inside["rows"].sum()) if counts.height else 0
    kinds: dict[str, dict] = {}
    for (kind,), g in inside.sort("day").group_by(["kind"], maintain_order=True):
        ds = g["day"].to_list()
        kinds[str(kind)] = {"days": ds, "rows": int(g["rows"].sum()), "first_day": ds[0], "last_day": ds[-1]}

    def wanted(d: int) -> bool:
        day = days[d - 1]
        if calendar == "crypto" and expiry is not None and day > expiry:
            return False
        return expected(calendar, day) is True

    judged = [d for d in range(1, last_day + 1) if wanted(d)]
    covered = sorted({d for k in kinds.values() for d in k["days"]})
    have = {k: set(v["days"]) for k, v in kinds.items()}
    missing = {k: [d for d in judged if d not in have[k]] for k in kinds}
    missing = {k: v for k, v in missing.items() if v}
    # The other kinds' evidence counts up to the last day that is over (no grace): a day's files
    # of two datasets may come out hours apart, a day still in progress proves nothing.
    over = (now.astimezone(dt.UTC).date() - days[0]).days  # days of the month over at now
    stopped: dict[str, dict] = {}
    for k, v in kinds.items():
        others = {o: w["last_day"] for o, w in kinds.items() if o != k}
        others_last = max(others.values(), default=0)
        ref = max(last_day, min(others_last, over))
        after = [d for d in range(v["last_day"] + 1, ref + 1) if wanted(d)]
        if len(after) >= 2:
            late = sorted(o for o, last in others.items() if last > v["last_day"] + 1)
            stopped[k] = {"last_day": v["last_day"], "expected_days_after": len(after),
                          "others": ", ".join(late), "others_last_day": others_last if late else None}
    empty = [d for d in judged if d not in set(covered)]
    notes = []
    if calendar == "exchange":
        notes.append("exchange holidays are not known: a holiday shows as a missing day")
    if calendar == "crypto" and expiry is not None and expiry < days[-1]:
        notes.append(f"dated future expiring {expiry.isoformat()}: later days not expected")
    if outside:
        notes.append(f"{outside} rows fall outside the month (ts_event)")
    in_progress = through is None or through < days[-1]
    return Coverage(
        symbol=symbol, month=month, calendar=calendar, days_in_month=n,
        judged_through=through.isoformat() if through else None, in_progress=in_progress,
        expected_days=judged, days_covered=covered, kinds=kinds, missing=missing, stopped=stopped,
        empty_days=empty, rows_outside_month=outside, gaps=bool(missing or stopped or empty),
        book=_book(book_days, covered) if book_days is not None else None,
        rule=CALENDARS[calendar],
        expiry=expiry.isoformat() if expiry else None, notes=notes,
    )


def _book(book_days: list[int], tick_days: list[int]) -> dict:
    b, t = set(book_days), set(tick_days)
    return {"days": sorted(b), "book_only": sorted(b - t), "ticks_only": sorted(t - b)}


def book_days(lake: Lake, symbol: str, month: str) -> list[int] | None:
    """Days of ``month`` with published depth (``book/.../day=DD/``), None without a book month."""
    files = lake.book_days(symbol, month)
    return [int(p.parent.name.removeprefix("day=")) for p in files] if files else None


def of_partition(lake: Lake, symbol: str, month: str, calendar: str, *, now: dt.datetime | None = None,
                 sha256: str | None = None) -> Coverage:
    """Coverage of the published ticks partition of ``symbol``'s ``month`` (and its book days)."""
    cov = compute(day_counts(lake.ticks_path(symbol, month), month), symbol, month, calendar, now=now,
                  book_days=book_days(lake, symbol, month))
    cov.ticks_sha256 = sha256
    return cov


def write(lake: Lake, cov: Coverage) -> Path:
    """Persist ``cov`` beside its partition (``coverage.json``), atomically, so ``status`` can show
    gaps without the Dagster instance or the data."""
    path = lake.ticks_coverage_path(cov.symbol, cov.month)
    lake.write_json(cov.to_json(), path, indent=None)  # one line: status reads one per slice
    return path


_GAPS_TRUE = re.compile(rb'"gaps":\s*true')


def read_all(lake: Lake, symbols: set[str] | None = None, months: set[str] | None = None) -> tuple[int, list[dict]]:
    """(how many slices have a persisted coverage, the coverages *with gaps*), optionally of some
    symbols and months; a file that cannot be read counts as one with gaps, as
    ``{"symbol", "month", "error"}``.

    Cost at 400 symbols × 84 months: one ``scandir`` per symbol folder, one read of a ~1 KB file
    per slice, and a JSON parse only for the files whose bytes say ``"gaps": true`` (parsing all
    of them was most of the time; README "Availability checks" has the numbers)."""
    root = lake.ticks_root
    if not root.is_dir():
        return 0, []
    judged, out = 0, []
    with os.scandir(root) as entries:
        symbol_dirs = sorted(e.path for e in entries if e.name.startswith("symbol=") and e.is_dir())
    for sdir in symbol_dirs:
        symbol = os.path.basename(sdir).removeprefix("symbol=")
        if symbols and symbol not in symbols:
            continue
        with os.scandir(sdir) as entries:
            month_dirs = sorted(e.name for e in entries if e.name.startswith("month="))
        for mname in month_dirs:
            month = mname.removeprefix("month=")
            if months and month not in months:
                continue
            path = os.path.join(sdir, mname, COVERAGE_NAME)
            try:
                with open(path, "rb") as f:
                    raw = f.read()
            except FileNotFoundError:
                continue  # a partition built before coverage existed (or being built)
            except OSError as exc:
                judged += 1
                out.append({"symbol": symbol, "month": month, "error": f"{path}: {exc}"})
                continue
            judged += 1
            if not _GAPS_TRUE.search(raw):
                continue
            try:
                out.append(json.loads(raw))
            except ValueError as exc:
                out.append({"symbol": symbol, "month": month, "error": f"{path}: not JSON ({exc})"})
    return judged, out
