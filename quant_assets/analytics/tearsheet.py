"""The quantstats HTML tearsheet of a roll-up.

Always on daily returns (quantstats' report is quadratic in the number of periods: a year of
minutes takes ~10 min), never with a benchmark (a string benchmark downloads one; we have no
network and no benchmark to compare a crypto strategy with), always written to ``output``
(without it quantstats tries to open a browser download).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pandas as pd


def write_tearsheet(daily: pd.Series, path: Path, title: str, trading_days: int) -> None:
    """Write the tearsheet of ``daily`` returns (tz-naive UTC dates) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import quantstats as qs

    # quantstats asks for Arial, which a headless Linux box lacks: one warning per text element.
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    returns = daily.copy()
    returns.name = "Strategy"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            qs.reports.html(returns, benchmark=None, output=str(path), title=title, periods_per_year=trading_days,
                            download_filename=path.name)
        finally:
            plt.close("all")
