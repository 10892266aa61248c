"""Free text on its way into a critic's prompt, with the calendar and price levels taken out.

The prompt's numbers come from whitelisted fields that hold no date and no price (see
:mod:`quant_assets.critique.prompt`); its free text (null reasons, notes, the sensitivity's
reason, labels, a revealed symbol, the strategy dictionary) is made by code and config that may
mention a timestamp, a file path or a price. :class:`Scrubber` replaces, in that order:

* URLs and file paths (absolute, or with two or more ``/``) and hive keys (``month=2024-01``)
  -> ``<path>``;
* calendar dates and times: ISO datetimes, ``YYYY-MM-DD`` (and ``/`` ``.`` forms, day-first
  too), ``YYYY-MM``, ``YYYYMMDD``, month names with a year (``Jan 2024``, ``3 January 2024``),
  futures-style ``27DEC24``, quarters (``Q1 2024``) -> ``<date>``; epochs of 10, 13, 16 or 19
  digits (s, ms, us, ns; a unit suffix included) -> ``<timestamp>``; with ``strict``, a bare
  year ``19xx``/``20xx`` standing alone (not part of a number such as ``2000.0``) -> ``<year>``;
* with a price range, every number inside it (``43,012.5``) -> ``<price>``: the range is the
  slice's own prices, widened by :data:`PRICE_MARGIN` either way;
* the symbol (when it is to be hidden, as a whole token) -> its alias.

A bare year is not scrubbed from the strategy dictionary (``strict=False``): parameter values
such as ``slow_period 2000`` would be lost, and the dictionary is code and config, not data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Numbers within [lo / PRICE_MARGIN, hi * PRICE_MARGIN] of the slice's prices count as prices.
PRICE_MARGIN = 1.25

_MONTHS = ("jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sept?(?:ember)?|"
           "oct(?:ober)?|nov(?:ember)?|dec(?:ember)?")
_YEAR = r"(?:19|20)\d{2}"

_CALENDAR: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?<!\d)\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?(?!\d)"), "<date>"),
    (re.compile(r"(?<![\d.])\d{4}[-/.]\d{1,2}[-/.]\d{1,2}(?![\d])"), "<date>"),
    (re.compile(r"(?<![\d.])\d{1,2}[-/.]\d{1,2}[-/.]\d{4}(?![\d])"), "<date>"),
    (re.compile(rf"(?<![\d.]){_YEAR}[-/_](?:0?[1-9]|1[0-2])(?!\d)"), "<date>"),
    (re.compile(rf"(?<![\d.]){_YEAR}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?![\d])"), "<date>"),
    (re.compile(rf"\b(?:\d{{1,2}}(?:st|nd|rd|th)?\s+)?(?:{_MONTHS})\.?\s+(?:\d{{1,2}}(?:st|nd|rd|th)?,?\s+)?{_YEAR}\b", re.I), "<date>"),
    (re.compile(rf"(?<![A-Za-z\d])\d{{1,2}}(?:{_MONTHS})\d{{2}}(?:\d{{2}})?(?![A-Za-z\d])", re.I), "<date>"),
    (re.compile(rf"\bQ[1-4][\s_-]?{_YEAR}\b|\b{_YEAR}[\s_-]?Q[1-4]\b", re.I), "<date>"),
    # Epochs: a run of exactly 10, 13, 16 or 19 digits (s, ms, us, ns) not inside a word.
    (re.compile(r"(?<![\w.])\d{10}(?:\d{9}|\d{6}|\d{3})?(?:\.\d+)?(?:ns|us|ms|s)?(?![\w])"), "<timestamp>"),
)
_BARE_YEAR = re.compile(rf"(?<![\w.,+-]){_YEAR}(?![\w.,])")
_PATHS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.I), "<path>"),
    (re.compile(r"(?<![\w.])(?:~|[A-Za-z]:)?[/\\](?:[\w.=@+-]+[/\\])*[\w.=@+-]+"), "<path>"),
    (re.compile(r"(?<![\w/])[\w.=@+-]+(?:/[\w.=@+-]+){2,}"), "<path>"),
    (re.compile(r"\b(?:symbol|month|strategy|interval|src|date|year|day)=[^\s,;)\]]+"), "<path>"),
)
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?(?![\w])")


@dataclass(frozen=True)
class Scrubber:
    """Scrub free text for one slice (see the module docstring). ``hide``: strings (the symbol)
    replaced by ``alias``; ``prices``: (lowest, highest) price of the slice, quote currency."""

    hide: tuple[str, ...] = ()
    alias: str = "<instrument>"
    prices: tuple[float, float] | None = None

    def __call__(self, text: str, strict: bool = True) -> str:
        for pattern, repl in (*_PATHS, *_CALENDAR):  # a path first: it may hold a month
            text = pattern.sub(repl, text)
        if strict:
            text = _BARE_YEAR.sub("<year>", text)
        if self.prices is not None:
            lo, hi = self.prices[0] / PRICE_MARGIN, self.prices[1] * PRICE_MARGIN
            text = _NUMBER.sub(lambda m: "<price>" if lo <= abs(_value(m.group())) <= hi else m.group(), text)
        for h in self.hide:  # last: the alias is never scrubbed itself
            if h:
                # whole tokens only: a short symbol ("ES") must not eat words ("fees")
                text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(h)}(?![A-Za-z0-9])", self.alias, text, flags=re.I)
        return text


def _value(token: str) -> float:
    try:
        return float(token.replace(",", ""))
    except ValueError:
        return float("nan")  # never inside a range


def reveal_symbol(symbol: str) -> str:
    """A symbol shown as is, but for the parts that read as an expiry date (``BTC-27DEC24``,
    ``BTCUSD-240329``): runs of 4 or more digits and the calendar patterns become ``<date>``.
    A one-letter futures month code (``ESH4``) cannot be told from a name and stays."""
    text = Scrubber()(symbol)
    return re.sub(r"\d{4,}", "<date>", text)
