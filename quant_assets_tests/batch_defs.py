"""The code location of test_batching's backfills: the ingest assets and their 1-minute bars
(the cheapest month × symbol chain: ticks with its five blocking checks, funding, the book ("none"
on these L1 files), bars)."""

import dagster as dg

from quant_assets.assets.book import book
from quant_assets.assets.funding import funding
from quant_assets.assets.research import bars_asset
from quant_assets.assets.ticks import ticks
from resources import LakeResource

ASSETS = [ticks, funding, book, bars_asset("1m")]
defs = dg.Definitions(assets=ASSETS, resources={"lake": LakeResource()}, executor=dg.in_process_executor)
