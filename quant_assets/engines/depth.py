"""The declared depth of a size-less quote, in base units, shared by both engine adapters.

Some feeds carry no sizes at the touch (FX quote files; the quotes NautilusTrader is given on
trades-only data). An engine needs a size at each side, and an unbounded one (the old 1e9)
makes every order of any size fill at the touch. The venue profile instead declares
``synthetic_depth`` in quote currency at each side; this module converts it to base units once
per slice, at the slice's first price, so a slice always shows the same depth whatever the
price does later in the month (a fixed base quantity, like a real book's size field).
"""

from __future__ import annotations

import math

from quant_assets.venues.profile import VenueProfile


def synthetic_qty(profile: VenueProfile, price: float, lot_size: float, size_precision: int) -> float:
    """``profile.synthetic_depth`` (quote currency) at ``price`` (quote currency per base unit)
    in base units: rounded down to the lot (never more than the declared depth), at least one
    lot, at the instrument's size precision."""
    if not (price > 0 and math.isfinite(price)):
        raise ValueError(f"synthetic depth needs a positive finite first price, got {price!r}")
    lots = max(1, math.floor(profile.synthetic_depth / price / lot_size + 1e-9))
    return round(lots * lot_size, max(size_precision, 0))


def note(qty: float, profile: VenueProfile, price: float, base: str, quote: str, what: str) -> str:
    """The run note saying which depth ``what`` (e.g. "quotes without sizes") were given."""
    return (f"{what}: each side taken as {qty:.10g} {base} deep (the venue profile's synthetic_depth "
            f"{profile.synthetic_depth:,.0f} {quote} at the first price {price:.10g})")
