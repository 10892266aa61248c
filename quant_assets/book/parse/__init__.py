"""Book (depth) source formats, one module per source; each exposes a
:class:`~quant_assets.book.formats.BookFormat` and registers it on import (in the order below,
the order formats are tried: the most specific content tests first).

- :mod:`.binance_ws`: hftbacktest-collector captures of Binance websocket streams (depth diffs,
  REST snapshots, bookTicker and trades as ticks), and a REST snapshot saved as its own file.
- :mod:`.binance_csv`: Binance historical order-book CSVs (depth_snap / depth_update files).
- :mod:`.tardis`: Tardis incremental_book_L2 (with its snapshot runs) and book_snapshot_N.
- :mod:`.databento`: Databento DBN MBO (L3) and MBP-10 (L2), plain or zstd; a DBN of another schema
  is claimed only to be refused with its schema named.
"""

from __future__ import annotations

from quant_assets.book.formats import BookFormat
from quant_assets.book.parse import binance_csv, binance_ws, databento, tardis

#: This package's formats, in check order (each already registered with the book registry).
PARSERS: list[BookFormat] = [binance_ws.CAPTURE, binance_ws.REST_SNAPSHOT, binance_csv.FORMAT, tardis.INCREMENTAL, tardis.SNAPSHOT, databento.MBO, databento.MBP10, databento.OTHER]
