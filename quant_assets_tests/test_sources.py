"""Fetching into landing (quant_assets/sources): config errors, the Binance plan, download faults
against a local fake server (404, 429, 5xx, cut connection, wrong checksum, slow server,
re-upload), the ledger, key redaction, and that what lands is ingestible."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest

from quant_assets.ingest.landing import survey
from quant_assets.sources import config as sconfig
from quant_assets.sources import ledger
from quant_assets.sources.binance import BinanceSource
from quant_assets.sources.fetch import fetch
from quant_assets.sources.http import DownloadFailed, HttpClient
from quant_assets_tests.fake_sources import FakeSources, binance_path, binance_zip, publish_binance

NOW = datetime(2024, 3, 10, 12, 0, tzinfo=timezone.utc)  # daily files up to 2024-03-09 are out
LATER = datetime(2024, 3, 25, 12, 0, tzinfo=timezone.utc)  # past the re-check window of March 1-9


def _toml(url: str, entries: str, **settings: object) -> sconfig.SourcesConfig:
    base = {"rate_per_s": 1000.0, "timeout_s": 2.0, "retries": 3, "backoff_s": 0.01, "backoff_max_s": 2.0,
            "recheck_days": 2, **settings}
    lines = ["[binance]", f'base_url = "{url}"'] + [f"{k} = {v!r}" for k, v in base.items()]
    return sconfig.loads("\n".join(lines) + "\n" + entries, Path("sources.toml"))


PERP_TRADES = """
[[binance.fetch]]
instruments = ["BTCUSDT-PERP"]
datasets = ["trades"]
start = "2024-03"
"""


class Recorder:
    """An HttpClient factory whose clients record their waits instead of sleeping."""

    def __init__(self) -> None:
        self.clients: list[HttpClient] = []

    def __call__(self, src) -> HttpClient:
        c = HttpClient(src.config, auth_headers=src.auth_headers, sleep=lambda s: None)
        self.clients.append(c)
        return c

    @property
    def waits(self) -> list[float]:
        return [w for c in self.clients for w in c.waits]


@pytest.fixture
def fake():
    with FakeSources(slow_s=0.6) as f:
        yield f


def _days(month: str, first: int, last: int) -> list[str]:
    return [f"{month}-{d:02d}" for d in range(first, last + 1)]


# ---- config -----------------------------------------------------------------------------
@pytest.mark.parametrize("entry, field", [
    ('instruments = ["BTCUSDT"]\ndatasets = ["trades"]', "'start'"),
    ('instruments = ["BTCUSDT"]\ndatasets = ["trades"]\nstart = "2024-13"', "start"),
    ('instruments = ["BTCUSDT"]\ndatasets = ["trades"]\nstart = "2024-03"\nend = "2024-01"', "end"),
    ('instruments = []\ndatasets = ["trades"]\nstart = "2024-03"', "instruments"),
    ('instruments = ["../x"]\ndatasets = ["trades"]\nstart = "2024-03"', "instruments"),
    ('instruments = ["BTCUSDT"]\ndatasets = ["klines"]\nstart = "2024-03"', "datasets"),
    ('instruments = ["BTCUSDT"]\ndatasets = ["bookTicker"]\nstart = "2024-03"', "datasets"),
    ('instruments = ["BTCUSDT"]\ndatasets = ["fundingRate"]\nstart = "2024-03"\nmarket = "um"', "datasets"),
    ('instruments = ["BTCUSDT-PERP"]\ndatasets = ["trades"]\nstart = "2024-03"\nmarket = "coin"', "market"),
    ('instruments = ["BTCUSDT-PERP"]\ndatasets = ["trades"]\nstart = "2024-03"\nmarkt = "um"', "markt"),
    ('instruments = ["A", "B"]\ndatasets = ["trades"]\nstart = "2024-03"\nlanding = "A"', "landing"),
])
def test_config_errors_name_file_entry_and_field(entry, field):
    with pytest.raises(ValueError) as err:
        _toml("https://data.binance.vision", "[[binance.fetch]]\n" + entry)
    msg = str(err.value)
    assert "sources.toml [[binance.fetch]] #1" in msg and field in msg, msg


@pytest.mark.parametrize("setting, value, field", [
    ("base_url", "ftp://x", "base_url"), ("publish_utc", "25:00", "publish_utc"), ("retries", -1, "retries"),
    ("rate_per_s", 0, "rate_per_s"), ("timeout_s", "fast", "timeout_s"),
])
def test_config_setting_errors(setting, value, field):
    with pytest.raises(ValueError, match=rf"sources.toml \[binance\] {field}"):
        sconfig.loads(f"[binance]\n{setting} = {value!r}\n".replace("'", '"'), Path("sources.toml"))


def test_repo_sources_toml_is_valid_and_fetches_nothing():
    cfg = sconfig.load(Path(__file__).resolve().parents[1] / "sources.toml")
    assert cfg.get("binance").base_url == "https://data.binance.vision"
    assert all(not s.entries for s in cfg.sources.values())


# ---- the Binance plan ---------------------------------------------------------------------
def _plan(entries: str, now: datetime = NOW):
    cfg = _toml("https://data.binance.vision", entries).get("binance")
    src = BinanceSource(cfg)
    return [rf for e in cfg.entries for rf in src.plan(e, now)], src


def test_binance_plan_monthly_past_daily_current_and_markets():
    files, _ = _plan("""
