"""Month × universe partitions (issue 24): a universe slice reads exactly its members' month, a
member's new month makes only that month of its universe stale, and the mapping serialises."""

from __future__ import annotations

import dagster as dg

from quant_assets.partitions import members_of_month, month_symbol_partitions, month_universe_partitions


def test_a_universe_slice_reads_its_members_month_and_only_theirs():
    mu = month_universe_partitions("btc_basis")
    mapping = members_of_month(["BTCUSDT", "btcusdt-perp"])

    @dg.asset(partitions_def=month_symbol_partitions)
    def ticks(): ...

    @dg.asset(partitions_def=mu, ins={"ticks": dg.AssetIn(partition_mapping=mapping)})
    def multi_basis_btc_basis(ticks): ...

    defs = dg.Definitions(assets=[ticks, multi_basis_btc_basis])
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("symbols", ["BTCUSDT", "BTCUSDT-PERP", "ETHUSDT"])
        from dagster._core.definitions.partitions.context import partition_loading_context

        with partition_loading_context(dynamic_partitions_store=inst):
            up = mapping.get_upstream_mapped_partitions_result_for_partitions(
                mu.subset_with_partition_keys(["2024-02|btc_basis"]), mu, month_symbol_partitions)
            assert sorted(up.partitions_subset.get_partition_keys()) == ["2024-02|BTCUSDT", "2024-02|BTCUSDT-PERP"]
            down = lambda k: sorted(mapping.get_downstream_partitions_for_partitions(  # noqa: E731
                month_symbol_partitions.subset_with_partition_keys([k]), month_symbol_partitions, mu).get_partition_keys())
            assert down("2024-02|BTCUSDT-PERP") == ["2024-02|btc_basis"]
            assert down("2024-02|ETHUSDT") == []
        from dagster._core.remote_representation.external_data import RepositorySnap

        RepositorySnap.from_def(defs.get_repository_def())  # built-in mappings only: the UI and daemon can load it
