"""The Anthropic critic: the official SDK, structured output by a forced tool call.

* The request: ``tools=[submit_critique]`` with ``tool_choice`` forcing it; the system prompt
  as two text blocks (rules, then the strategy's dictionary) with ``cache_control`` on the last,
  so every slice of a strategy after the first reads the prefix from the prompt cache; the
  slice's data as the user message.
* Transport faults: the SDK's own retries (408, 409, 429, 5xx, overloaded, connection errors,
  timeouts) with backoff, ``max_retries`` times, each attempt bounded by ``timeout_s``.
* Unreadable replies (a body that is not JSON, or not a message): :class:`CritiqueFailed` at
  once (not re-asked: the fault is in transport, not in the model's answer).
* Invalid answers (no tool call, or input that fails the schema): re-asked with the validation
  error as the tool result, at most ``max_reasks`` times, then :class:`CritiqueFailed`.
* Usage (input, output, cache write, cache read tokens) summed over the calls, with the cost
  at the published price (:mod:`quant_assets.critique.pricing`); a failure carries what was
  spent before it, and whether a request may have been billed unseen (for the spend ledger).
* :meth:`AnthropicCritic.worst_case_usd`: an upper bound on what one critique can cost, from
  the prompt's size, ``max_tokens`` and ``max_reasks``, checked against the budget before any
  call (:mod:`quant_assets.critique.budget`).

The API key is held by the client only; every error message leaving this module is scrubbed
of it. The SDK (and its httpx2) are imported when a critic is built, never at module load.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from quant_assets.critique.critics import CriticAnswer, CritiqueFailed
from quant_assets.critique.pricing import cost_usd, worst_case_cost_usd
from quant_assets.critique.prompt import TOOL_NAME, Prompt
from quant_assets.critique.schema import Critique
from quant_assets.strategies.spec import StrategySpec

#: A current Sonnet of the SDK's model list, not marked end-of-life (claude-sonnet-4-5 is, on
#: 2026-11-30); its price is in pricing.py.
DEFAULT_MODEL = "claude-sonnet-4-6"
USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
#: The validation error sent back in a re-ask is cut to this many UTF-8 bytes, so that what a
#: re-ask adds to the conversation is bounded (and so the worst-case cost).
REASK_ERROR_BYTES = 2_000
#: Tokens a request carries beyond its texts: the tool-use system prompt Anthropic adds for a
#: forced tool (313-346 tokens on current models, per its tool-use pricing notes), message and
#: role framing. Rounded well up: it enters an upper bound.
REQUEST_OVERHEAD_TOKENS = 1_000


def _cut(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8 (never inside a character)."""
    return text.encode()[:max_bytes].decode(errors="ignore")