[[binance.fetch]]
instruments = ["BTCUSDT", "BTCUSDT-PERP"]
datasets = ["trades"]
start = "2024-01"
[[binance.fetch]]
instruments = ["BTCUSD-PERP"]
datasets = ["bookTicker", "fundingRate"]
start = "2024-02"
market = "cm"
""")
    urls = {f.url.removeprefix("https://data.binance.vision") for f in files}
    assert binance_path("spot", "monthly", "trades", "BTCUSDT", "2024-01") in urls
    assert binance_path("um", "monthly", "trades", "BTCUSDT", "2024-02") in urls
    assert binance_path("spot", "daily", "trades", "BTCUSDT", "2024-03-09") in urls
    assert binance_path("spot", "daily", "trades", "BTCUSDT", "2024-03-10") not in urls  # out on the 11th
    assert binance_path("spot", "monthly", "trades", "BTCUSDT", "2024-03") not in urls  # the month is running
    assert binance_path("cm", "monthly", "bookTicker", "BTCUSD_PERP", "2024-02") in urls
    assert binance_path("cm", "monthly", "fundingRate", "BTCUSD_PERP", "2024-02") in urls
    # fundingRate is monthly only: nothing for the running month
    assert not [f for f in files if f.dataset == "fundingRate" and f.period >= "2024-03"]
    perp = [f for f in files if f.symbol == "BTCUSDT-PERP"]
    assert {f.period for f in perp} == {"2024-01", "2024-02", *_days("2024-03", 1, 9)}
    assert all(f.checksum_url == f.url + ".CHECKSUM" and f.months == (f.period[:7],) for f in files)
    assert {f.symbol for f in files} == {"BTCUSDT", "BTCUSDT-PERP", "BTCUSD-PERP"}
    # before publish time on the 10th, the 9th is not expected yet
    early, _ = _plan(PERP_TRADES, datetime(2024, 3, 10, 5, 0, tzinfo=timezone.utc))
    assert max(f.period for f in early) == "2024-03-08"


def test_binance_fallback_to_daily_when_monthly_404(fake, lake):
    # February's monthly file is not out yet on March 2nd: its daily files are fetched instead.
    now = datetime(2024, 3, 2, 12, 0, tzinfo=timezone.utc)
    publish_binance(fake, "um", "trades", "BTCUSDT", _days("2024-02", 1, 29) + ["2024-03-01"])
    cfg = _toml(fake.url, PERP_TRADES.replace("2024-03", "2024-02"))
    rep = fetch(lake, cfg, now=now, client_for=Recorder())
    landed = sorted(p.name for p in rep.landed)
    assert landed == [f"BTCUSDT-trades-{d}.zip" for d in _days("2024-02", 1, 29) + ["2024-03-01"]]
    st = ledger.state(lake)
    assert st.filter(pl.col("period") == "2024-02")["status"].to_list() == ["not_published"]
    # All of February landed as days: the monthly file, once out, is not fetched on top of them.
    publish_binance(fake, "um", "trades", "BTCUSDT", ["2024-02"])
    n = len(fake.requests)
    rep2 = fetch(lake, cfg, now=datetime(2024, 3, 3, 12, tzinfo=timezone.utc), client_for=Recorder())
    assert not [r for r in fake.requests[n:] if "monthly" in r.path]
    # February (covered by its days) skipped; March 1st re-checked (recent); March 2nd not out yet
    assert rep2.counts == {"skipped": 1, "unchanged": 1, "not_published": 1}


# ---- fetching and its faults ---------------------------------------------------------------
def test_fetch_lands_verifies_and_skips_landed_without_requests(fake, lake):
    data = publish_binance(fake, "um", "trades", "BTCUSDT", _days("2024-03", 1, 9))
    cfg = _toml(fake.url, PERP_TRADES)
    seen: list[tuple[int, int, str]] = []
    rep = fetch(lake, cfg, now=NOW, progress=lambda d, t, rf: seen.append((d, t, rf.period)), client_for=Recorder())
    assert rep.counts == {"landed": 9}
    assert seen[-1][:2] == (9, 9)
    folder = lake.landing_dir("BTCUSDT-PERP")
    for path, body in data.items():
        assert (folder / path.rsplit("/", 1)[-1]).read_bytes() == body
    assert not list((folder / ".partial").iterdir())
    # Ten days on: March 1-9 ended more than recheck_days ago and landed -> not asked about at all.
    n = len(fake.requests)
    rep2 = fetch(lake, cfg, now=datetime(2024, 3, 20, 12, tzinfo=timezone.utc), client_for=Recorder(),
                 months=["2024-03"], symbols=["btcusdt-perp"])
    asked = [r.path for r in fake.requests[n:]]
    assert rep2.counts == {"skipped": 9, "not_published": 10}  # March 10-19: not on the server
    assert not [p for p in asked if any(f"-{d}.zip" in p for d in _days("2024-03", 1, 9))]
    assert len(asked) == 10 and all(p.endswith(".zip.CHECKSUM") for p in asked)  # one small request per new day


def test_404_newest_is_not_published_earlier_is_missing(fake, lake):
    publish_binance(fake, "um", "trades", "BTCUSDT", _days("2024-03", 1, 4) + _days("2024-03", 6, 8))
    rep = fetch(lake, _toml(fake.url, PERP_TRADES), now=NOW, client_for=Recorder())
    assert rep.counts == {"landed": 7, "missing": 1, "not_published": 1}
    (gap,) = rep.gaps
    assert gap["period"] == "2024-03-05" and "later period" in gap["reason"]
    st = ledger.state(lake).sort("period")
    assert st.filter(pl.col("period") == "2024-03-09")["status"].item() == "not_published"
    # A gap is not asked for again every run (only when re-checked); the unpublished day is.
    n = len(fake.requests)
    fetch(lake, _toml(fake.url, PERP_TRADES), now=LATER.replace(day=11), client_for=Recorder())
    asked = {r.path.rsplit("-", 1)[-1] for r in fake.requests[n:]}
    assert "05.zip.CHECKSUM" not in asked and "09.zip.CHECKSUM" in asked


def test_429_then_ok_honours_retry_after(fake, lake):
    (path,) = publish_binance(fake, "um", "trades", "BTCUSDT", ["2024-03-01"])
    fake.fault(path, 429)
    rec = Recorder()
    rep = fetch(lake, _toml(fake.url, PERP_TRADES), now=datetime(2024, 3, 2, 12, tzinfo=timezone.utc), client_for=rec)
    assert rep.counts == {"landed": 1}
    assert rec.waits and rec.waits[0] >= 1.0  # Retry-After: 1 beats the 0.01 s backoff
    assert [r.status for r in fake.hits(path.rsplit("/", 1)[-1]) if not r.path.endswith("CHECKSUM")] == [429, 200]


def test_5xx_then_ok_backs_off(fake, lake):
    (path,) = publish_binance(fake, "um", "trades", "BTCUSDT", ["2024-03-01"])
    fake.fault(path + ".CHECKSUM", 503)
    fake.fault(path, 500, 502)
    rec = Recorder()
    rep = fetch(lake, _toml(fake.url, PERP_TRADES), now=datetime(2024, 3, 2, 12, tzinfo=timezone.utc), client_for=rec)
    assert rep.counts == {"landed": 1}
    # backoff_s · 2^attempt plus up to backoff_s of jitter: the zip's two waits double
    assert len(rec.waits) == 3 and 0.01 <= rec.waits[1] <= 0.02 <= rec.waits[2] <= 0.03


def test_connection_cut_resumes_with_range(fake, lake):
    body = binance_zip("BTCUSDT", "trades", "2024-03-01", rows=400)
    path = binance_path("um", "daily", "trades", "BTCUSDT", "2024-03-01")
    fake.put(path, body)
    fake.fault(path, "cut")
    rep = fetch(lake, _toml(fake.url, PERP_TRADES), now=datetime(2024, 3, 2, 12, tzinfo=timezone.utc), client_for=Recorder())
    assert rep.counts == {"landed": 1}
    first, second = [r for r in fake.hits(path) if r.path == path]
    assert "Range" not in first.headers
    assert second.headers["Range"] == f"bytes={len(body) // 2}-" and second.headers["If-Range"].startswith('"')
    assert second.status == 206
    assert rep.landed[0].read_bytes() == body


def test_checksum_mismatch_is_refused_nothing_lands(fake, lake):
    path = binance_path("um", "daily", "trades", "BTCUSDT", "2024-03-01")
    fake.put(path, binance_zip("BTCUSDT", "trades", "2024-03-01"), checksum="ab" * 32)
    rep = fetch(lake, _toml(fake.url, PERP_TRADES), now=datetime(2024, 3, 2, 12, tzinfo=timezone.utc), client_for=Recorder())
    assert rep.counts == {"refused": 1} and not rep.landed
    (row,) = rep.problems
    assert "does not match the published .CHECKSUM" in row["reason"]
    folder = lake.landing_dir("BTCUSDT-PERP")
    assert lake.landing_files("BTCUSDT-PERP") == []
    assert list((folder / ".partial").iterdir()) == []  # the temp file is removed


def test_slow_server_times_out_retries_then_fails_clearly(fake, lake):
    path = binance_path("um", "daily", "trades", "BTCUSDT", "2024-03-01")
    fake.put(path, binance_zip("BTCUSDT", "trades", "2024-03-01"))
    fake.fault(path + ".CHECKSUM", "slow", "slow")
    cfg = _toml(fake.url, PERP_TRADES, timeout_s=0.2, retries=1)
    rep = fetch(lake, cfg, now=datetime(2024, 3, 2, 12, tzinfo=timezone.utc), client_for=Recorder())
    assert rep.counts == {"failed": 1}
    reason = rep.problems[0]["reason"]
    assert "gave up after 2 attempts" in reason and "timed out" in reason, reason
    assert ledger.state(lake)["status"].to_list() == ["failed"]
    # A failure is tried again next run, and lands.
    rep2 = fetch(lake, cfg, now=datetime(2024, 3, 2, 13, tzinfo=timezone.utc), client_for=Recorder())
    assert rep2.counts == {"landed": 1}


def test_reupload_lands_as_v2_and_keeps_v1(fake, lake):
    (path,) = publish_binance(fake, "um", "trades", "BTCUSDT", ["2024-02"])
    entry = PERP_TRADES.replace("2024-03", "2024-02") + 'end = "2024-02"\n'
    cfg = _toml(fake.url, entry)
    fetch(lake, cfg, now=NOW, client_for=Recorder())
    folder = lake.landing_dir("BTCUSDT-PERP")
    v1 = (folder / "BTCUSDT-trades-2024-02.zip").read_bytes()
    # Unchanged: re-checked without downloading the zip (only its .CHECKSUM is asked for).
    n = len(fake.requests)
    rep = fetch(lake, cfg, now=NOW, recheck=True, client_for=Recorder())
    assert rep.counts == {"unchanged": 1}
    assert [r.path for r in fake.requests[n:]] == [path + ".CHECKSUM"]
    # Binance re-uploads the month with new bytes and a new checksum.
    fake.put(path, binance_zip("BTCUSDT", "trades", "2024-02", seed=7))
    rep = fetch(lake, cfg, now=NOW, recheck=True, client_for=Recorder())
    assert rep.counts == {"landed": 1}
    assert rep.landed == [folder / "BTCUSDT-trades-2024-02~v2.zip"]
    assert (folder / "BTCUSDT-trades-2024-02.zip").read_bytes() == v1
    assert rep.landed[0].read_bytes() == fake.files[path]
    row = rep.rows[0]
    assert row["version"] == 2 and row["landing"] == "landing/BTCUSDT-PERP/BTCUSDT-trades-2024-02~v2.zip"
    assert row["sha256"] == hashlib.sha256(fake.files[path]).hexdigest()
    # Without recheck, a month this old is not asked about at all.
    n = len(fake.requests)
    assert fetch(lake, cfg, now=NOW, client_for=Recorder()).counts == {"skipped": 1}
    assert len(fake.requests) == n


def test_ledger_rows_and_state(fake, lake):
    publish_binance(fake, "um", "trades", "BTCUSDT", _days("2024-03", 1, 2))
    fetch(lake, _toml(fake.url, PERP_TRADES), now=datetime(2024, 3, 3, 12, tzinfo=timezone.utc), client_for=Recorder())
    rows = ledger.scan(lake).collect()
    assert rows.columns == ["row", *ledger.SCHEMA]
    assert rows["status"].to_list() == ["landed", "landed"]
    r = rows.row(0, named=True)
    assert r["url"].endswith("/data/futures/um/daily/trades/BTCUSDT/BTCUSDT-trades-2024-03-01.zip")
    assert r["landing"] == "landing/BTCUSDT-PERP/BTCUSDT-trades-2024-03-01.zip" and r["version"] == 1
    assert r["size"] == (lake.root / r["landing"]).stat().st_size and r["at"].endswith("Z")
    # A writer killed mid-line leaves a torn line: skipped, the rest still reads.
    path = lake.fetch_ledger_path("binance")
    with open(path, "a") as f:
        f.write('{"at":"2024-03-03T00:00:00Z","source":"binance","dat')
    fake.remove(binance_path("um", "daily", "trades", "BTCUSDT", "2024-03-02"))
    fetch(lake, _toml(fake.url, PERP_TRADES), now=datetime(2024, 3, 3, 13, tzinfo=timezone.utc), recheck=True,
          client_for=Recorder())
    st = ledger.state(lake).sort("period")
    assert st["status"].to_list() == ["unchanged", "not_published"]
    # the latest outcome is a 404, but what landed for that day is still known
    assert st["landed_version"].to_list() == [1, 1] and st["landed_sha256"].null_count() == 0


def test_keys_never_in_errors_or_ledger(fake, lake):
    key = "tk_live_0123456789abcdefSECRET"

    class Keyed(BinanceSource):
        def auth_headers(self):
            return {"Authorization": f"Bearer {key}"}

    def echo(f, h):  # a server that puts the key it was sent into its error's reason phrase
        f.reply(h, 500, b"", reason=f"bad token {h.headers['Authorization']}")

    fake.routes["/data/futures/um/daily/"] = echo
    cfg = _toml(fake.url, PERP_TRADES, retries=1).get("binance")
    client = HttpClient(cfg, auth_headers=Keyed(cfg).auth_headers, sleep=lambda s: None)
    with pytest.raises(DownloadFailed) as err:
        client.get_bytes(fake.url + binance_path("um", "daily", "trades", "BTCUSDT", "2024-03-01"))
    assert key not in str(err.value) and key[-8:] not in str(err.value) and "[REDACTED]" in str(err.value)
    assert fake.requests[-1].headers["Authorization"] == f"Bearer {key}"  # it was sent

    import quant_assets.sources.binance as bmod

    monkey = bmod.BinanceSource
    bmod.BinanceSource = Keyed  # fetch builds its source through binance.make
    try:
        rep = fetch(lake, _toml(fake.url, PERP_TRADES, retries=1), now=datetime(2024, 3, 2, 12, tzinfo=timezone.utc),
                    client_for=Recorder())
    finally:
        bmod.BinanceSource = monkey
    assert rep.counts == {"failed": 1}
    for p in lake.root.rglob("*"):
        if p.is_file():
            assert key[-8:].encode() not in p.read_bytes(), p


# ---- what lands is ingestible -----------------------------------------------------------------
def test_landed_files_are_ingestible(fake, lake):
    publish_binance(fake, "um", "trades", "BTCUSDT", ["2024-01", "2024-02"] + _days("2024-03", 1, 2))
    publish_binance(fake, "um", "bookTicker", "BTCUSDT", ["2024-02"])
    publish_binance(fake, "um", "fundingRate", "BTCUSDT", ["2024-01", "2024-02"])
    entries = """
[[binance.fetch]]
instruments = ["BTCUSDT-PERP"]
datasets = ["trades", "fundingRate"]
start = "2024-01"
[[binance.fetch]]
instruments = ["BTCUSDT-PERP"]
datasets = ["bookTicker"]
start = "2024-02"
end = "2024-02"
"""
    rep = fetch(lake, _toml(fake.url, entries), now=datetime(2024, 3, 3, 12, tzinfo=timezone.utc), client_for=Recorder())
    assert rep.counts == {"landed": 7}
    recs = {Path(r.path).name: r for r in survey(lake, "BTCUSDT-PERP", table=None)}
    assert set(recs) == {p.name for p in rep.landed}
    for name, rec in recs.items():
        assert rec.status != "failed", (name, rec.error)
    assert recs["BTCUSDT-trades-2024-01.zip"].months == ["2024-01"]
    assert recs["BTCUSDT-trades-2024-03-02.zip"].months == ["2024-03"]
    assert recs["BTCUSDT-bookTicker-2024-02.zip"].format == "binance_bookticker"
    assert recs["BTCUSDT-fundingRate-2024-02.zip"].format == "binance_funding"
    assert recs["BTCUSDT-fundingRate-2024-02.zip"].months == ["2024-02"]
