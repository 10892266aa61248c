"""The strategy registry: typed, range-checked parameters; strategies.toml tuning and variants;
code versions that change only with a strategy's own parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from quant_assets.engines import ADAPTER_VERSIONS
from quant_assets.strategies import registry
from quant_assets.strategies.spec import ParamError


def _versions(specs) -> dict[str, str]:
    return {name: s.code_version(ADAPTER_VERSIONS[s.engine]) for name, s in specs.items()}


def test_builtin_strategies_have_documented_parameters(tmp_path: Path) -> None:
    specs = registry.load(tmp_path / "none.toml")
    assert set(specs) == {"ema_cross", "mean_reversion", "market_maker"}
    assert {s.engine for s in specs.values()} == {"nautilus", "hftbacktest"}
    for spec in specs.values():
        for d in spec.docs():
            assert d["doc"] and d["lo"] is not None and d["hi"] is not None, (spec.name, d)


def test_tuning_one_parameter_changes_only_that_strategy_code_version(tmp_path: Path) -> None:
    base = _versions(registry.load(tmp_path / "none.toml"))
    cfg = tmp_path / "strategies.toml"
    cfg.write_text("[ema_cross]\nfast_period = 40\n")
    tuned = _versions(registry.load(cfg))
    assert tuned["ema_cross"] != base["ema_cross"]
    assert {k: v for k, v in tuned.items() if k != "ema_cross"} == {k: v for k, v in base.items() if k != "ema_cross"}
    # the same value as the default gives the same version as no config
    cfg.write_text("[ema_cross]\nfast_period = 30\n")
    assert _versions(registry.load(cfg)) == base


def test_a_variant_becomes_a_new_strategy(tmp_path: Path) -> None:
    cfg = tmp_path / "strategies.toml"
    cfg.write_text('[ema_slow]\nbase = "ema_cross"\nslow_period = 2000\n')
    specs = registry.load(cfg)
    assert specs["ema_slow"].resolved()["slow_period"] == 2000
    assert specs["ema_slow"].impl == specs["ema_cross"].impl
    assert _versions(specs)["ema_slow"] != _versions(specs)["ema_cross"]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[ema_cross]\nfast_period = 1\n", r"ema_cross.fast_period = 1: out of range, expected int in \[2, 100000\]"),
        ("[ema_cross]\nfast_period = 300\n", "fast_period must be below slow_period"),
        ("[ema_cross]\nfast_period = 2.5\n", "expected an integer"),
        ('[ema_cross]\nnotional = "big"\n', "expected float"),
        ("[ema_cross]\nspeed = 3\n", "unknown parameter 'speed'"),
        ("[market_maker]\ninterval_ms = -1\n", "interval_ms = -1.0: out of range"),
        ("[nope]\nx = 1\n", "not a registered strategy"),
        ('[x]\nbase = "nope"\n', "is not a built-in strategy"),
        ("[ema_cross\n", "not valid TOML"),
    ],
)
def test_bad_parameters_are_rejected_with_the_strategy_parameter_and_range(tmp_path: Path, toml: str, message: str) -> None:
    cfg = tmp_path / "strategies.toml"
    cfg.write_text(toml)
    with pytest.raises(ParamError, match=message) as err:
        registry.load(cfg)
    assert str(cfg) in str(err.value)
