"""Cost control for the paid critic: a budget in USD per UTC day and per run, checked against a
spend ledger in the lake before every call.

The ledger: ``<lake>/critiques/_spend/day=YYYY-MM-DD/<host>.jsonl``, one JSON object a line,
appended under the lake lock ``critic-spend`` (so every process on one lake folder sees one
day's spend). One file per machine and day: machines sharing an object-store lake never write
the same file (see the README for what they see of each other's spend). Three kinds of line:

* ``reserve``: before a call, the slice (strategy, symbol, month), the model, the run and the
  call's worst-case cost (``estimate_usd``, from
  :meth:`~quant_assets.critique.anthropic_critic.AnthropicCritic.worst_case_usd`);
* ``spend``: after it, the same ``id``, the tokens (summed over the re-asks), ``cost_usd`` at
  the published price, and ``charged_usd``, what counts against the budget: the cost, or the
  reservation's worst case when a request may have been billed without its usage reaching us
  (a timeout, a dropped connection, an unreadable reply: ``billing_unknown``);
* ``wait``: a call the budget refused (scope ``day`` or ``run``, what was spent, the limit, the
  estimate, until when it waits).

What has been spent on a day is the sum of its ``charged_usd``, plus the estimate of every
reservation with no ``spend`` line yet: a call in flight, or one whose process was killed (it
may have been billed; it keeps counting at its worst case for its day). A run's spend is the
same over that run's lines, from the day it started. A call is charged to the day it reserved
on, even if it ends after midnight.

The check, under the lock: spent + this call's worst case must not exceed the limit, for the
day and for the run; otherwise nothing is sent and :class:`BudgetExhausted` says what was spent,
of which limit, and until when the critique waits. A budget of 0 or None is no limit (the ledger
is still written, so a budget set later in the day counts the morning's spend). An answer from
the critique cache costs nothing and never reaches the ledger; the rule critic is free and has
no worst case, so it is never checked or recorded.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import socket
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from quant_assets.critique.critics import Critic, CriticAnswer, CritiqueFailed
from quant_assets.critique.prompt import Prompt
from quant_assets.lake.store import Lake
from quant_assets.strategies.spec import StrategySpec

#: The lake lock every reader-then-writer of the ledger holds.
LOCK = "critic-spend"
#: Settings that hold the limits, named in the messages (quant_assets/settings.py reads them).
DAY_SETTING = "budget_usd_per_day (QUANT_CRITIC_BUDGET_USD_DAY)"
RUN_SETTING = "budget_usd_per_run (QUANT_CRITIC_BUDGET_USD_RUN)"

Scope = Literal["day", "run"]


def _limit(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}={value!r}: expected an amount in USD >= 0 (0: no limit)")
    return float(value) or None


@dataclass(frozen=True)
class Budget:
    """Spending limits of the paid critic in USD: per UTC calendar day (every run and process on
    the lake together) and per Dagster run. None (or 0 when built with :meth:`of`): no limit."""

    usd_per_day: float | None = None
    usd_per_run: float | None = None

    @classmethod
    def of(cls, usd_per_day: float | None, usd_per_run: float | None) -> Budget:
        """Validated limits (0 means no limit)."""
        return cls(_limit("budget_usd_per_day", usd_per_day), _limit("budget_usd_per_run", usd_per_run))

    @property
    def limited(self) -> bool:
        return self.usd_per_day is not None or self.usd_per_run is not None


class BudgetExhausted(Exception):
    """A paid call would take the spend past a limit: nothing was sent and the critique waits.
    The message says what was spent of which limit and until when."""

    def __init__(self, message: str, *, scope: Scope, spent_usd: float, limit_usd: float, estimate_usd: float,
                 until: str) -> None:
        super().__init__(message)
        self.scope, self.spent_usd, self.limit_usd = scope, spent_usd, limit_usd
        self.estimate_usd, self.until = estimate_usd, until

    def metadata(self) -> dict[str, Any]:
        return {"waiting_for": "critic budget", "scope": self.scope, "spent_usd": round(self.spent_usd, 6),
                "limit_usd": self.limit_usd, "estimate_usd": round(self.estimate_usd, 6), "waits_until": self.until}


class BudgetUnknown(CritiqueFailed):
    """The spend cannot be checked (an unreadable ledger line, a model with no price while a
    budget is set): the critique fails, naming why, rather than spend blind."""


@dataclass(frozen=True)
class Reservation:
    """A call that passed the check: what to settle once it ends (charged to ``day``)."""

    id: str
    day: str
    strategy: str
    symbol: str
    month: str
    model: str
    estimate_usd: float | None


@dataclass(frozen=True)
class Spent:
    """What the ledger says of one day (USD, as charged against the budget)."""

    day: str
    day_usd: float | None  # None: a call of a model with no price (its cost is unknown)
    run_usd: float | None  # this run's, over the days since it started (None: unknown, as day_usd)
    calls: int  # reservations of the day (settled or not)
    open_calls: int  # reservations with no spend line: in flight, or their process was killed
    waits: tuple[dict[str, Any], ...]  # the day's wait lines, oldest first


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "host"


#: What a reader already parsed of a ledger file: (bytes read, lines read, their rows).
_Seen = dict[Path, tuple[int, int, list[dict[str, Any]]]]


def _read_file(path: Path, seen: _Seen) -> list[dict[str, Any]]:
    """The complete lines of one append-only ledger file, parsing only the bytes past what
    ``seen`` holds of it (so a run's checks read each line once, not the whole day per call).
    A last line without its newline is not complete yet and is left for later."""
    offset, n_lines, rows = seen.get(path, (0, 0, []))
    if path.stat().st_size < offset:  # replaced by a shorter file (a store's copy): read it afresh
        offset, n_lines, rows = 0, 0, []
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    lines = data.split(b"\n")[:-1]  # the part after the last newline is not a whole line yet
    rows = list(rows)
    for n, line in enumerate(lines, n_lines + 1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or row.get("event") not in ("reserve", "spend", "wait") or "id" not in row:
                raise ValueError("expected an object with 'event' reserve|spend|wait and an 'id'")
        except ValueError as exc:  # (json's decode errors are ValueErrors, as are bad UTF-8 bytes)
            raise BudgetUnknown(f"spend ledger {path} line {n} is unreadable ({exc}): repair or remove the line "
                                "(a writer killed mid-line?); the critic's spend cannot be checked until then") from None
        rows.append(row)
    seen[path] = (offset + sum(len(x) + 1 for x in lines), n_lines + len(lines), rows)
    return rows


def read_day(lake: Lake, day: str, seen: _Seen | None = None) -> list[dict[str, Any]]:
    """Every complete line of ``day``'s ledger (all machines' files), each file in order;
    ``seen`` keeps what was parsed for the next read. An unreadable line is an error naming its
    file and line: a spend that cannot be read cannot be checked."""
    folder = lake.critique_spend_dir(day)
    seen = {} if seen is None else seen
    return [row for path in (sorted(folder.glob("*.jsonl")) if folder.is_dir() else ()) for row in _read_file(path, seen)]


def _charged(rows: Iterable[dict[str, Any]]) -> tuple[float | None, int, int]:
    """(USD charged, calls, calls not settled) of ``rows``: each call at its ``charged_usd`` if
    settled, else at its reservation's estimate. None if any of them has no figure."""
    reserved: dict[str, float | None] = {}
    settled: dict[str, float | None] = {}
    for r in rows:
        if r["event"] == "reserve":
            reserved[r["id"]] = r.get("estimate_usd")
        elif r["event"] == "spend":
            settled[r["id"]] = r.get("charged_usd")
    ids = reserved.keys() | settled.keys()
    amounts = [settled[i] if i in settled else reserved[i] for i in ids]
    total = None if any(a is None for a in amounts) else float(sum(amounts))
    return total, len(ids), len(reserved.keys() - settled.keys())


