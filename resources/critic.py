"""Which critic judges the backtests, as a Dagster ``ConfigurableResource``.

``mode = "auto"`` (the default) uses Anthropic when an API key is configured and the offline
rule critic otherwise, so the demo runs with no key and no network. The key comes from
``dg.EnvVar("ANTHROPIC_API_KEY")`` in the definitions: Dagster records the variable's name,
never its value, in run configs and the UI.

``budget_usd_per_day`` and ``budget_usd_per_run`` cap what the Anthropic critic may spend
(:mod:`quant_assets.critique.budget`); the definitions set them from
``$QUANT_CRITIC_BUDGET_USD_DAY`` and ``$QUANT_CRITIC_BUDGET_USD_RUN``.
"""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import Field

from quant_assets.critique.budget import Budget, SpendLedger
from quant_assets.critique.critics import Critic, CritiqueFailed, RuleCritic
from quant_assets.lake.store import Lake

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
    budget_usd_per_day: float = Field(
        default=0.0, description="most the Anthropic critic may spend per UTC day, all runs together (USD; 0: no limit)")
    budget_usd_per_run: float = Field(
        default=0.0, description="most the Anthropic critic may spend in one run (USD; 0: no limit)")

    def http_client(self) -> object | None:
        """The ``httpx2.Client`` the SDK talks through; None: the SDK's own. Tests override this
        to put a mock transport under the real client."""
        return None

    @property
    def uses_anthropic(self) -> bool:
        return self.mode == "anthropic" or (self.mode == "auto" and bool(self.api_key))

    def budget(self) -> Budget:
        return Budget.of(self.budget_usd_per_day, self.budget_usd_per_run)

    def spend_ledger(self, lake: Lake, run_id: str, run_started: float | None = None) -> SpendLedger:
        """The spend ledger a run checks its paid calls against (the rule critic never uses it)."""
        return SpendLedger(lake, self.budget(), run_id=run_id, run_started=run_started)

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
