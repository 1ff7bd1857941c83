"""Hole 7: a node writes its own registry key and nothing else, headers included.

A node may publish only `$KV.nmc_registry.<collective>.<its name>`, but with the header
`Nats-Rollup: all` that one publish purged every other record of the bucket (4 records
became 1). Now the bucket refuses rollups (and purges and deletes by the API), and the
broker refuses a node's publish to any other key or to the purge and delete API.
"""

from __future__ import annotations

from nmc.client.registry import registry_discover
from nmc.protocol.registry import RegistryEntry, registry_key
from tests.adversarial.brokerkit import REFUSED, js_api, published, registry_entry, stream_info
from tests.adversarial.kit import HostileFleet, until

REGISTRY = "KV_nmc_registry"


def _key(identity: str) -> str:
    return f"$KV.nmc_registry.{registry_key('nmc', identity)}"


async def test_a_node_cannot_roll_up_purge_or_delete_other_records(hostile: HostileFleet):
    errors: list[str] = []
    admin = await hostile.connect_as("admin", errors=errors)
    node9_errors: list[str] = []
    node9 = await hostile.connect_as("node9.example.net", errors=node9_errors)
    own = _key("node9.example.net")
    record = RegistryEntry(identity="node9.example.net", collective="nmc").to_bytes()
    ack = await js_api(node9, own, record, errors=node9_errors)  # its own key: allowed, as before
    assert ack is not None and ack.get("stream") == REGISTRY, ack
    assert (await stream_info(admin, REGISTRY, errors))["state"]["messages"] == 4

    for rollup in ("all", "sub"):
        answer = await js_api(node9, own, record, errors=node9_errors, headers={"Nats-Rollup": rollup})
        assert answer is not None and "rollup not permitted" in answer.get("error", {}).get("description", ""), answer
    for subject, body in ((f"$JS.API.STREAM.PURGE.{REGISTRY}", {"filter": "$KV.nmc_registry.>"}),
                          (f"$JS.API.STREAM.MSG.DELETE.{REGISTRY}", {"seq": 1})):
        assert await js_api(node9, subject, body, errors=node9_errors) is REFUSED, subject
    other = _key("node1.example.net")
    assert not await published(node9, other, b"", node9_errors, headers={"KV-Operation": "DEL"})
    assert not await published(node9, other, record, node9_errors)

    assert (await stream_info(admin, REGISTRY, errors))["state"]["messages"] == 4
    for identity in hostile.identities:
        assert (await registry_entry(admin, identity, errors)).identity == identity
    found = await registry_discover(admin, "nmc", "")
    assert sorted(e.identity for e in found) == sorted([*hostile.identities, "node9.example.net"])


async def test_a_leaf_connection_cannot_roll_up_the_bucket_either(hostile: HostileFleet):
    # A site's leaf server may write every key (it carries the site's nodes), but no rollup.
    errors: list[str] = []
    site = await hostile.connect_as("site1", errors=errors)
    answer = await js_api(site, _key("far.site1.test"), b"{}", errors=errors, headers={"Nats-Rollup": "all"})
    assert answer is not None and "rollup not permitted" in answer.get("error", {}).get("description", ""), answer
    admin_errors: list[str] = []
    admin = await hostile.connect_as("admin", errors=admin_errors)
    assert (await stream_info(admin, REGISTRY, admin_errors))["state"]["messages"] == len(hostile.identities)


async def test_a_node_puts_back_its_record_after_the_broker_was_made_to_overwrite_it(hostile: HostileFleet):
    # nats-server does not check the reply subject of a JetStream API request against the asker's
    # permissions: a user that may only read the registry has the server post its JSON answer onto
    # a node's key, which the bucket stores as that node's record. The node hears the foreign
    # write on its own key and puts its record back.
    from nmc.protocol.registry import RecordError
    from nmc.services.registry import RegistryPublisher

    errors: list[str] = []
    mallory = await hostile.connect_as("mallory", errors=errors)
    admin = await hostile.connect_as("admin", errors=errors)
    victim_node = hostile.nodes[0]
    victim = victim_node.identity
    publisher = next(c for c in victim_node.companions if isinstance(c, RegistryPublisher))
    puts_before = publisher.puts
    assert await published(mallory, f"$JS.API.STREAM.INFO.{REGISTRY}", b"", errors, reply=_key(victim))

    async def repaired() -> bool:
        try:
            return (await registry_entry(admin, victim, errors)).identity == victim
        except RecordError:
            return False

    await until(lambda: publisher.overwrites >= 1, 5.0, "the node to hear the foreign write on its key")
    await until(repaired, 5.0, f"{victim}'s record to be put back")
    assert publisher.puts > puts_before  # put back by the node, not by its regular refresh (60 s away)
    assert sorted(e.identity for e in await registry_discover(admin, "nmc", "")) == sorted(hostile.identities)
