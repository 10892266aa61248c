"""The synthetic feed's depth mode (quant_assets.book.synthetic): deterministic, a canonical book
Parquet the landing zone recognises, and a book that, replayed, agrees with the L1 ticks it was
built from (top = quote at every quote, never crossed, trades deplete the touched level)."""

from __future__ import annotations

import math

import polars as pl
import pytest

from quant_assets.book import formats
from quant_assets.book.schema import BOOK_SCHEMA, F_LAST
from quant_assets.book.synthetic import book_rows, grid_of, write_book_landing
from quant_assets.ingest.synthetic import SyntheticSpec, generate

EVENTS = 3_000


# a 1-tick grid, a 600-tick one, and FX (1e-5 tick, 1,000-unit lots)
@pytest.fixture(scope="module", params=["SOLUSDT", "BTCUSDT", "EURUSD"])
def month(request):
    spec = SyntheticSpec(request.param, "2024-01", seed=7, events=EVENTS)
    ticks = generate(spec)
    return spec, ticks, book_rows(spec, ticks)


def replay(rows: pl.DataFrame):
    """Apply the rows message by message with a dict per side (a pure-Python L2 book, apart from
    the code under test); yield (seq, message rows, book before, book after) per message. Checks
    each row's action against the book: add of an absent level, update/delete of a present one."""
    book = {1: {}, -1: {}}
    msg: list[dict] = []
    before = None
    for row in rows.iter_rows(named=True):
        if not msg:
            before = {1: dict(book[1]), -1: dict(book[-1])}
        msg.append(row)
        side, px, size, action = row["side"], row["price"], row["size"], row["action"]
        assert size >= 0, row
        if action == "clear":
            assert side == 0, row
            book = {1: {}, -1: {}}
        elif action == "add":
            assert px not in book[side] and size > 0, row
            book[side][px] = size
        elif action == "update":
            assert px in book[side] and size > 0, row
            book[side][px] = size
        else:
            assert action == "delete" and px in book[side] and size == 0, row
            del book[side][px]
        if row["flags"] & F_LAST:
            assert len({r["seq"] for r in msg}) == 1, msg
            yield row["seq"], msg, before, book
            msg = []
    assert not msg, "the last message has no F_LAST row"


def test_book_agrees_with_the_ticks(month):
    spec, ticks, rows = month
    assert rows.schema == pl.Schema(BOOK_SCHEMA)
    kinds = ticks["kind"].cast(pl.String).to_list()
    tick_rows = ticks.to_dicts()
    first_quote = kinds.index("quote")
    seqs = rows["seq"].to_list()
    assert rows["ts_recv"].is_sorted()
    assert rows.filter(pl.col("is_snapshot"))["seq"].unique().to_list() == [2 * first_quote + 2]
    snap = rows.filter(pl.col("is_snapshot"))
    assert snap["action"].cast(pl.String).to_list() == ["clear"] + ["add"] * (snap.height - 1)
    assert snap.height == 1 + 2 * 5

    quotes_checked = trades_checked = 0
    last_seq = -1
    for seq, msg, before, book in replay(rows):
        assert seq > last_seq  # strictly increasing between messages
        last_seq = seq
        bids, asks = book[1], book[-1]
        if bids and asks:
            assert max(bids) < min(asks), f"crossed after seq {seq}"
        assert all(q > 0 for q in (*bids.values(), *asks.values()))
        k, pre = divmod(seq - 2, 2)
        if pre:  # a trade's preceding move: only the next message depletes
            assert kinds[k + 1] == "trade"
            continue
        t = tick_rows[k]
        assert all(r["ts_recv"] == t["ts_recv"] and r["ts_event"] == t["ts_event"] for r in msg)
        if kinds[k] == "quote":
            # the top is the quote, bit for bit
            assert max(bids) == t["bid_px"] and bids[t["bid_px"]] == t["bid_sz"]
            assert min(asks) == t["ask_px"] and asks[t["ask_px"]] == t["ask_sz"]
            assert len(bids) == len(asks) == 5
            quotes_checked += 1
        else:
            # one row: the touched level (the best on the aggressed side, at the trade price) loses
            # exactly the traded size
            touched = -1 if t["side"] > 0 else 1
            assert len(msg) == 1 and msg[0]["side"] == touched and msg[0]["price"] == t["price"]
            # its book before: after the preceding move (seq - 1) when there was one
            prev = before[touched]
            best = min(prev) if touched == -1 else max(prev)
            assert best == t["price"] and prev[best] >= t["size"]
            after = book[touched].get(t["price"], 0.0)
            assert math.isclose(prev[best] - t["size"], after, abs_tol=1e-9)
            assert after < prev[best]
            trades_checked += 1
    assert quotes_checked > 100 and trades_checked > 100
    n_quotes = kinds.count("quote")
    assert quotes_checked == n_quotes
    assert trades_checked == sum(1 for i, kd in enumerate(kinds) if kd == "trade" and i > first_quote)
    assert set(seqs) >= {2 * k + 2 for k in range(first_quote, len(kinds))}