def upper_bound_tokens(text: str) -> int:
    """At most as many tokens as ``text`` has UTF-8 bytes: a byte-level BPE tokenizer never
    makes a token of less than one byte. Typical English and JSON take 3-4 bytes a token, so
    this overstates by that much: it is meant for a budget check, not for a forecast."""
    return len(text.encode())


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` (and of its tail, as some messages print a
    key's last characters) replaced."""
    if not secret:
        return text
    out = text.replace(secret, "[REDACTED]")
    if len(secret) >= 12:
        out = out.replace(secret[-8:], "[REDACTED]")
    return out


class AnthropicCritic:
    kind = "anthropic"

    def __init__(self, api_key: str, model: str = DEFAULT_MODEL, max_tokens: int = 2_000, timeout_s: float = 60.0,
                 max_retries: int = 4, max_reasks: int = 2, http_client: Any = None, base_url: str | None = None) -> None:
        import anthropic

        if not api_key:
            raise CritiqueFailed("no API key: set ANTHROPIC_API_KEY, or use the offline rule critic")
        self.model = model
        self.max_tokens = max_tokens
        self.max_reasks = max_reasks
        self._secret = api_key
        kwargs: dict[str, Any] = {"api_key": api_key, "timeout": timeout_s, "max_retries": max_retries}
        if http_client is not None:
            kwargs["http_client"] = http_client
        if base_url:
            kwargs["base_url"] = base_url
        self._client = anthropic.Anthropic(**kwargs)

    def __repr__(self) -> str:  # never show the key, even in a debugger or a log line
        return f"AnthropicCritic(model={self.model!r})"

    def worst_case_usd(self, prompt: Prompt, extra_bytes: int = 0) -> float | None:
        """An upper bound on what :meth:`critique` of ``prompt`` can cost (USD), or None when the
        model has no price: the prompt's texts and tool schema at one token per byte plus
        :data:`REQUEST_OVERHEAD_TOKENS`, ``max_tokens`` of output, for the first ask and each of
        ``max_reasks`` re-asks, each re-ask reading one more answer (``max_tokens``) and one more
        correction (:data:`REASK_ERROR_BYTES` and its wording) than the call before. SDK retries
        after a 429, 5xx or overloaded answer are not billed and not counted (see README).
        ``extra_bytes``: the conversation a later round adds (:meth:`refine`: earlier answers and
        their results), at one token per byte and a turn's framing per round."""
        texts = (*prompt.system, prompt.user_text, json.dumps(prompt.tool, separators=(",", ":")))
        first = sum(upper_bound_tokens(t) for t in texts) + REQUEST_OVERHEAD_TOKENS + extra_bytes
        # The answer echoed back (its output tokens, re-read as input), the cut error with its
        # wording (bytes bound tokens), and a turn's framing again.
        growth = self.max_tokens + REASK_ERROR_BYTES + 200 + REQUEST_OVERHEAD_TOKENS
        return worst_case_cost_usd(self.model, first, self.max_tokens, self.max_reasks + 1, growth)

    def _system(self, prompt: Prompt) -> list[dict[str, Any]]:
        rules, dictionary = prompt.system
        return [
            {"type": "text", "text": rules},
            {"type": "text", "text": dictionary, "cache_control": {"type": "ephemeral"}},
        ]

    def critique(self, prompt: Prompt, spec: StrategySpec) -> CriticAnswer:
        return self._ask(prompt, [{"role": "user", "content": prompt.user_text}])

    def refine(self, prompt: Prompt, spec: StrategySpec, history: list[dict[str, Any]]) -> CriticAnswer:
        """A later round: the conversation so far, each earlier answer as the tool call it was and
        its in-sample results as that call's result (:func:`quant_assets.critique.rounds.feedback`)."""
        from quant_assets.critique.rounds import feedback

        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt.user_text}]
        for r, h in enumerate(history, start=1):
            tool_id = f"toolu_round{r}"  # ids only pair a call with its result within the request
            messages.append({"role": "assistant", "content": [
                {"type": "tool_use", "id": tool_id, "name": TOOL_NAME, "input": h["critique"]}]})
            messages.append({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": tool_id, "content": feedback(h["in_sample"])}]})
        return self._ask(prompt, messages)

    def _ask(self, prompt: Prompt, messages: list[dict[str, Any]]) -> CriticAnswer:
        import anthropic

        usage = dict.fromkeys(USAGE_FIELDS, 0)
        notes: list[str] = []

        def failed(message: str, billing_unknown: bool = False) -> CritiqueFailed:
            """The failure, with what the replies so far cost: ``billing_unknown`` when this
            request may have been processed (and billed) without its usage reaching us."""
            return CritiqueFailed(redact(message, self._secret), dict(usage), cost_usd(self.model, usage), billing_unknown)

        for attempt in range(1, self.max_reasks + 2):
            try:
                reply = self._client.messages.create(
                    model=self.model, max_tokens=self.max_tokens, system=self._system(prompt),
                    tools=[prompt.tool], tool_choice={"type": "tool", "name": TOOL_NAME}, messages=messages,
                )
            except anthropic.APITimeoutError as exc:
                raise failed(f"{self.model}: no answer within the timeout after retries ({exc})", billing_unknown=True) from None
            except anthropic.APIStatusError as exc:  # an error status is not billed
                raise failed(f"{self.model}: HTTP {exc.status_code} after retries: {exc.message}") from None
            except anthropic.APIConnectionError as exc:  # (the connection may have dropped after the model ran)
                raise failed(f"{self.model}: connection failed after retries: {exc}", billing_unknown=True) from None
            except (anthropic.APIResponseValidationError, ValueError) as exc:  # ValueError: a body that is not JSON
                raise failed(f"{self.model}: unreadable reply ({type(exc).__name__}: {str(exc)[:200]})",
                             billing_unknown=True) from None
            if not isinstance(getattr(reply, "content", None), list):
                # The SDK builds models leniently: a 200 of another shape arrives with no content.
                raise failed(f"{self.model}: unreadable reply (no message content in a {type(reply).__name__})",
                             billing_unknown=True)
            for k in USAGE_FIELDS:
                usage[k] += int(getattr(reply.usage, k, 0) or 0) if reply.usage is not None else 0
            block = next((b for b in reply.content if getattr(b, "type", None) == "tool_use" and b.name == TOOL_NAME), None)
            if block is None:
                error, tool_id = f"no call of the tool {TOOL_NAME} (stop_reason {reply.stop_reason})", None
            else:
                try:
                    critique = Critique.model_validate(block.input)
                except ValidationError as exc:
                    error, tool_id = f"the tool input does not match the schema: {exc.errors(include_url=False)}", block.id
                else:
                    return CriticAnswer(critique, self.kind, self.model, usage, cost_usd(self.model, usage), attempt, notes)
            notes.append(f"attempt {attempt}: {error}"[:500])
            if attempt > self.max_reasks:
                break
            # Re-ask: show the model its answer and what was wrong with it.
            messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]})
            if tool_id:
                messages.append({"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": tool_id, "is_error": True,
                     "content": f"Invalid: {_cut(error, REASK_ERROR_BYTES)}. Call {TOOL_NAME} again with input that matches its schema."}]})
            else:
                messages.append({"role": "user", "content": f"Answer only by calling the tool {TOOL_NAME}."})
        raise failed(f"{self.model}: no valid critique after {self.max_reasks + 1} answers; last problem: {notes[-1] if notes else '?'}")
