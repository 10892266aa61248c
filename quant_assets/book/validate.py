"""The rules a month of staged book rows must pass, and the compiled pass that applies them while
it rebuilds the book (:func:`run_chunk`, driven day by day by :mod:`quant_assets.book.build`).

Units. The sorted stream is cut into *messages* (rows sharing ``seq`` and ``ts_recv``, the last
one flagged :data:`~quant_assets.book.schema.F_LAST`) and *snapshots* (a run of ``is_snapshot``
rows: it begins at a ``clear`` or at the first snapshot row after an update, and is published as
one message: one ``clear`` row, then its levels or orders, ``seq`` of its first row, F_LAST on its
last row).

Continuity (per source format, :attr:`BookFormat.continuity`; ``u`` = ``seq``, ``U`` =
``seq_first``, ``pu`` = ``seq_prev``):

- ``next`` (Binance spot): ``U == previous u + 1``; after a snapshot of ``lastUpdateId`` L the first
  update must have ``U <= L + 1 <= u``; an update with ``u <= L`` is already in it (dropped).
- ``prev`` (Binance USD-M / COIN-M futures): ``pu == previous u``; after a snapshot L the first
  update must have ``U <= L <= u``; ``u < L`` is already in it.
- ``increasing`` (Databento ``sequence``, which a venue numbers per channel, so an instrument's
  own sequence has holes): ``seq`` must increase; a venue's own gap flag arrives as a rejected
  row (see below).
- ``none`` (Tardis, whose ``seq`` is the file's line): nothing to check.

The rules, and what each does (blocking: the month is not published, the previous partition
stays, the failure names the row; otherwise the rows go to the quarantine with the reason and the
span is recorded in the partition's ``manifest.json``):

1. **negative size** (or NaN) on an accepted row: blocking. No venue sends one; it means the
   source is not absolute sizes (a misread format), so no book built from it can be trusted.
2. **crossed book** (best bid >= best ask after a message's last row, or after a snapshot):
   blocking. The reconstruction is wrong (a missed delete, a wrong side or order); an engine
   would match against an impossible book.
3. **sequence gap** (continuity broken): the message and every update after it are quarantined
   until the next snapshot, which resets the book (its ``clear`` carries F_GAP_RESET). Recorded
   as a gap span. Blocking only when no snapshot follows in the month (an *unrecovered* gap).
4. **snapshot older than the updates that follow** (the first update after a snapshot does not
   reach back to it): a gap starting right after the snapshot (rule 3).
5. **snapshot older than the updates already applied** (``seq`` below the last applied ``u``, or
   for sources without sequence an earlier ``ts_event``): the snapshot is quarantined, the book
   kept.
6. **updates before the first snapshot**: the book is unknown, so they are quarantined. With
   ``next``/``prev`` continuity they are first held back (at most :data:`BUFFER_ROWS` rows of the
   same day), as Binance's own procedure says: when the snapshot arrives, those it already holds
   are dropped and the rest applied after it, re-stamped with the snapshot's ``ts_recv`` (the
   earliest time the combined book was knowable). Recorded as a span; blocking when the month
   has updates but never a snapshot to start from.
7. **a message with a rejected row** (a field that did not parse, a venue's bad-book flag): the
   book is unknown from there: a gap (rule 3). In a source without sequence numbers (``none``,
   ``increasing``) a wholly rejected message starts a gap too (a lost update cannot be detected
   otherwise); with ``next``/``prev`` a wholly rejected message (a truncated line) is left out
   and continuity judges whether it mattered. Rows of another instrument (a multi-instrument
   file: ``formats.FOREIGN_MARK``) never reach the stream: they are not this book's updates.
8. **duplicate** (``u`` not above the last applied): quarantined, no gap (an overlap of captures).
9. **L3 inconsistency** (an update or delete of an unknown order, an add of a known id): a gap.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from quant_assets.book.replay import (
    ADD, CLEAR, NEED_LEVELS, NEED_ORDERS, OK, _snapshot_l3, apply_l2, apply_l3, crossed,
)

#: Continuity modes (per row, from its source's format).
M_NONE, M_NEXT, M_PREV, M_INCREASING = 0, 1, 2, 3
MODES = {"none": M_NONE, "next": M_NEXT, "prev": M_PREV, "increasing": M_INCREASING}

#: Row statuses written by :func:`run_chunk`.
ST_EMIT = 0           # published
ST_EXCLUDED = 1       # rejected at staging (its reason is in the staging quarantine)
ST_PRESNAP = 2        # before the first snapshot
ST_GAP = 3            # inside a gap, until the next snapshot
ST_SEQ_GAP = 4        # the message that broke continuity (det_a expected, det_b got)
ST_STALE_NEXT = 5     # first update after a snapshot does not reach back to it (det_a L, det_b U)
ST_BROKEN = 6         # a message with a rejected row (det_a: the rejected row's src_line)
ST_IN_SNAPSHOT = 7    # already contained in the snapshot (det_a L, det_b u)
ST_DUPLICATE = 8      # not above the last applied message (det_a last, det_b this)
ST_STALE_SNAPSHOT = 9  # snapshot older than the updates already applied (det_a last, det_b this)
ST_INCONSISTENT = 10  # L3 order unknown / duplicate, or a level row without side (det_a order id)
ST_LOST = 11          # a wholly rejected message in a source without sequence numbers: a gap starts
ST_BUFFERED = 12      # (transient) held back before a snapshot
ST_BAD_SNAPSHOT = 13  # a snapshot with a rejected row (det_a: its src_line), or a negative size before the month: skipped

#: Gap kinds (column 0 of the gap records).
G_PRESNAP, G_SEQUENCE, G_STALE_SNAPSHOT, G_BROKEN, G_LOST, G_INCONSISTENT, G_WARM_BAD = 0, 1, 2, 3, 4, 5, 6
GAP_KINDS = {
    G_PRESNAP: "before the first snapshot",
    G_SEQUENCE: "sequence gap",
    G_STALE_SNAPSHOT: "snapshot older than the updates that follow",
    G_BROKEN: "message with a rejected row",
    G_LOST: "unreadable row in a stream without sequence numbers",
    G_INCONSISTENT: "L3 order inconsistency",
    G_WARM_BAD: "crossed or negative book before the month (warm-up)",
}
#: Gap record columns.
GC_KIND, GC_START, GC_END, GC_LAST_SEQ, GC_EXPECTED, GC_GOT, GC_ROWS, GC_WARM = range(8)
GAP_COLUMNS = 8

#: Kernel return codes besides replay's OK / NEED_LEVELS / NEED_ORDERS.
NEED_OUT = -3
NEED_GAPS = -4
BLOCK_NEGATIVE = 10
BLOCK_CROSSED = 11

#: State slots (``st``, int64).
(S_SYNCED, S_EVER, S_LAST_SEQ, S_HAS_LAST, S_LAST_TS_EVENT, S_LAST_MODE, S_PENDING, S_SNAP_L, S_OUT_K,
 S_DAY_OPEN, S_GAP_OPEN, S_G_N, S_BUF_N, S_MSGS, S_MAX_BID, S_MAX_ASK, S_SNAPSHOTS, S_EMIT, S_L3,
 S_SNAP_TS_RECV) = range(20)
STATE_SLOTS = 20

#: Rows held back before a snapshot (rule 6), at most; beyond, the oldest are quarantined.
BUFFER_ROWS = 1 << 20


@nb.njit(cache=True)
def _unit_end(i, n, seq, ts_recv, is_snap, action, flags):
    """End (exclusive) of the unit starting at ``i``: a snapshot run, or a message."""
    if is_snap[i]:
        j = i + 1
        while j < n and is_snap[j] and action[j] != CLEAR:
            j += 1
        return j
    j = i
    while j < n - 1:
        if (flags[j] & 1) or seq[j + 1] != seq[j] or ts_recv[j + 1] != ts_recv[j] or is_snap[j + 1]:
            break
        j += 1
    return j + 1


@nb.njit(cache=True)
def run_chunk(  # noqa: C901 - one pass, one state machine; split, it would pass 40 arrays around
    # rows of one day, sorted (ts_recv, seq, source, line)
    ts_event, ts_recv, seq, side, price, size, action, is_snap, oid, flags, seq_first, seq_prev, bad, mode, src_line,
    # book
    keys, sz, cnt, n, slots, o_side, o_px, o_sz, o_prio, o_id, free, meta,
    # state, buffer, gaps
    st, buf, gaps,
    # outputs
    status, det_a, det_b,
    out_ts_event, out_ts_recv, out_seq, out_side, out_price, out_size, out_action, out_snap, out_oid, out_flags, out_src,
    start,
):
    """Validate and apply rows ``start:`` of a day (see the module docstring). Returns (code, i):
    OK when the day is done; NEED_* when an array must grow (resume at ``i``, the unit not begun);
    BLOCK_* at the offending row ``i`` (nothing of its unit published)."""
    nrows = ts_recv.shape[0]
    l3 = st[S_L3] != 0
    emit = st[S_EMIT] != 0

    def begin_gap(kind, ts, expected, got):
        if st[S_GAP_OPEN] == 0:
            g = st[S_G_N]
            gaps[g, GC_KIND] = kind
            gaps[g, GC_START] = ts
            gaps[g, GC_END] = -1
            gaps[g, GC_LAST_SEQ] = st[S_LAST_SEQ] if st[S_HAS_LAST] else -1
            gaps[g, GC_EXPECTED] = expected
            gaps[g, GC_GOT] = got
            gaps[g, GC_ROWS] = 0
            gaps[g, GC_WARM] = 0 if emit else 1
            st[S_G_N] = g + 1
            st[S_GAP_OPEN] = 1
        st[S_SYNCED] = 0

    def gap_rows(k):
        if st[S_GAP_OPEN]:
            gaps[st[S_G_N] - 1, GC_ROWS] += k

    def unsynced_status():
        return ST_GAP if st[S_EVER] else ST_PRESNAP

    def put(r, ts_r, flg, snap, sq):
        k = st[S_OUT_K]
        out_ts_event[k] = ts_event[r]
        out_ts_recv[k] = ts_r
        out_seq[k] = sq
        out_side[k] = side[r]
        out_price[k] = price[r]
        out_size[k] = size[r]
        out_action[k] = action[r]
        out_snap[k] = snap
        out_oid[k] = oid[r]
        out_flags[k] = flg
        out_src[k] = r
        st[S_OUT_K] = k + 1

    def put_synth(te, tr, sq, sd, px, q, act, o, flg):
        k = st[S_OUT_K]
        out_ts_event[k] = te
        out_ts_recv[k] = tr
        out_seq[k] = sq
        out_side[k] = sd
        out_price[k] = px
        out_size[k] = q
        out_action[k] = act
        out_snap[k] = True
        out_oid[k] = o
        out_flags[k] = flg
        out_src[k] = -1
        st[S_OUT_K] = k + 1

    def dump_day_start(te, tr):
        """The day's opening snapshot: the book as it stands, stamped with the first delta."""
        sq = st[S_LAST_SEQ]
        total = 0
        if l3:
            live = _snapshot_l3(keys, n, o_side, o_px, o_sz, o_prio, o_id)
            total = live.shape[0]
            put_synth(te, tr, sq, 0, 0.0, 0.0, CLEAR, 0, 1 if total == 0 else 0)
            for q in range(total):
                kk = live[q]
                put_synth(te, tr, sq, o_side[kk], o_px[kk], o_sz[kk], ADD, o_id[kk], 1 if q == total - 1 else 0)
        else:
            total = n[0] + n[1]
            put_synth(te, tr, sq, 0, 0.0, 0.0, CLEAR, 0, 1 if total == 0 else 0)
            c = 0
            for q in range(n[0]):
                c += 1
                put_synth(te, tr, sq, 1, keys[0, n[0] - 1 - q], sz[0, n[0] - 1 - q], ADD, 0, 1 if c == total else 0)
            for q in range(n[1]):
                c += 1
                put_synth(te, tr, sq, -1, -keys[1, n[1] - 1 - q], sz[1, n[1] - 1 - q], ADD, 0, 1 if c == total else 0)
        st[S_DAY_OPEN] = 0

    def negative(i, j):
        for r in range(i, j):
            if not bad[r] and action[r] != CLEAR and not (size[r] >= 0.0):
                return r
        return -1

    def apply_rows(i, j):
        """Apply rows i..j-1 (no rejected row among them); returns -1 or the failing row."""
        for r in range(i, j):
            if l3:
                code = apply_l3(keys, sz, cnt, n, slots, o_side, o_px, o_sz, o_prio, o_id, free, meta,
                                action[r], side[r], price[r], size[r], oid[r])
            else:
                code = apply_l2(keys, sz, cnt, n, action[r], side[r], price[r], size[r])
            if code != OK:
                return r
        return -1

    def track_levels():
        if n[0] > st[S_MAX_BID]:
            st[S_MAX_BID] = n[0]
        if n[1] > st[S_MAX_ASK]:
            st[S_MAX_ASK] = n[1]

    def update(i, j, restamp):
        """Judge and apply one update message (synced). Returns BLOCK_* / OK."""
        m = mode[i]
        u = seq[j - 1]
        if st[S_HAS_LAST]:
            last = st[S_LAST_SEQ]
            if m == M_NEXT or m == M_PREV:
                big_u = seq_first[i]
                if st[S_PENDING]:
                    snap_l = st[S_SNAP_L]
                    already = u <= snap_l if m == M_NEXT else u < snap_l
                    reach = big_u <= snap_l + 1 if m == M_NEXT else big_u <= snap_l
                    if already:
                        for r in range(i, j):
                            status[r] = ST_IN_SNAPSHOT
                            det_a[r] = snap_l
                            det_b[r] = u
                        return OK
                    if not reach:
                        for r in range(i, j):
                            status[r] = ST_STALE_NEXT
                            det_a[r] = snap_l
                            det_b[r] = big_u
                        begin_gap(G_STALE_SNAPSHOT, ts_recv[i], snap_l + 1 if m == M_NEXT else snap_l, big_u)
                        gap_rows(j - i)
                        return OK
                else:
                    if u <= last:
                        for r in range(i, j):
                            status[r] = ST_DUPLICATE
                            det_a[r] = last
                            det_b[r] = u
                        return OK
                    expected = last + 1 if m == M_NEXT else last
                    got = big_u if m == M_NEXT else seq_prev[i]
                    if got != expected:
                        for r in range(i, j):
                            status[r] = ST_SEQ_GAP
                            det_a[r] = expected
                            det_b[r] = got
                        begin_gap(G_SEQUENCE, ts_recv[i], expected, got)
                        gap_rows(j - i)
                        return OK
            elif m == M_INCREASING and u <= last:
                for r in range(i, j):
                    status[r] = ST_IN_SNAPSHOT if st[S_PENDING] else ST_DUPLICATE
                    det_a[r] = last
                    det_b[r] = u
                return OK
        k0 = st[S_OUT_K]
        if emit and st[S_DAY_OPEN]:
            dump_day_start(ts_event[i], restamp if restamp >= 0 else ts_recv[i])
            k0 = st[S_OUT_K]
        fail = apply_rows(i, j)
        if fail >= 0:
            st[S_OUT_K] = k0
            for r in range(i, j):
                status[r] = ST_INCONSISTENT
                det_a[r] = np.int64(oid[fail])
                det_b[r] = fail
            begin_gap(G_INCONSISTENT, ts_recv[i], -1, np.int64(oid[fail]))
            gap_rows(j - i)
            return OK
        if crossed(keys, n):
            if emit:
                return BLOCK_CROSSED
            begin_gap(G_WARM_BAD, ts_recv[i], -1, -1)
            gap_rows(j - i)
            return OK
        for r in range(i, j):
            status[r] = ST_EMIT
            if emit:
                put(r, restamp if restamp >= 0 else ts_recv[r], 1 if r == j - 1 else 0, False, seq[r])
        st[S_LAST_SEQ] = u
        st[S_HAS_LAST] = 1
        st[S_LAST_TS_EVENT] = ts_event[j - 1]
        st[S_LAST_MODE] = m
        st[S_PENDING] = 0
        st[S_MSGS] += 1
        track_levels()
        return OK

    def flush_buffer(as_status):
        """Quarantine every held-back row (no snapshot came for them)."""
        for b in range(st[S_BUF_N]):
            status[buf[b]] = as_status
        gap_rows(st[S_BUF_N])
        st[S_BUF_N] = 0

    i = start
    while i < nrows:
        j = _unit_end(i, nrows, seq, ts_recv, is_snap, action, flags)
        # capacity for the whole unit (and a day-start snapshot, and the buffer it may release)
        need = (j - i) + st[S_BUF_N] + 1
        book_rows = meta[0] if l3 else n[0] + n[1]
        if st[S_OUT_K] + need + book_rows + 1 > out_ts_recv.shape[0]:
            return NEED_OUT, i
        if n[0] + need > keys.shape[1] or n[1] + need > keys.shape[1]:
            return NEED_LEVELS, i
        if l3 and meta[1] < need:
            return NEED_ORDERS, i
        if st[S_G_N] + 2 > gaps.shape[0]:
            return NEED_GAPS, i
        neg = negative(i, j)
        if neg >= 0:
            if emit:
                return BLOCK_NEGATIVE, neg
        nbad = 0
        first_bad = -1
        for r in range(i, j):
            if bad[r]:
                nbad += 1
                if first_bad < 0:
                    first_bad = r
        if is_snap[i]:
            # ---- a snapshot run ----
            if nbad > 0 or neg >= 0:
                for r in range(i, j):
                    status[r] = ST_EXCLUDED if bad[r] else ST_BAD_SNAPSHOT
                    det_a[r] = src_line[first_bad] if first_bad >= 0 else src_line[neg]
                if neg >= 0:
                    begin_gap(G_WARM_BAD, ts_recv[i], -1, -1)
                if not st[S_SYNCED]:
                    gap_rows(j - i - nbad)
                i = j
                continue
            if st[S_SYNCED] and st[S_HAS_LAST]:
                lm = st[S_LAST_MODE]
                stale = (seq[i] < st[S_LAST_SEQ]) if lm != M_NONE else (ts_event[i] < st[S_LAST_TS_EVENT])
                if stale:
                    for r in range(i, j):
                        status[r] = ST_STALE_SNAPSHOT
                        det_a[r] = st[S_LAST_SEQ] if lm != M_NONE else st[S_LAST_TS_EVENT]
                        det_b[r] = seq[i] if lm != M_NONE else ts_event[i]
                    i = j
                    continue
            was_gap = (not st[S_SYNCED]) and st[S_EVER]
            k0 = st[S_OUT_K]
            # the book restarts from the snapshot
            if l3:
                apply_l3(keys, sz, cnt, n, slots, o_side, o_px, o_sz, o_prio, o_id, free, meta, CLEAR, 0, 0.0, 0.0, oid[i])
            else:
                apply_l2(keys, sz, cnt, n, CLEAR, 0, 0.0, 0.0)
            first = i
            if action[i] == CLEAR and side[i] == 0:
                first = i + 1
            if emit:
                reset_flag = 2 if was_gap else 0
                if first == i + 1:
                    put(i, ts_recv[i], reset_flag | (1 if j == i + 1 else 0), True, seq[i])
                else:
                    put_synth(ts_event[i], ts_recv[i], seq[i], 0, 0.0, 0.0, CLEAR, 0, reset_flag)
            fail = apply_rows(first, j)
            if fail >= 0 or crossed(keys, n):
                st[S_OUT_K] = k0
                if fail < 0 and emit:
                    return BLOCK_CROSSED, j - 1
                for r in range(i, j):
                    status[r] = ST_INCONSISTENT
                    det_a[r] = np.int64(oid[fail]) if fail >= 0 else -1
                    det_b[r] = fail
                if l3:
                    apply_l3(keys, sz, cnt, n, slots, o_side, o_px, o_sz, o_prio, o_id, free, meta, CLEAR, 0, 0.0, 0.0, oid[i])
                else:
                    apply_l2(keys, sz, cnt, n, CLEAR, 0, 0.0, 0.0)
                begin_gap(G_INCONSISTENT if fail >= 0 else G_WARM_BAD, ts_recv[i], -1, -1)
                gap_rows(j - i)
                i = j
                continue
            for r in range(first, j):
                status[r] = ST_EMIT
                if emit:
                    put(r, ts_recv[r], 1 if r == j - 1 else 0, True, seq[i])
            status[i] = ST_EMIT
            if st[S_GAP_OPEN]:
                gaps[st[S_G_N] - 1, GC_END] = ts_recv[i]
                st[S_GAP_OPEN] = 0
            st[S_SYNCED] = 1
            st[S_EVER] = 1
            st[S_DAY_OPEN] = 0
            st[S_SNAPSHOTS] += 1
            st[S_SNAP_L] = seq[i]
            st[S_SNAP_TS_RECV] = ts_recv[j - 1]
            st[S_PENDING] = 1
            st[S_LAST_SEQ] = seq[i]
            st[S_HAS_LAST] = 1
            st[S_LAST_TS_EVENT] = ts_event[j - 1]
            track_levels()
            # release the updates held back for it (rule 6), in order
            nb_ = st[S_BUF_N]
            st[S_BUF_N] = 0
            b = 0
            while b < nb_:
                bi = buf[b]
                bj = b
                while (bj + 1 < nb_ and buf[bj + 1] == buf[bj] + 1 and not (flags[buf[bj]] & 1)
                       and seq[buf[bj + 1]] == seq[buf[bj]] and ts_recv[buf[bj + 1]] == ts_recv[buf[bj]]):
                    bj += 1
                mi, mj = bi, buf[bj] + 1
                if st[S_SYNCED]:
                    code = update(mi, mj, st[S_SNAP_TS_RECV])
                    if code != OK:
                        return code, mj - 1
                else:
                    for r in range(mi, mj):
                        status[r] = ST_GAP
                    gap_rows(mj - mi)
                b = bj + 1
            i = j
            continue
        # ---- an update message ----
        if nbad > 0:
            m = mode[i]
            whole = nbad == j - i
            if whole and (m == M_NEXT or m == M_PREV):
                for r in range(i, j):
                    status[r] = ST_EXCLUDED
                i = j
                continue
            for r in range(i, j):
                status[r] = ST_EXCLUDED if bad[r] else (ST_LOST if whole else ST_BROKEN)
                det_a[r] = src_line[first_bad]
            if st[S_SYNCED]:
                begin_gap(G_LOST if whole else G_BROKEN, ts_recv[i], -1, src_line[first_bad])
            elif not st[S_GAP_OPEN]:
                begin_gap(G_PRESNAP, ts_recv[i], -1, -1)
            gap_rows(j - i - nbad)
            i = j
            continue
        if neg >= 0:  # warm-up only (emit returned above): the book is unknown from here
            for r in range(i, j):
                status[r] = ST_BROKEN
                det_a[r] = src_line[neg]
            begin_gap(G_WARM_BAD, ts_recv[i], -1, -1)
            i = j
            continue
        if not st[S_SYNCED]:
            m = mode[i]
            if not st[S_GAP_OPEN]:
                begin_gap(G_PRESNAP if not st[S_EVER] else G_SEQUENCE, ts_recv[i], -1, -1)
            if m == M_NEXT or m == M_PREV:
                if st[S_BUF_N] + (j - i) > buf.shape[0]:
                    flush_buffer(unsynced_status())
                for r in range(i, j):
                    status[r] = ST_BUFFERED
                    buf[st[S_BUF_N]] = r
                    st[S_BUF_N] += 1
            else:
                for r in range(i, j):
                    status[r] = unsynced_status()
                gap_rows(j - i)
            i = j
            continue
        code = update(i, j, -1)
        if code != OK:
            return code, j - 1
        i = j
    # the day is over: what is still held back had no snapshot today
    flush_buffer(unsynced_status())
    return OK, nrows