def test_queues_persist_and_change(month):
    """Deeper levels keep their price across quotes (the grid is absolute) and their queues see
    seeded adds and cancels: quote messages update levels other than the quoted top."""
    spec, ticks, rows = month
    n_msgs = rows["seq"].n_unique()
    adds = rows.filter(pl.col("action") == "add").height
    # far fewer adds than a book rebuilt at every message (2 x 5 levels)
    assert adds < 0.8 * 10 * n_msgs
    quotes = ticks.with_row_index("k").filter(pl.col("kind") == "quote").select(
        seq=pl.col("k").cast(pl.Int64) * 2 + 2, bid_px="bid_px", ask_px="ask_px")
    prev = rows.with_columns(prev=pl.col("size").shift(1).over("side", "price"))  # the level's last size
    deeper = prev.filter(pl.col("action") == "update").join(quotes, on="seq").filter(
        pl.col("price") != pl.when(pl.col("side") == 1).then("bid_px").otherwise("ask_px"))
    assert deeper.height > 0.1 * quotes.height  # P_ADD + P_CANCEL = 0.6 per side, on persisting levels
    assert deeper.filter(pl.col("size") > pl.col("prev")).height > 0  # queue adds
    assert deeper.filter(pl.col("size") < pl.col("prev")).height > 0  # cancels


def test_deterministic_and_recognised(tmp_path):
    from quant_assets.lake.store import Lake

    spec = SyntheticSpec("SOLUSDT", "2024-02", seed=3, events=EVENTS)
    paths = [write_book_landing(Lake.at(tmp_path / name), spec) for name in ("a", "b")]
    assert paths[0].read_bytes() == paths[1].read_bytes()
    other = write_book_landing(Lake.at(tmp_path / "c"), SyntheticSpec("SOLUSDT", "2024-02", seed=4, events=EVENTS))
    assert other.read_bytes() != paths[0].read_bytes()
    assert paths[0].parent.name == "SOLUSDT"

    fmt = formats.sniff(paths[0], paths[0])
    assert fmt is not None and fmt.name == formats.CANONICAL_NAME
    staged = fmt.parse(paths[0], paths[0], "SOLUSDT").lazy().collect()
    written = pl.read_parquet(paths[0])
    assert staged["reason"].null_count() == staged.height
    assert staged.select(list(BOOK_SCHEMA)).equals(written.select(list(BOOK_SCHEMA)).cast(BOOK_SCHEMA))


def test_chunks_do_not_change_the_rows(month, monkeypatch):
    """The kernel writes in chunks and carries the book across them: any chunk size, same rows."""
    from quant_assets.book import synthetic as book_synthetic

    spec, ticks, rows = month
    monkeypatch.setattr(book_synthetic, "CHUNK_ROWS", 97)
    assert book_rows(spec, ticks).equals(rows)


def test_bad_arguments():
    ticks = generate(SyntheticSpec("SOLUSDT", "2024-01", events=500))
    with pytest.raises(ValueError, match="levels 0"):
        grid_of(ticks, levels=0)
    with pytest.raises(ValueError, match="no quote"):
        grid_of(ticks.filter(pl.col("kind") == "trade"))
