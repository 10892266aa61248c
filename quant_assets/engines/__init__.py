"""Engine adapters: NautilusTrader (``nautilus.py``) and hftbacktest (``hft.py``), both
returning :class:`quant_assets.engines.result.EngineRun`. Importing this package is cheap;
the engines themselves are imported inside the functions that run them."""

#: Bump an adapter's version when its behaviour (fill handling, conversion, sampling)
#: changes what a backtest produces: every slice of that engine becomes stale.
#: a3: the venue profile (order latency, fill model with gapped stops at the next touch,
#: queue model, declared depth of size-less quotes) replaces the fixed settings.
#: a4 (nautilus): time bars built like the research layer's (left-open, no empty bars) for
#: strategies that signal on bars; the previous month's end fed first as a warm-up.
#: a4 (hftbacktest): the slice's order-book depth streamed by day where it has a book (the queue
#: model on the real depth, L3 FIFO on depth-L3); on L1 data the conservative risk_adverse queue
#: model and the result labelled L1-approximate.
#: a5 (nautilus): an L2_MBP/L3_MBO venue book fed OrderBookDeltas by day for strategies that
#: declare depth; market orders immediate-or-cancel on a depth book.
ADAPTER_VERSIONS = {"nautilus": "nautilus_trader-1.221.0/a5", "hftbacktest": "hftbacktest-2.4.4/a4"}