# ---- the Python side: one month's stream, day by day ----------------------------------------

#: Columns a day of staged rows must have for :meth:`Stream.day` (``mode`` and ``bad`` added by
#: the builder from each row's source and ``reason``).
DAY_COLUMNS = ("ts_event", "ts_recv", "seq", "side", "price", "size", "action", "is_snapshot", "order_id",
               "flags", "seq_first", "seq_prev", "bad", "mode", "src_line")


class Blocked(Exception):
    """A blocking rule broken at row ``row`` of the day (its kernel code, and what was found)."""

    def __init__(self, code: int, row: int, detail: str) -> None:
        self.code, self.row, self.detail = code, row, detail
        super().__init__(detail)


class Stream:
    """The state of one month's pass (book, continuity, gaps) across its days.

    ``day(rows, emit)`` validates and applies one day's sorted staged rows; ``emit`` False for a
    warm-up day of the previous month (replayed to know the book at the month's start; nothing
    published or quarantined). Returns the published rows of the day (canonical, the day's opening
    snapshot first) and the status of every input row."""

    def __init__(self, l3: bool) -> None:
        from quant_assets.book.replay import Book

        self.book = Book(l3=l3)
        self.st = np.zeros(STATE_SLOTS, np.int64)
        self.st[S_L3] = int(l3)
        self.gaps = np.zeros((16, GAP_COLUMNS), np.int64)

    def day(self, a: dict[str, np.ndarray], emit: bool):
        from quant_assets.book.replay import NEED_LEVELS as _NL, NEED_ORDERS as _NO

        n = len(a["ts_recv"])
        st = self.st
        st[S_EMIT] = int(emit)
        st[S_DAY_OPEN] = int(emit)
        st[S_OUT_K] = 0
        st[S_BUF_N] = 0
        status = np.full(n, -1, np.int8)
        det_a = np.zeros(n, np.int64)
        det_b = np.zeros(n, np.int64)
        buf = np.empty(max(1, min(BUFFER_ROWS, n)), np.int64)
        cap = n + int(self.book.meta[0] if self.book.l3 else self.book.n.sum()) + 64
        out = _out_arrays(cap)
        i = 0
        while True:
            b = self.book
            code, i = run_chunk(
                a["ts_event"], a["ts_recv"], a["seq"], a["side"], a["price"], a["size"], a["action"], a["is_snapshot"],
                a["order_id"], a["flags"], a["seq_first"], a["seq_prev"], a["bad"], a["mode"], a["src_line"],
                b.keys, b.sz, b.cnt, b.n, b.slots, b.o_side, b.o_px, b.o_sz, b.o_prio, b.o_id, b.free, b.meta,
                st, buf, self.gaps, status, det_a, det_b, *out.values(), i,
            )
            if code == OK:
                break
            if code in (_NL, _NO):
                b.grow(code)
            elif code == NEED_OUT:
                out = {k: _grown(v, 2 * len(v)) for k, v in out.items()}
            elif code == NEED_GAPS:
                self.gaps = np.concatenate([self.gaps, np.zeros_like(self.gaps)])
            else:
                raise Blocked(int(code), int(i), self._blocked(int(code), int(i), a))
        k = int(st[S_OUT_K])
        return {name: v[:k] for name, v in out.items()}, status, det_a, det_b

    def _blocked(self, code: int, i: int, a: dict[str, np.ndarray]) -> str:
        if code == BLOCK_NEGATIVE:
            return f"negative size {a['size'][i]!r} (expected >= 0: absolute level or order sizes)"
        if code == BLOCK_CROSSED:
            t = self.book.top()
            return f"crossed book after this message: best bid {t.bid_px!r} >= best ask {t.ask_px!r}"
        return f"kernel code {code}"  # pragma: no cover

    def gap_records(self) -> np.ndarray:
        return self.gaps[: int(self.st[S_G_N])].copy()

    @property
    def synced(self) -> bool:
        return bool(self.st[S_SYNCED])

    @property
    def ever_synced(self) -> bool:
        return bool(self.st[S_EVER])

    @property
    def gap_open(self) -> bool:
        return bool(self.st[S_GAP_OPEN])


