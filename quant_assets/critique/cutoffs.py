"""What each critic model may already know about the market: its training-data cutoff.

The prompt withholds the calendar (:mod:`quant_assets.critique.prompt`), but a model trained
on data past a slice's month may still recognise the month from its figures and know what the
market did next. Each critique therefore records the model's cutoff beside it, with
``data_before_training_cutoff`` and a sentence when the slice's month is not after it.

Month granularity (``YYYY-MM``), as Anthropic publishes it. The warning compares with the
**training-data** cutoff (the latest data the model saw at all), not the earlier "reliable
knowledge" cutoff: a model may know something of the months between the two. A slice of the
cutoff month itself counts as before it (its data may be in the training set). A model not in
the table has an unknown cutoff: the flag is null and the sentence says to assume the worst;
never a guessed date. The rule critic has no training data: not applicable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Source of every figure below: the "Reliable knowledge cutoff" and "Training data cutoff"
#: rows of Anthropic's models overview (platform.claude.com/docs/en/about-claude/models/overview),
#: read on 2026-12-06 through several public copies of that table (the same figures in each); Haiku
#: 4.5's also on the docs' own zh-CN models overview (Feb 2025 / Jul 2025).
#: Anthropic's Transparency Hub (anthropic.com/transparency/model-report, updated 2026-02-20) gives
#: Sonnet 4.6 a "knowledge cutoff" of May 2025, earlier than the docs' reliable cutoff; the later
#: training-data figure used for the warning is the cautious one.
SOURCE = "https://platform.claude.com/docs/en/about-claude/models/overview"


@dataclass(frozen=True)
class Cutoff:
    """A model's published cutoffs, ``YYYY-MM``."""

    training_data: str
    reliable_knowledge: str


#: model id -> cutoffs; add a model here (with its source) when pricing.py gets it.
CUTOFFS: dict[str, Cutoff] = {
    "claude-opus-4-7": Cutoff(training_data="2026-01", reliable_knowledge="2026-01"),
    "claude-sonnet-4-6": Cutoff(training_data="2026-01", reliable_knowledge="2025-08"),
    "claude-haiku-4-5": Cutoff(training_data="2025-07", reliable_knowledge="2025-02"),
    "claude-haiku-4-5-20251001": Cutoff(training_data="2025-07", reliable_knowledge="2025-02"),
}


def cutoff_record(critic_kind: str, model: str, month: str) -> dict[str, Any]:
    """What a critique records about ``model``'s knowledge of ``month`` (``YYYY-MM``, the slice's
    calendar month, kept for people, never in the prompt): the cutoffs, their source,
    ``data_before_training_cutoff`` (True, False, or None when unknown or not applicable) and
    ``warning`` (a sentence, or None)."""
    if critic_kind == "rules":
        return {"applicable": False, "model": model, "training_data_cutoff": None, "reliable_knowledge_cutoff": None,
                "source": None, "data_before_training_cutoff": None,
                "warning": None, "note": "rule-based critic: no model, no training data, nothing it could remember"}
    cut = CUTOFFS.get(model)
    if cut is None:
        return {"applicable": True, "model": model, "training_data_cutoff": None, "reliable_knowledge_cutoff": None,
                "source": None, "data_before_training_cutoff": None,
                "warning": (f"the training-data cutoff of {model} is not in quant_assets/critique/cutoffs.py: unknown, so "
                            f"assume the model may know what the market did after {month}")}
    before = month <= cut.training_data  # YYYY-MM strings order as dates
    warning = (f"the data of {month} lies before the training-data cutoff of {model} ({cut.training_data}): the model "
               "may know what the market did next; the prompt withholds the calendar, but weigh the critique with "
               "that in mind" if before else None)
    return {"applicable": True, "model": model, "training_data_cutoff": cut.training_data,
            "reliable_knowledge_cutoff": cut.reliable_knowledge, "source": SOURCE,
            "data_before_training_cutoff": before, "warning": warning}
