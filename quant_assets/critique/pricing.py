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


def worst_case_cost_usd(model: str, input_tokens: int, max_output_tokens: int, attempts: int = 1,
                        growth_tokens: int = 0) -> float | None:
    """An upper bound on the cost of ``attempts`` calls on ``model`` (a first ask and its
    re-asks), or None if it has no price here. The first call reads ``input_tokens``; each
    later one reads ``growth_tokens`` more than the one before (the answer and the correction
    added to the conversation); every call writes ``max_output_tokens``. Every input token is
    priced at the dearest input rate (a cache write costs more than a plain read), so whatever
    part of the prompt the cache serves, the bound holds."""
    price = PRICES.get(model)
    if price is None:
        return None
    p_in, p_write, p_read, p_out = price
    dearest_input = max(p_in, p_write, p_read)
    total_input = sum(input_tokens + k * growth_tokens for k in range(attempts))
    return (total_input * dearest_input + attempts * max_output_tokens * p_out) / 1e6
