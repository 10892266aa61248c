"""``venue_profile``: the venue settings of each symbol (one partition per symbol).

The work is :func:`quant_assets.venues.scope.symbol_venue`; this module wires it to Dagster. The
data version of a symbol's partition is the version of its venue settings (profile, fee rows,
margin, its instruments.toml table). Backtests and realism sensitivities depend on it through
``MultiToSingleDimensionPartitionMapping("symbol")``: editing the settings of one venue gives new
data versions to that venue's symbols only, so only their slices become stale. The code version
is the digest of every venue setting: an edit makes every partition recompute its own (no data
is read; a few milliseconds each), and a partition whose settings did not move keeps its data
version, so nothing downstream of it is stale.
"""

import dagster as dg

from quant_assets.automation import rebuild_venue_profiles
from quant_assets.batching import BACKFILL_POLICY, Built, build_slices
from quant_assets.partitions import symbol_partitions
from quant_assets.venues.scope import UnknownVenueError, config_digest, symbol_venue
from resources import LakeResource

VENUE_PROFILE = dg.AssetKey("venue_profile")

#: How the month × symbol assets that run an engine read their symbol's venue settings.
BY_SYMBOL = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="symbol")


def venue_dep() -> dg.AssetDep:
    """The dependency of a month × symbol asset on its symbol's venue settings."""
    return dg.AssetDep(VENUE_PROFILE, partition_mapping=BY_SYMBOL)


def venue_profile_asset() -> dg.AssetsDefinition:
    @dg.asset(
        name="venue_profile",
        partitions_def=symbol_partitions,
        code_version=f"venue-profile-{config_digest()}",
        group_name="venues",
        kinds={"toml"},
        automation_condition=rebuild_venue_profiles(),
        backfill_policy=BACKFILL_POLICY,
        description=(
            "The venue settings each symbol's backtests run under: its venue profile (latency, fills, queue, "
            "synthetic depth; venues.toml), fee schedule rows and margin (instruments.toml) and its own "
            "instruments.toml table. The data version is their digest: editing one venue makes only the "
            "backtests and realism sensitivities of that venue's symbols stale. Nothing is written to the lake."
        ),
    )
    def venue_profile(context: dg.AssetExecutionContext, lake: LakeResource):
        the_lake = lake.lake()

        def build_one(symbol: str) -> Built:
            try:
                sv = symbol_venue(the_lake, symbol)
            except (UnknownVenueError, ValueError) as exc:
                raise dg.Failure(description=f"venue_profile {symbol}: {exc}", allow_retries=False) from exc
            p = sv.profile
            return Built(
                metadata={
                    "venue": sv.venue,
                    "kind": sv.kind,
                    "fee_tier": sv.fee_tier,
                    "venue_from": sv.venue_from,
                    "profile": str(p["label"]),
                    "profile_source": str(p["source"]),
                    "entry_latency_ms": dg.MetadataValue.float(float(p["entry_latency_ms"])),
                    "response_latency_ms": dg.MetadataValue.float(float(p["response_latency_ms"])),
                    "latency_model": str(p["latency_model"]),
                    "queue_model": str(p["queue_model"]),
                    "stop_fill": str(p["stop_fill"]),
                    "synthetic_depth": dg.MetadataValue.float(float(p["synthetic_depth"])),
                    "fee_rows": dg.MetadataValue.json(sv.fees),
                    "margin": dg.MetadataValue.json(sv.margin),
                    "overrides": dg.MetadataValue.json(sv.overrides),
                    "settings_version": sv.version,
                },
                data_version=sv.version,
            )

        yield from build_slices(context, build_one)

    return venue_profile
