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
  at the published price (:mod:`quant_assets.critique.pricing`).

The API key is held by the client only; every error message leaving this module is scrubbed
of it. The SDK (and its httpx2) are imported when a critic is built, never at module load.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from quant_assets.critique.critics import CriticAnswer, CritiqueFailed
from quant_assets.critique.pricing import cost_usd
from quant_assets.critique.prompt import TOOL_NAME, Prompt
from quant_assets.critique.schema import Critique
from quant_assets.strategies.spec import StrategySpec

#: A current Sonnet of the SDK's model list, not marked end-of-life (claude-sonnet-4-5 is, on
#: 2026-11-30); its price is in pricing.py.
DEFAULT_MODEL = "claude-sonnet-4-6"
USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


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
        for attempt in range(1, self.max_reasks + 2):
            try:
                reply = self._client.messages.create(
                    model=self.model, max_tokens=self.max_tokens, system=self._system(prompt),
                    tools=[prompt.tool], tool_choice={"type": "tool", "name": TOOL_NAME}, messages=messages,
                )
            except anthropic.APITimeoutError as exc:
                raise CritiqueFailed(redact(f"{self.model}: no answer within the timeout after retries ({exc})", self._secret)) from None
            except anthropic.APIStatusError as exc:
                raise CritiqueFailed(redact(f"{self.model}: HTTP {exc.status_code} after retries: {exc.message}", self._secret)) from None
            except anthropic.APIConnectionError as exc:
                raise CritiqueFailed(redact(f"{self.model}: connection failed after retries: {exc}", self._secret)) from None
            except (anthropic.APIResponseValidationError, ValueError) as exc:  # ValueError: a body that is not JSON
                raise CritiqueFailed(redact(f"{self.model}: unreadable reply ({type(exc).__name__}: {str(exc)[:200]})", self._secret)) from None
            if not isinstance(getattr(reply, "content", None), list):
                # The SDK builds models leniently: a 200 of another shape arrives with no content.
                raise CritiqueFailed(redact(f"{self.model}: unreadable reply (no message content in a {type(reply).__name__})", self._secret))
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
                     "content": f"Invalid: {error}. Call {TOOL_NAME} again with input that matches its schema."}]})
            else:
                messages.append({"role": "user", "content": f"Answer only by calling the tool {TOOL_NAME}."})
        raise CritiqueFailed(redact(
            f"{self.model}: no valid critique after {self.max_reasks + 1} answers; last problem: {notes[-1] if notes else '?'}",
            self._secret,
        ))
