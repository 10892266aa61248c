"""Analytics on backtest results: plots now; metrics and robustness later."""
