"""The judge: prompts from metric sets, the Anthropic and offline critics, checked suggestions,
and their out-of-sample validation. No Dagster here."""
