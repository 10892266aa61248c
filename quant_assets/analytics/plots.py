"""Small PNG plots for asset metadata (matplotlib, headless Agg backend, imported lazily)."""

from __future__ import annotations

import base64
import io

import numpy as np
import polars as pl

#: Points drawn per curve: a month of 1-second samples has 2.6M; the eye sees ~1000.
MAX_POINTS = 2_000


def _thin(df: pl.DataFrame, n: int = MAX_POINTS) -> pl.DataFrame:
    return df if len(df) <= n else df.gather_every(int(np.ceil(len(df) / n)))


def equity_png(equity: pl.DataFrame, title: str) -> bytes:
    """Equity (top) and drawdown in % (bottom) against UTC time, as PNG bytes.
    ``equity`` has ``ts`` (int64 ns) and ``equity`` (quote currency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = _thin(equity.select("ts", "equity"))
    t = df["ts"].cast(pl.Datetime("ns")).to_numpy()
    eq = df["equity"].to_numpy()
    dd = 100.0 * (eq / np.maximum.accumulate(eq) - 1.0) if len(eq) else eq
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 4), dpi=80, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    try:
        ax1.plot(t, eq, lw=0.8, color="tab:blue")
        ax1.set_title(title, fontsize=10)
        ax1.set_ylabel("equity")
        ax2.fill_between(t, dd, 0, color="tab:red", alpha=0.5, lw=0)
        ax2.set_ylabel("drawdown %")
        fig.autofmt_xdate()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


def markdown_image(png: bytes, alt: str) -> str:
    """Dagster has no image metadata type: embed the PNG as a data URI in markdown."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