class SpendLedger:
    """The spend ledger of one run on one lake, with its budget (see the module docstring).

    ``run_id`` names the run whose spend the per-run limit bounds (empty: this object's own
    calls); ``run_started`` (a POSIX
    time) the day from which its lines are read (None: today only); ``clock`` the current UTC
    time (None: the system's)."""

    def __init__(self, lake: Lake, budget: Budget = Budget(), run_id: str = "", run_started: float | None = None,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        # Without a run id (a call outside Dagster), this ledger object is the "run".
        self.run_id = run_id or f"local-{uuid.uuid4().hex[:12]}"
        self.lake, self.budget, self._clock = lake, budget, clock
        self._run_started = run_started
        self._host = _host()
        self._seen: _Seen = {}  # what this ledger object has parsed of the files so far

    def today(self) -> str:
        return self._now().date().isoformat()

    def _now(self) -> dt.datetime:
        return (self._clock or _utc_now)().astimezone(dt.UTC)

    def path(self, day: str) -> Path:
        """This machine's ledger file of ``day``."""
        return self.lake.critique_spend_dir(day) / f"{self._host}.jsonl"

    def _run_days(self, today: str) -> list[str]:
        if self._run_started is None:
            return [today]
        first = dt.datetime.fromtimestamp(self._run_started, dt.UTC).date()
        last = dt.date.fromisoformat(today)
        return [(first + dt.timedelta(days=k)).isoformat() for k in range((last - first).days + 1)] or [today]

    def spent(self, day: str | None = None) -> Spent:
        """The day's spend (today by default) and this run's; read without the lock (a figure
        to show; :meth:`reserve` reads it again under the lock)."""
        day = day or self.today()
        rows = read_day(self.lake, day, self._seen)
        day_usd, calls, open_calls = _charged(rows)
        run_rows = [r for d in self._run_days(day) for r in (rows if d == day else read_day(self.lake, d, self._seen))
                    if r.get("run_id") == self.run_id]
        run_usd = _charged(run_rows)[0]
        return Spent(day, day_usd, run_usd, calls, open_calls, tuple(r for r in rows if r["event"] == "wait"))

    def _line(self, event: str, what: dict[str, Any], **fields: Any) -> str:
        row = {"event": event, "at": self._now().isoformat(timespec="seconds"),
               "run_id": self.run_id, **what, **fields}
        return json.dumps(row, sort_keys=True, separators=(",", ":"), default=str)

    def reserve(self, strategy: str, symbol: str, month: str, model: str, estimate_usd: float | None) -> Reservation:
        """Check that a call costing at most ``estimate_usd`` fits the budget and record it as
        reserved; raise :class:`BudgetExhausted` (after recording the wait) if it does not."""
        what = {"strategy": strategy, "symbol": symbol, "month": month, "model": model}
        with self.lake.lock(LOCK):
            day = self.today()
            if self.budget.limited:
                if estimate_usd is None:
                    raise BudgetUnknown(f"model {model} has no price in quant_assets/critique/pricing.py, so its cost "
                                        "cannot be checked against the critic's budget: add its price, or set no budget")
                spent = self.spent(day)
                for scope, limit, used in (("day", self.budget.usd_per_day, spent.day_usd),
                                           ("run", self.budget.usd_per_run, spent.run_usd)):
                    if limit is None:
                        continue
                    if used is None:
                        raise BudgetUnknown(f"the {scope}'s spend in {self.lake.critique_spend_dir(day)} includes calls of "
                                            "a model with no price: the budget cannot be checked; add its price to "
                                            "quant_assets/critique/pricing.py")
                    if used + estimate_usd > limit:
                        exc = self._exhausted(scope, day, used, limit, estimate_usd)
                        self.lake.append_line(self._line("wait", what, id=uuid.uuid4().hex, **{
                            k: v for k, v in exc.metadata().items() if k != "waiting_for"}, reason=str(exc)), self.path(day))
                        raise exc
            reservation = Reservation(uuid.uuid4().hex, day, strategy, symbol, month, model, estimate_usd)
            self.lake.append_line(self._line("reserve", what, id=reservation.id, estimate_usd=estimate_usd), self.path(day))
        return reservation

    def _exhausted(self, scope: Scope, day: str, spent: float, limit: float, estimate: float) -> BudgetExhausted:
        if scope == "day":
            next_day = (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()
            until, where, setting = f"{next_day} 00:00 UTC", f"today (UTC {day})", DAY_SETTING
        else:
            until, where, setting = "the next run", f"in this run ({self.run_id})", RUN_SETTING
        if estimate > limit:
            tail = (f"this critique alone may cost up to {estimate:.4f} USD, more than the whole limit: it waits until "
                    f"{setting} is raised")
            until = f"{setting} is raised"
        else:
            tail = f"the next critique may cost up to {estimate:.4f} USD; the critique waits until {until}"
        return BudgetExhausted(f"budget exhausted: spent {spent:.4f} of {limit:.4f} USD {where}; {tail}",
                               scope=scope, spent_usd=spent, limit_usd=limit, estimate_usd=estimate, until=until)

    def settle(self, reservation: Reservation, usage: dict[str, int], cost_usd: float | None, outcome: str,
               billing_unknown: bool = False) -> None:
        """Record what a reserved call cost. ``charged_usd`` is ``cost_usd``, or the reservation's
        worst case when ``billing_unknown`` (or the cost is unknown and the estimate is not)."""
        charged = reservation.estimate_usd if billing_unknown or cost_usd is None else cost_usd
        if billing_unknown and cost_usd is not None and reservation.estimate_usd is not None:
            charged = max(cost_usd, reservation.estimate_usd)
        what = {"strategy": reservation.strategy, "symbol": reservation.symbol, "month": reservation.month,
                "model": reservation.model}
        line = self._line("spend", what, id=reservation.id, usage=usage, cost_usd=cost_usd, charged_usd=charged,
                          outcome=outcome[:300], billing_unknown=billing_unknown)
        with self.lake.lock(LOCK):
            self.lake.append_line(line, self.path(reservation.day))


def critique_within_budget(ledger: SpendLedger, critic: Critic, prompt: Prompt, spec: StrategySpec, symbol: str,
                           month: str, history: list[dict] | None = None) -> CriticAnswer:
    """``critic.critique(prompt, spec)`` (or, with ``history``, a later round:
    ``critic.refine(prompt, spec, history)``), checked against the budget and recorded in the
    ledger when the critic is paid (it has a ``worst_case_usd``); a free critic is simply asked.

    Raises :class:`BudgetExhausted` (nothing sent) when the call does not fit; a failed call is
    recorded with what it cost, then re-raised. Any other exception leaves the reservation
    open: it keeps counting at its worst case (it may have been billed)."""
    ask = (lambda: critic.critique(prompt, spec)) if history is None else (lambda: critic.refine(prompt, spec, history))
    worst_case = getattr(critic, "worst_case_usd", None)
    if worst_case is None:
        return ask()
    # a later round re-sends every earlier answer and its results, with a turn's framing each
    extra = 0 if history is None else len(json.dumps(history, default=str).encode()) + 400 * len(history)
    reservation = ledger.reserve(spec.name, symbol, month, critic.model, worst_case(prompt, extra_bytes=extra)
                                 if extra else worst_case(prompt))
    try:
        answer = ask()
    except CritiqueFailed as exc:
        ledger.settle(reservation, exc.usage, exc.cost_usd, f"failed: {exc}", exc.billing_unknown)
        raise
    ledger.settle(reservation, answer.usage, answer.cost_usd, "answer")
    return answer


def waiting_for_budget(lake: Lake, usd_per_day: float | None) -> set[tuple[str, str, str]]:
    """The (strategy, symbol, month) critiques that waited for the day's budget today and would
    still not fit under ``usd_per_day`` (the limit now: a raised limit releases them): what
    ``quant-assets status`` shows as waiting, and ``sync`` leaves until the next UTC day. One
    read of today's ledger; an unreadable ledger waits nothing here (the critique itself says
    why it cannot run)."""
    limit = _limit("budget_usd_per_day", usd_per_day)
    if limit is None:
        return set()
    day = SpendLedger(lake).today()
    try:
        rows = read_day(lake, day)
    except BudgetUnknown:
        return set()
    spent = _charged(rows)[0]
    return {(r["strategy"], r["symbol"], r["month"]) for r in rows
            if r["event"] == "wait" and r.get("scope") == "day"
            and (spent is None or spent + float(r.get("estimate_usd") or 0.0) > limit)}
