"""Drives the Scaleway emulator with the official Scaleway Python SDK.

Every endpoint the emulator implements is called through the SDK's typed
API, and every answer goes through the SDK's own unmarshalling. On top of
that, `strict()` walks each returned dataclass and fails on a field the SDK
types as required (not `Optional`) that came back missing, and on an enum
value the SDK does not know: the SDK itself tolerates both, the real API
never sends them.

Usage: SCW_API_URL=... SCW_SECRET_KEY=... SCW_DEFAULT_PROJECT_ID=... python sdk_fidelity.py
Prints `ok: ...` per check; exits 1 on the first failure.
"""

import dataclasses
import enum
import os
import sys
import time
import typing

import requests
from scaleway import Client
from scaleway.block.v1 import BlockV1API
from scaleway.block.v1alpha1 import BlockV1Alpha1API
from scaleway.block.v1alpha1.types import CreateVolumeRequestFromEmpty
from scaleway.instance.v1 import (
    InstanceV1API,
    SecurityGroupRuleAction,
    SecurityGroupRuleDirection,
    SecurityGroupRuleProtocol,
    ServerAction,
    VolumeServerTemplate,
    VolumeVolumeType,
)
from scaleway.instance.v1.custom_api import InstanceUtilsV1API
from scaleway.marketplace.v2 import MarketplaceV2API
from scaleway.product_catalog.v2alpha1 import ProductCatalogV2Alpha1PublicCatalogAPI
from scaleway_core.api import ScalewayException

BASE = os.environ["SCW_API_URL"]
SECRET = os.environ["SCW_SECRET_KEY"]
PROJECT = os.environ["SCW_DEFAULT_PROJECT_ID"]
ZONE = "fr-par-2"


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def ok(msg):
    print(f"ok: {msg}", flush=True)


def check(cond, msg):
    if not cond:
        fail(msg)


def _is_optional(hint):
    return typing.get_origin(hint) is typing.Union and type(None) in typing.get_args(hint)


