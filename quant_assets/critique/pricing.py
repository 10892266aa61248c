"""Published prices of the models a critique may use, to put a cost on each call.

USD per million tokens, from Anthropic's pricing page (platform.claude.com/docs/en/about-claude/pricing),
as read on 2026-11-25: base input, 5-minute cache writes, cache hits, output. A model that is
not listed gets no cost (``None``), never a guessed one; add it here when you use it.
"""

from __future__ import annotations

from collections.abc import Mapping

#: model id -> (input, cache write 5 min, cache read, output), USD per million tokens
PRICES: dict[str, tuple[float, float, float, float]] = {
    "claude-sonnet-4-6": (3.00, 3.75, 0.30, 15.00),
    "claude-opus-4-7": (5.00, 6.25, 0.50, 25.00),
    "claude-haiku-4-5": (1.00, 1.25, 0.10, 5.00),
    "claude-haiku-4-5-20251001": (1.00, 1.25, 0.10, 5.00),
}


def cost_usd(model: str, usage: Mapping[str, int]) -> float | None:
    """Cost of ``usage`` (the API's token counts) on ``model``, or None if it has no price here.
    ``input_tokens`` excludes the cached tokens, which the API reports separately."""
    price = PRICES.get(model)
    if price is None:
        return None
    p_in, p_write, p_read, p_out = price
    return (
        usage.get("input_tokens", 0) * p_in
        + usage.get("cache_creation_input_tokens", 0) * p_write
        + usage.get("cache_read_input_tokens", 0) * p_read
        + usage.get("output_tokens", 0) * p_out
    ) / 1e6
