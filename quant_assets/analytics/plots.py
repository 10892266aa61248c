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
        return _png(fig)
    finally:
        plt.close(fig)


def _png(fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """Dagster has no image metadata type: embed the PNG as a data URI in markdown."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def heatmap_png(table: pl.DataFrame, x: str, y: str, value: str, title: str) -> bytes:
    """``value`` over the grid of ``x`` (columns) × ``y`` (rows) as a PNG heat map; missing
    combinations are blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, ys = sorted(table[x].unique().to_list()), sorted(table[y].unique().to_list())
    grid = np.full((len(ys), len(xs)), np.nan)
    xi, yi = {v: i for i, v in enumerate(xs)}, {v: i for i, v in enumerate(ys)}
    for a, b_, v in table.select(x, y, value).iter_rows():
        grid[yi[b_], xi[a]] = np.nan if v is None else v
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=80)
    try:
        im = ax.imshow(grid, aspect="auto", origin="lower", cmap="RdYlGn",
                       extent=(xs[0], xs[-1], ys[0], ys[-1]) if len(xs) > 1 and len(ys) > 1 else None)
        fig.colorbar(im, ax=ax, label=value)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(title, fontsize=10)
        return _png(fig)
    finally:
        plt.close(fig)


def scorecard_png(table: pl.DataFrame) -> bytes:
    """The judge's scorecard as a PNG: per critic, the share of its tested suggestions that
    improved out of sample beside the null critic's share on the same slices, each bar labelled
    improved/tested, the one-sided p-value above each pair. ``table``: rows of
    :data:`quant_assets.analytics.scorecard.SCHEMA`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(table.iter_rows(named=True))
    x = np.arange(len(rows))
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(rows) + 2), 4.5), dpi=80)
    try:
        for offset, arm, colour, name in ((-width / 2, "critic", "tab:blue", "critic"),
                                          (width / 2, "null", "tab:grey", "null critic (random changes)")):
            shares = [100 * (r[f"{arm}_share"] or 0.0) for r in rows]
            bars = ax.bar(x + offset, shares, width, color=colour, label=name)
            for bar, r in zip(bars, rows):
                text = f"{r[f'{arm}_improved']}/{r[f'{arm}_tested']}" if r[f"{arm}_tested"] else "none"
                ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
        for i, r in enumerate(rows):
            p = "p n/a" if r["p_value"] is None else f"p={r['p_value']:.2g}"
            ax.annotate(p, (x[i], 108), ha="center", fontsize=9)
        ax.set_xticks(x, [r["critic"] for r in rows], fontsize=8)
        ax.set_ylim(0, 118)
        ax.set_ylabel("% of tested changes improved")
        ax.set_title("critic vs null critic: share of tested changes\nwhose Sharpe on M+1 beats the baseline's", fontsize=10)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
        return _png(fig)
    finally:
        plt.close(fig)
