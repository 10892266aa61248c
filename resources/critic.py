"""Which critic judges the backtests, as a Dagster ``ConfigurableResource``.

``mode = "auto"`` (the default) uses Anthropic when an API key is configured and the offline
rule critic otherwise, so the demo runs with no key and no network. The key comes from
``dg.EnvVar("ANTHROPIC_API_KEY")`` in the definitions: Dagster records the variable's name,
never its value, in run configs and the UI.
"""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import Field

from quant_assets.critique.critics import Critic, CritiqueFailed, RuleCritic

DEFAULT_MODEL = "claude-sonnet-4-6"  # = quant_assets.critique.anthropic_critic.DEFAULT_MODEL (kept import-free)


class CriticResource(dg.ConfigurableResource):
    """The LLM critic (Anthropic) or the offline rule critic."""

    mode: Literal["auto", "anthropic", "rules"] = Field(
        default="auto", description="auto: Anthropic when api_key is set, else the offline rules")
    api_key: str = Field(default="", description="Anthropic API key; set it with dg.EnvVar('ANTHROPIC_API_KEY')")
    model: str = Field(default=DEFAULT_MODEL, description="Anthropic model id")
    max_tokens: int = Field(default=2_000, description="output token limit per call")
    timeout_s: float = Field(default=60.0, description="time limit of one HTTP attempt, seconds")
    max_retries: int = Field(default=4, description="SDK retries on 408/409/429/5xx/overloaded/timeouts, with backoff")
    max_reasks: int = Field(default=2, description="re-asks when the answer fails the critique schema")
    reveal_symbol: bool = Field(default=False, description="send the real symbol instead of an alias")
    base_url: str = Field(default="", description="API base URL (empty: the SDK's default)")

    def http_client(self) -> object | None:
        """The ``httpx2.Client`` the SDK talks through; None: the SDK's own. Tests override this
        to put a mock transport under the real client."""
        return None

    @property
    def uses_anthropic(self) -> bool:
        return self.mode == "anthropic" or (self.mode == "auto" and bool(self.api_key))

    def critic(self) -> Critic:
        if not self.uses_anthropic:
            return RuleCritic()
        if not self.api_key:
            raise CritiqueFailed("mode is 'anthropic' but no API key is set: export ANTHROPIC_API_KEY")
        from quant_assets.critique.anthropic_critic import AnthropicCritic

        return AnthropicCritic(
            self.api_key, model=self.model, max_tokens=self.max_tokens, timeout_s=self.timeout_s,
            max_retries=self.max_retries, max_reasks=self.max_reasks, http_client=self.http_client(),
            base_url=self.base_url or None,
        )