def _out_arrays(cap: int) -> dict[str, np.ndarray]:
    return {
        "ts_event": np.empty(cap, np.int64), "ts_recv": np.empty(cap, np.int64), "seq": np.empty(cap, np.int64),
        "side": np.empty(cap, np.int8), "price": np.empty(cap, np.float64), "size": np.empty(cap, np.float64),
        "action": np.empty(cap, np.int8), "is_snapshot": np.empty(cap, np.bool_), "order_id": np.empty(cap, np.uint64),
        "flags": np.empty(cap, np.uint8), "src": np.empty(cap, np.int64),
    }


def _grown(v: np.ndarray, cap: int) -> np.ndarray:
    new = np.empty(cap, v.dtype)
    new[: len(v)] = v
    return new


def reason_expr() -> "pl.Expr":
    """The quarantine reason of a row from its ``status`` and details ``det_a``/``det_b``."""
    import polars as pl

    s, a, b = pl.col("status"), pl.col("det_a").cast(pl.String), pl.col("det_b").cast(pl.String)
    until = " (the book is unknown until the next snapshot)"
    return (
        pl.when(s == ST_PRESNAP).then(pl.lit("before the first snapshot" + until))
        .when(s == ST_GAP).then(pl.lit("inside a gap" + until))
        .when(s == ST_SEQ_GAP).then(pl.concat_str(pl.lit("sequence gap: expected "), a, pl.lit(", got "), b,
                                                  pl.lit(" (U = previous u + 1 / pu = previous u)" + until)))
        .when(s == ST_STALE_NEXT).then(pl.concat_str(pl.lit("snapshot older than the updates that follow: snapshot seq "), a,
                                                     pl.lit(", the next update starts at "), b, pl.lit(until)))
        .when(s == ST_BROKEN).then(pl.concat_str(pl.lit("a row of this message (line "), a,
                                                 pl.lit(") was rejected: the message cannot be applied whole" + until)))
        .when(s == ST_LOST).then(pl.concat_str(pl.lit("line "), a, pl.lit(" was rejected in a stream without sequence numbers: "
                                                                         "an update may be lost" + until)))
        .when(s == ST_IN_SNAPSHOT).then(pl.concat_str(pl.lit("already in the snapshot (snapshot seq "), a, pl.lit(", this message "), b, pl.lit(")")))
        .when(s == ST_DUPLICATE).then(pl.concat_str(pl.lit("duplicate or out of order: seq "), b, pl.lit(" not above the last applied "), a))
        .when(s == ST_STALE_SNAPSHOT).then(pl.concat_str(pl.lit("snapshot older than the updates already applied (snapshot "), b,
                                                         pl.lit(" < last applied "), a, pl.lit("): skipped, the book kept")))
        .when(s == ST_INCONSISTENT).then(pl.concat_str(pl.lit("L3 order "), a, pl.lit(" unknown (update/delete) or already held (add)" + until)))
        .when(s == ST_BAD_SNAPSHOT).then(pl.concat_str(pl.lit("snapshot with a rejected row (line "), a, pl.lit("): skipped")))
        .otherwise(pl.lit(None, pl.String))
    )