def strict(obj, path="$"):
    """Required fields present, enum values known, recursively."""
    if dataclasses.is_dataclass(obj):
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            hint = hints.get(f.name)
            if value is None and not _is_optional(hint):
                fail(f"{path}.{f.name}: required by the SDK's types ({hint}) but missing")
            inner = typing.get_args(hint)[0] if _is_optional(hint) else hint
            if isinstance(inner, type) and issubclass(inner, enum.Enum) and value is not None:
                # Case-insensitive: the Python SDK lower-cases some enums the
                # API answers upper-case (security group rule protocol "TCP").
                known = {str(e.value).lower() for e in inner}
                if str(value).lower() not in known:
                    fail(f"{path}.{f.name}: {value!r} is not a {inner.__name__} ({sorted(known)})")
            strict(value, f"{path}.{f.name}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            strict(v, f"{path}[{i}]")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            strict(v, f"{path}[{k!r}]")
    return obj


def expect_error(fn, status, err_type, what):
    try:
        fn()
    except ScalewayException as e:
        body = e.response.json()
        check(e.status_code == status, f"{what}: status {e.status_code}, expected {status}: {body}")
        check(body.get("type") == err_type, f"{what}: type {body.get('type')!r}, expected {err_type!r}: {body}")
        check(isinstance(body.get("message"), str), f"{what}: no message: {body}")
        ok(f"{what} -> {status} {err_type}")
        return body
    fail(f"{what}: no error")


def wait(fn, cond, what, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        value = fn()
        if cond(value):
            return value
        time.sleep(0.05)
    fail(f"timed out waiting for {what}")


def main():
    client = Client(
        access_key="SCWXXXXXXXXXXXXXXXXX",
        secret_key=SECRET,
        default_project_id=PROJECT,
        default_organization_id=PROJECT,
        default_region="fr-par",
        default_zone=ZONE,
        api_url=BASE,
    )
    instance = InstanceUtilsV1API(client)
    block = BlockV1Alpha1API(client)
    block_v1 = BlockV1API(client)
    market = MarketplaceV2API(client)
    catalog = ProductCatalogV2Alpha1PublicCatalogAPI(client)

    # --- auth --------------------------------------------------------------
    bad = Client(access_key="SCWXXXXXXXXXXXXXXXXX", secret_key="00000000-0000-0000-0000-000000000000",
                 default_project_id=PROJECT, default_zone=ZONE, api_url=BASE)
    body = expect_error(lambda: InstanceV1API(bad).list_servers(), 401, "denied_authentication", "wrong token")
    check(body.get("method") == "api_key", f"401 body: {body}")
    r = requests.get(f"{BASE}/instance/v1/zones/{ZONE}/servers")
    check(r.status_code == 401 and r.json()["type"] == "denied_authentication", f"no token: {r.status_code} {r.text}")
    ok("no token -> 401")

    # --- products, availability, images, marketplace, catalogue ------------------
    types = strict(instance.list_servers_types(zone=ZONE, per_page=100))
    check("L4-1-24G" in types.servers and types.servers["L4-1-24G"].gpu_info.gpu_name == "L4", "L4 in fr-par-2 products")
    check(types.servers["L4-1-24G"].hourly_price > 0, "hourly_price")
    check(int(types.total_count) == len(types.servers), "products total_count from X-Total-Count")
    ok(f"list_servers_types: {len(types.servers)} types")
    all_types = strict(instance.list_servers_types(zone="fr-par-1", per_page=100)).servers
    check("L4-1-24G" not in all_types and "DEV1-S" in all_types, "fr-par-1 has no L4")
    ok("list_servers_types fr-par-1")
    avail = strict(instance.get_server_types_availability(zone=ZONE, per_page=100))
    check(str(avail.servers["L4-1-24G"].availability) == "available", "availability")
    requests.post(f"{BASE}/__emulator/stock", json={"zone": ZONE, "commercial_type": "L4-1-24G", "stock": "scarce"}).raise_for_status()
    avail = strict(instance.get_server_types_availability(zone=ZONE, per_page=100))
    check(str(avail.servers["L4-1-24G"].availability) == "scarce", "availability after set")
    ok("get_server_types_availability (settable)")

    images = strict(instance.list_images(zone=ZONE, per_page=100))
    check(images.images and all(i.zone == ZONE for i in images.images), "images listed")
    gpu_image = strict(instance.get_image(zone=ZONE, image_id="5c3d28db-33ce-4997-8572-f49506339283").image)
    check(str(gpu_image.root_volume.volume_type) == "sbs_snapshot", "seed-002 image is sbs_snapshot")
    ok("list_images / get_image")
    expect_error(lambda: instance.get_image(zone=ZONE, image_id="00000000-0000-4000-8000-000000000000"), 404, "unknown_resource", "get_image unknown")

    mimgs = strict(market.list_images(arch="x86_64", include_eol=False))
    check(any(i.label == "ubuntu_jammy_gpu_os_12" for i in mimgs.images), "marketplace GPU OS image")
    mimg = strict(market.get_image(image_id=mimgs.images[0].id))
    check(mimg.id == mimgs.images[0].id, "marketplace get_image")
    local = strict(market.list_local_images(image_label="ubuntu_jammy_gpu_os_12", zone=ZONE, type_="instance_sbs"))
    check(len(local.local_images) == 1 and "L4-1-24G" in local.local_images[0].compatible_commercial_types, "GPU OS local image for L4")
    gpu_os = local.local_images[0]
    jammy = strict(market.list_local_images(image_label="ubuntu_jammy", zone=ZONE, type_="instance_sbs"))
    check(all("L4-1-24G" not in i.compatible_commercial_types for i in jammy.local_images), "seed 000: ubuntu_jammy not for L4")
    check(strict(market.get_local_image(local_image_id=gpu_os.id)).id == gpu_os.id, "get_local_image")
    ok("marketplace list_images / get_image / list_local_images / get_local_image")
    products = strict(catalog.list_public_catalog_products(product_types=["instance"], zone=ZONE, page_size=100))
    l4p = [p for p in products.products if p.properties.instance and p.properties.instance.offer_id == "L4-1-24G"]
    check(l4p and l4p[0].price.retail_price.currency_code == "EUR", f"catalogue L4 price: {l4p[:1]}")
    ok("product catalogue list_public_catalog_products")

    # --- security groups ---------------------------------------------------------
    groups = strict(instance.list_security_groups(zone=ZONE))
    default = [g for g in groups.security_groups if g.project_default]
    check(len(default) == 1, "one default group")
    default = default[0]
    rules = strict(instance.list_security_group_rules(zone=ZONE, security_group_id=default.id))
    check(all(not r.editable for r in rules.rules), "default rules not editable")
    sg = strict(instance.create_security_group(zone=ZONE, name="emu-sg", description="d", stateful=True,
                                               inbound_default_policy="drop", outbound_default_policy="accept",
                                               tags=["emu"]).security_group)
    check(str(sg.inbound_default_policy) == "drop", "sg created")
    sg = strict(instance.update_security_group(zone=ZONE, security_group_id=sg.id, description="updated").security_group)
    check(sg.description == "updated", "sg updated")
    check(strict(instance.get_security_group(zone=ZONE, security_group_id=sg.id)).security_group.id == sg.id, "get sg")
    rule_ids = []
    for port in (22, 8000, 8080):
        rule = strict(instance.create_security_group_rule(
            zone=ZONE, security_group_id=sg.id, protocol=SecurityGroupRuleProtocol.TCP,
            direction=SecurityGroupRuleDirection.INBOUND, action=SecurityGroupRuleAction.ACCEPT,
            ip_range="0.0.0.0/0", position=0, editable=True, dest_port_from=port).rule)
        check(rule.dest_port_from == port, "rule port")
        rule_ids.append(rule.id)
    rules = strict(instance.list_security_group_rules(zone=ZONE, security_group_id=sg.id))
    check(sorted(r.dest_port_from for r in rules.rules) == [22, 8000, 8080], "three rules")
    check(len(instance.list_security_group_rules_all(zone=ZONE, security_group_id=sg.id)) == 3, "rules _all")
    strict(instance.get_security_group_rule(zone=ZONE, security_group_id=sg.id, security_group_rule_id=rule_ids[0]))
    instance.delete_security_group_rule(zone=ZONE, security_group_id=sg.id, security_group_rule_id=rule_ids[2])
    check(len(instance.list_security_group_rules(zone=ZONE, security_group_id=sg.id).rules) == 2, "rule deleted")
    expect_error(lambda: instance.delete_security_group_rule(zone=ZONE, security_group_id=default.id,
                                                             security_group_rule_id=strict(instance.list_security_group_rules(zone=ZONE, security_group_id=default.id)).rules[0].id),
                 400, "invalid_request_error", "delete non-editable rule")
    ok("security groups and rules")

    # --- IPs ---------------------------------------------------------------------
    ip = strict(instance.create_ip(zone=ZONE, type_="routed_ipv4", tags=["emu"]).ip)
    check(ip.address and str(ip.state) == "detached", "ip created")
    check(strict(instance.get_ip(zone=ZONE, ip=ip.id)).ip.address == ip.address, "get_ip")
    ips = strict(instance.list_ips(zone=ZONE))
    check(any(i.id == ip.id for i in ips.ips) and int(ips.total_count) >= 1, "list_ips")
    ip = strict(instance.update_ip(zone=ZONE, ip=ip.id, tags=["emu", "x"]).ip)
    check(ip.tags == ["emu", "x"], "update_ip tags")
    ok("IPs")

    # --- errors on create ----------------------------------------------------------
    expect_error(lambda: instance.create_server(zone="fr-par-1", commercial_type="L4-1-24G", name="x",
                                                image="c00ae53c-1e29-4087-a384-47f3c5c1cd84"),
                 400, "invalid_request_error", "GPU type in a zone without it")
    expect_error(lambda: instance.create_server(zone=ZONE, commercial_type="L4-1-24G", name="x",
                                                image=gpu_os.id,
                                                volumes={"0": VolumeServerTemplate(volume_type=VolumeVolumeType.L_SSD, size=20_000_000_000)}),
                 400, "invalid_request_error", "L4 refuses l_ssd")
    requests.post(f"{BASE}/__emulator/stock", json={"zone": ZONE, "commercial_type": "L40S-1-48G", "stock": "shortage"}).raise_for_status()
    body = expect_error(lambda: instance.create_server(zone=ZONE, commercial_type="L40S-1-48G", name="x", image=gpu_os.id),
                        412, "out_of_stock", "create in shortage")
    check(body.get("resource") == "server", f"out_of_stock resource: {body}")
    expect_error(lambda: instance.get_server(zone=ZONE, server_id="00000000-0000-4000-8000-000000000000"), 404, "unknown_resource", "get unknown server")

    # --- seed 002 sequence --------------------------------------------------------
    created = strict(instance.create_server(zone=ZONE, commercial_type="L4-1-24G", name="emu-gpu",
                                            image="5c3d28db-33ce-4997-8572-f49506339283",
                                            dynamic_ip_required=True, tags=["emu", "key-1"], security_group=sg.id))
    server = created.server
    check(str(server.state) == "stopped" and "poweron" in [str(a) for a in server.allowed_actions], "created stopped")
    check(list(server.volumes) == ["0"] and str(server.volumes["0"].volume_type) == "sbs_volume", f"one sbs volume: {server.volumes}")
    check(server.security_group.id == sg.id, "joined the given group")
    vol_id = server.volumes["0"].id
    vol = strict(block.get_volume(zone=ZONE, volume_id=vol_id))
    check(vol.size == 20_000_000_000 and str(vol.status) == "in_use", f"20 GB in_use: {vol.size} {vol.status}")
    check(vol.references[0].product_resource_id == server.id, "volume references the server")
    check(strict(block_v1.get_volume(zone=ZONE, volume_id=vol_id)).id == vol_id, "block v1 get_volume")
    listed = strict(block.list_volumes(zone=ZONE, product_resource_id=server.id))
    check([v.id for v in listed.volumes] == [vol_id], "list_volumes by server")
    check(vol_id in [v.id for v in block.list_volumes_all(zone=ZONE)], "list_volumes_all")
    check(vol_id in [v.id for v in block_v1.list_volumes(zone=ZONE, include_deleted=False).volumes], "block v1 list_volumes")
    expect_error(lambda: block.update_volume(zone=ZONE, volume_id=vol_id, size=10_000_000_000), 400, "invalid_arguments", "shrink refused")
    vol = strict(block.update_volume(zone=ZONE, volume_id=vol_id, size=200_000_000_000))
    check(vol.size == 200_000_000_000 and str(vol.status) == "updating", f"resize updating: {vol.status}")
    vol = strict(block.wait_for_volume(zone=ZONE, volume_id=vol_id))
    check(str(vol.status) == "in_use", f"resize done: {vol.status}")
    ok("seed 002: image-only create makes a 20 GB SBS volume, grown to 200 GB before poweron")
    expect_error(lambda: block.delete_volume(zone=ZONE, volume_id=vol_id), 412, "precondition_failed", "delete attached volume")

    by_tag = strict(instance.list_servers(zone=ZONE, tags=["key-1"]))
    check([s.id for s in by_tag.servers] == [server.id] and int(by_tag.total_count) == 1, "list by tag")
    check(instance.list_servers(zone=ZONE, tags=["nope"]).servers == [], "no match by tag")
    check(server.id in [s.id for s in instance.list_servers_all(zone=ZONE)], "list_servers_all")
    ok("list_servers with tags")

    instance.set_server_user_data(server_id=server.id, key="cloud-init", content=b"#cloud-config\n", zone=ZONE)
    check(strict(instance.list_server_user_data(zone=ZONE, server_id=server.id)).user_data == ["cloud-init"], "user_data list")
    check(instance.get_server_user_data(server_id=server.id, key="cloud-init", zone=ZONE).content == b"#cloud-config\n", "user_data get")
    instance.delete_server_user_data(zone=ZONE, server_id=server.id, key="cloud-init")
    check(instance.list_server_user_data(zone=ZONE, server_id=server.id).user_data == [], "user_data deleted")
    ok("user_data")

    updated = strict(instance._update_server(zone=ZONE, server_id=server.id, name="emu-gpu-2", tags=["emu", "key-1", "more"]))
    check(updated.server.name == "emu-gpu-2", "update_server")

    task = strict(instance.server_action(zone=ZONE, server_id=server.id, action=ServerAction.POWERON).task)
    check(str(task.status) in ("pending", "started"), "poweron task")
    expect_error(lambda: instance.delete_server(zone=ZONE, server_id=server.id), 400, "invalid_request_error", "delete while starting")
    running = wait(lambda: strict(instance.get_server(zone=ZONE, server_id=server.id)).server,
                   lambda s: str(s.state) == "running", "running")
    check(running.public_ip is not None and running.public_ip.address, "dynamic public IP once running")
    ok(f"poweron: stopped -> starting -> running, public ip {running.public_ip.address}")
    expect_error(lambda: instance.delete_server(zone=ZONE, server_id=server.id), 400, "invalid_request_error", "delete while running")

    # flexible IP attach on a running server, then detach by deleting it
    ip = strict(instance.update_ip(zone=ZONE, ip=ip.id, server=server.id).ip)
    check(ip.server.id == server.id and str(ip.state) == "attached", "ip attached")
    s = strict(instance.get_server(zone=ZONE, server_id=server.id)).server
    check([p.address for p in s.public_ips] == [ip.address], f"server public_ips is the flexible ip: {s.public_ips}")

    strict(instance.server_action(zone=ZONE, server_id=server.id, action=ServerAction.REBOOT))
    wait(lambda: instance.get_server(zone=ZONE, server_id=server.id).server, lambda s: str(s.state) == "running", "running after reboot")
    strict(instance.server_action(zone=ZONE, server_id=server.id, action=ServerAction.POWEROFF))
    wait(lambda: instance.get_server(zone=ZONE, server_id=server.id).server, lambda s: str(s.state) == "stopped", "stopped")
    ok("reboot and poweroff: running -> stopping -> stopped")
    expect_error(lambda: instance.delete_security_group(zone=ZONE, security_group_id=sg.id), 400, "invalid_request_error", "delete group in use")

    instance.delete_server(zone=ZONE, server_id=server.id)
    vol = strict(block.get_volume(zone=ZONE, volume_id=vol_id))
    check(str(vol.status) == "available" and vol.references == [], "SBS volume detached and kept after DELETE")
    block.delete_volume(zone=ZONE, volume_id=vol_id)
    expect_error(lambda: block.get_volume(zone=ZONE, volume_id=vol_id), 404, "not_found", "deleted volume")
    ip = strict(instance.get_ip(zone=ZONE, ip=ip.id).ip)
    check(ip.server is None, "ip detached when the server went")
    instance.delete_ip(zone=ZONE, ip=ip.id)
    instance.delete_security_group(zone=ZONE, security_group_id=sg.id)
    ok("delete server, volume, ip, group")

    # --- local volumes, attach/detach, terminate ------------------------------------
    dev = strict(instance.create_server(zone="fr-par-1", commercial_type="DEV1-S", name="emu-dev",
                                        image="c00ae53c-1e29-4087-a384-47f3c5c1cd84", dynamic_ip_required=False)).server
    check(str(dev.volumes["0"].volume_type) == "l_ssd" and dev.volumes["0"].size == 20_000_000_000, "DEV1-S local root")
    check(dev.security_group.name == "Default security group", "default group joined")
    extra = strict(block.create_volume(zone="fr-par-1", name="emu-extra", from_empty=CreateVolumeRequestFromEmpty(size=10_000_000_000)))
    strict(block.wait_for_volume(zone="fr-par-1", volume_id=extra.id))
    attached = strict(instance.attach_server_volume(zone="fr-par-1", server_id=dev.id, volume_id=extra.id, volume_type="sbs_volume")).server
    check(extra.id in [v.id for v in attached.volumes.values()], "attached")
    detached = strict(instance.detach_server_volume(zone="fr-par-1", server_id=dev.id, volume_id=extra.id)).server
    check(extra.id not in [v.id for v in detached.volumes.values()], "detached")
    block.delete_volume(zone="fr-par-1", volume_id=extra.id)
    strict(instance.server_action(zone="fr-par-1", server_id=dev.id, action=ServerAction.POWERON))
    wait(lambda: instance.get_server(zone="fr-par-1", server_id=dev.id).server, lambda s: str(s.state) == "running", "dev running")
    strict(instance.server_action(zone="fr-par-1", server_id=dev.id, action=ServerAction.TERMINATE))

    def gone():
        try:
            instance.get_server(zone="fr-par-1", server_id=dev.id)
            return False
        except ScalewayException as e:
            return e.status_code == 404
    wait(gone, lambda g: g, "terminated")
    ok("local volumes, attach/detach, terminate")

    state = requests.get(f"{BASE}/__emulator/state").json()
    check(state["servers"] == [] and state["volumes"] == [] and state["local_volumes"] == [] and state["ips"] == [],
          f"emulator empty: {state}")
    ok("emulator left empty")
    print("all sdk checks passed", flush=True)


if __name__ == "__main__":
    main()
