"""Venue profiles: one per venue × kind, built in and overridden field by field in ``venues.toml``
(or the file named by ``$QUANT_VENUES``)::

    [BINANCE.perpetual]
    latency_model = "constant"     # constant | lognormal | recorded
    entry_latency_ms = 5.0         # order entry: strategy -> matching engine (the median for lognormal)
    response_latency_ms = 5.0      # order response: matching engine -> strategy
    latency_sigma = 0.5            # lognormal only: sigma of log(latency)
    latency_seed = 7               # lognormal only: required, so every run draws the same latencies
    latency_file = "latency/binance_perp.npz"   # recorded only: req_ts, exch_ts, resp_ts (ns)
    prob_slippage = 0.0            # NautilusTrader: chance a market order on L1 fills one tick worse
    prob_fill_on_limit = 1.0       # NautilusTrader: chance a limit at the touch fills when the market only touches it
    fill_seed = 1                  # NautilusTrader: seed of those draws
    stop_fill = "next_touch"       # a stop the market gapped through fills at the next touch (or "trigger")
    queue_model = "power_prob"     # hftbacktest: risk_adverse | power_prob | power_prob2 | power_prob3 | log_prob | log_prob2
    queue_power = 3.0              # the exponent n of the power_prob models
    synthetic_depth = 1000000.0    # quote currency shown at each side of a quote without sizes

Units: latencies in milliseconds in the file, nanoseconds inside the engines; depth in the
instrument's quote currency. Feed latency is not a setting: it is ``ts_recv − ts_event`` where
the data carries both (Tardis ``local_timestamp``), and declared unknown where it does not
(Binance public files; see :mod:`quant_assets.venues.feed`).

Each profile has its own **version**: a digest of its resolved settings (and of its recorded
latency file's bytes), so editing one profile changes that version only, and only backtests on
that venue become stale. Errors name the file, the table and the setting. Plain Python.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from quant_assets.lake.identity import check_kind
from quant_assets.settings import REPO_ROOT

CONFIG_ENV = "QUANT_VENUES"
LATENCY_MODELS = ("constant", "lognormal", "recorded")
#: hftbacktest 2.4.4 queue position models (``BacktestAsset.<name>_queue_model``); True for
#: those that take the exponent ``queue_power``.
QUEUE_MODELS = {"risk_adverse": False, "power_prob": True, "power_prob2": True, "power_prob3": True,
                "log_prob": False, "log_prob2": False}
STOP_FILLS = ("next_touch", "trigger")
#: Quote currency shown at each side of a size-less quote (FX feeds, quotes made from trades):
#: a declared, finite depth instead of an infinitely deep book.
DEFAULT_SYNTHETIC_DEPTH = {"fx": 1_000_000.0}
CRYPTO_SYNTHETIC_DEPTH = 100_000.0


@dataclass(frozen=True)
class VenueProfile:
    """How the simulated ``venue`` × ``kind`` behaves. Invariants (checked by :func:`check`):
    latencies finite and ≥ 0 ms; probabilities in [0, 1]; a lognormal latency has a sigma > 0
    and a seed; a recorded one a file; ``queue_model`` one of :data:`QUEUE_MODELS`;
    ``synthetic_depth`` > 0 (quote currency). ``latency_scale`` is not a setting: the realism
    sensitivity re-runs a slice with every order latency multiplied by it (1 otherwise)."""

    venue: str
    kind: str
    latency_model: str = "constant"
    entry_latency_ms: float = 5.0
    response_latency_ms: float = 5.0
    latency_sigma: float | None = None
    latency_seed: int | None = None
    latency_file: str | None = None
    prob_slippage: float = 0.0
    prob_fill_on_limit: float = 1.0
    fill_seed: int = 1
    stop_fill: str = "next_touch"
    queue_model: str = "power_prob"
    queue_power: float = 3.0
    synthetic_depth: float = CRYPTO_SYNTHETIC_DEPTH
    latency_scale: float = 1.0
    source: str = "built-in"  # built-in | <file> [VENUE.kind]
    latency_file_sha256: str | None = None

    @property
    def name(self) -> str:
        return f"{self.venue}.{self.kind}"

    def settings(self) -> dict[str, object]:
        """The settings that decide what a backtest does (not where they were read from)."""
        out = asdict(self)
        out.pop("source")
        return out

    @property
    def version(self) -> str:
        """12 hex characters of the settings' digest (the recorded latency file by its bytes, not
        its path, so a clone elsewhere has the same versions)."""
        settings = self.settings()
        settings.pop("latency_file")
        return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    def scaled(self, latency: float) -> VenueProfile:
        """This profile with every order latency × ``latency`` (a sensitivity scenario)."""
        return replace(self, latency_scale=self.latency_scale * float(latency))

    def latency_path(self) -> Path | None:
        return Path(self.latency_file) if self.latency_file else None

    def describe(self) -> dict[str, object]:
        """What a manifest, a metric set and the critic's prompt show: name, version, source
        and the settings."""
        return {"name": self.name, "version": self.version, "label": self.label, "source": self.source, **self.settings()}


#: Setting names a strategy parameter or a critic's suggestion may not use: they change the
#: simulated market, not the strategy. The profile's fields, the market maker's former
#: parameters and the account's venue settings (fees, margin) under their usual names.
VENUE_SETTINGS = frozenset(
    {f.name for f in fields(VenueProfile)} - {"venue", "kind", "source", "latency_file_sha256"}
    | {"order_latency_ms", "latency_ms", "latency", "feed_latency_ms", "queue", "slippage", "fill_model",
       "maker_fee", "taker_fee", "fee", "fees", "fee_tier", "max_leverage", "leverage", "maintenance_margin"}
)

_SETTABLE = {f.name for f in fields(VenueProfile)} - {"venue", "kind", "source", "latency_scale", "latency_file_sha256"}


def builtin(venue: str, kind: str) -> VenueProfile:
    """The built-in profile of ``venue`` × ``kind``: 5 ms order entry and response (a workstation
    near the venue's region), no slippage, limits at the touch fill when touched, a gapped stop
    at the next touch, hftbacktest's power-3 probabilistic queue, a declared depth for quotes
    without sizes (1M quote currency for FX, 100k for crypto)."""
    return VenueProfile(venue, kind, synthetic_depth=DEFAULT_SYNTHETIC_DEPTH.get(kind, CRYPTO_SYNTHETIC_DEPTH))


def frictionless(venue: str, kind: str) -> VenueProfile:
    """No latency, no slippage, limits filled when touched, gapped stops at the next touch:
    what an engine called directly (scripted tests, benches) runs under when given no profile.
    Backtests always run under :func:`profile_for` their venue × kind."""
    return replace(builtin(venue, kind), entry_latency_ms=0.0, response_latency_ms=0.0, source="frictionless")


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or REPO_ROOT / "venues.toml")


def _number(value: object, where: str, unit: str, lo: float = 0.0, hi: float | None = None, strict: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (v > lo if strict else v >= lo) and (hi is None or v <= hi)
    if not ok:
        bound = f"> {lo:g}" if strict else f"≥ {lo:g}"
        bound += f" and ≤ {hi:g}" if hi is not None else ""
        raise ValueError(f"{where} = {value!r}: expected a finite number {bound} ({unit})")
    return float(value)  # type: ignore[arg-type]


def check(p: VenueProfile, where: str) -> VenueProfile:
    """``p`` if every setting is valid, else a ValueError naming ``where`` (file and table) and
    the setting."""
    if p.latency_model not in LATENCY_MODELS:
        raise ValueError(f"{where} latency_model = {p.latency_model!r}: expected one of {', '.join(LATENCY_MODELS)}")
    _number(p.entry_latency_ms, f"{where} entry_latency_ms", "ms")
    _number(p.response_latency_ms, f"{where} response_latency_ms", "ms")
    if p.latency_model == "lognormal":
        if p.latency_seed is None:
            raise ValueError(f"{where} latency_model = \"lognormal\": a distribution needs latency_seed (an integer), "
                             "so every run draws the same latencies")
        if isinstance(p.latency_seed, bool) or not isinstance(p.latency_seed, int):
            raise ValueError(f"{where} latency_seed = {p.latency_seed!r}: expected an integer")
        _number(p.latency_sigma, f"{where} latency_sigma", "sigma of log latency", strict=True, hi=5.0)
    if p.latency_model == "recorded" and not p.latency_file:
        raise ValueError(f"{where} latency_model = \"recorded\": needs latency_file (req_ts, exch_ts, resp_ts in ns)")
    if p.latency_model != "recorded" and p.latency_file:
        raise ValueError(f"{where} latency_file is set but latency_model = {p.latency_model!r}: set latency_model = \"recorded\"")
    _number(p.prob_slippage, f"{where} prob_slippage", "probability", hi=1.0)
    _number(p.prob_fill_on_limit, f"{where} prob_fill_on_limit", "probability", hi=1.0)
    if isinstance(p.fill_seed, bool) or not isinstance(p.fill_seed, int):
        raise ValueError(f"{where} fill_seed = {p.fill_seed!r}: expected an integer")
    if p.stop_fill not in STOP_FILLS:
        raise ValueError(f"{where} stop_fill = {p.stop_fill!r}: expected one of {', '.join(STOP_FILLS)}")
    if p.queue_model not in QUEUE_MODELS:
        raise ValueError(f"{where} queue_model = {p.queue_model!r}: unknown; expected one of {', '.join(QUEUE_MODELS)} "
                         "(hftbacktest 2.4.4)")
    _number(p.queue_power, f"{where} queue_power", "exponent", strict=True, hi=100.0)
    _number(p.synthetic_depth, f"{where} synthetic_depth", "quote currency", strict=True)
    _number(p.latency_scale, f"{where} latency_scale", "factor")
    return p


def _load(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from exc


def configured(path: Path | None = None) -> dict[tuple[str, str], VenueProfile]:
    """Every profile ``venues.toml`` sets, (venue, kind) -> profile: the built-in one with the
    file's fields applied, validated, a recorded latency file read and checked. Raises a
    ValueError naming the file, the table and the setting."""
    from quant_assets.venues import latency as lat

    path = path or config_path()
    data = _load(path)
    out: dict[tuple[str, str], VenueProfile] = {}
    for venue, kinds in data.items():
        if not isinstance(kinds, dict) or not all(isinstance(v, dict) for v in kinds.values()):
            raise ValueError(f"{path}: [{venue}] must hold one table per kind, e.g. [{venue}.perpetual]")
        for kind, values in kinds.items():
            where = f"{path} [{venue}.{kind}]"
            check_kind(kind, where)
            bad = set(values) - _SETTABLE
            if bad:
                raise ValueError(f"{where}: unknown setting(s) {sorted(bad)}; allowed: {sorted(_SETTABLE)}")
            p = replace(builtin(venue.upper(), kind), **values, source=f"{path.name} [{venue}.{kind}]")
            if p.latency_file:
                file = Path(p.latency_file)
                file = file if file.is_absolute() else path.parent / file
                rows = lat.read_recorded(file, f"{where} latency_file")
                p = replace(p, latency_file=str(file), latency_file_sha256=lat.file_digest(file, rows))
            out[(venue.upper(), kind)] = check(p, where)
    return out


_CACHE: dict[tuple[str, float, int], dict[tuple[str, str], VenueProfile]] = {}


def _profiles(path: Path | None = None) -> dict[tuple[str, str], VenueProfile]:
    path = path or config_path()
    try:
        st = path.stat()
        key = (str(path), st.st_mtime, st.st_size)
    except FileNotFoundError:
        key = (str(path), 0.0, -1)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = configured(path)
    return _CACHE[key]


def profile_for(venue: str, kind: str, path: Path | None = None) -> VenueProfile:
    """The profile of ``venue`` × ``kind``: the configured one, else the built-in one."""
    return _profiles(path).get((venue.upper(), kind)) or builtin(venue.upper(), kind)


def validate_config(path: Path | None = None) -> None:
    """Read ``venues.toml`` whole and raise its first error (run when the definitions load)."""
    configured(path)


def digest(path: Path | None = None) -> str:
    """12 hex characters over every configured profile's version: changes when any profile in
    the file changes (the venue asset's code version; each symbol's own data version is the
    version of its profile alone)."""
    versions = sorted(f"{p.label}" for p in _profiles(path).values())
    return hashlib.sha256("|".join(versions).encode()).hexdigest()[:12]
