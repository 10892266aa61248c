"""Books, not single lines: named universes of instruments and the portfolio roll-ups over them.

Domain code only (no Dagster): :mod:`.universes` reads ``universes.toml``; :mod:`.rollup`
combines the daily returns of strategy × instrument lines into one portfolio.
"""
