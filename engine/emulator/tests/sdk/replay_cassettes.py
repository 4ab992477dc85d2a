"""Replays the official Scaleway Python SDK's recorded real API exchanges
(VCR cassettes, `scaleway/instance/v1/tests/cassettes/*.yaml` in the sdist)
against the emulator.

For each recorded request whose endpoint the emulator implements, in the
recorded order, the same method, path, query and body go to the emulator,
with the recorded ids of resources it created earlier in the cassette
replaced by the emulator's ids. The answer must have the same status class,
and a JSON body with the same keys and value types as the recorded one,
recursively (ids, dates and counts differ; `null` in either matches any
type, since a nullable field's value depends on the resource's state).
Requests naming resources the cassette never created (fixtures made in
another cassette) are answered against resources the replay creates first
(see FIXTURES). Exchanges the emulator does not implement are listed as
skipped.

Usage: SCW_API_URL=... SCW_SECRET_KEY=... python replay_cassettes.py CASSETTE_DIR
"""

import json
import os
import re
import sys
import glob
import time
import urllib.parse

import requests
import yaml

BASE = os.environ["SCW_API_URL"]
SECRET = os.environ["SCW_SECRET_KEY"]
RECORDED_HOST = "https://api.scaleway.com"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
IMPLEMENTED = [
    r"^/instance/v1/zones/[^/]+/servers(/[^/]+(/(action|attach-volume|detach-volume|user_data(/[^/]+)?))?)?$",
    r"^/instance/v1/zones/[^/]+/ips(/[^/]+)?$",
    r"^/instance/v1/zones/[^/]+/security_groups(/[^/]+(/rules(/[^/]+)?)?)?$",
    r"^/instance/v1/zones/[^/]+/(images|products/servers)(/.*)?$",
    r"^/block/v1(alpha1)?/zones/[^/]+/volumes(/[^/]+)?$",
    r"^/marketplace/v2/.*$",
]
# Recorded ids of resources that other cassettes (pytest fixtures) created.
FIXTURES = {
    "56f0c6bd-b659-4aec-b885-c408b4f9c93d": "server",  # test-sdk-python-fixture, DEV1-S + l_ssd
    "66a3b25b-4518-43c3-9e61-33b82873d617": "server",  # server.cassette fixture
    # The SBS volume test_attach_additional_volume attached, which the
    # instance_volume fixture's teardown detaches and deletes.
    "6a371d9d-1edb-4c62-a49b-33852b4704d1": "attached_volume",
}
FIXTURE_SERVER = "56f0c6bd-b659-4aec-b885-c408b4f9c93d"
HEADERS = {"X-Auth-Token": SECRET, "Content-Type": "application/json"}


def shape(value):
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def compare(recorded, got, path, problems):
    if recorded is None or got is None:
        return
    if isinstance(recorded, dict):
        if not isinstance(got, dict):
            problems.append(f"{path}: recorded an object, got {got!r}")
            return
        # Maps keyed by ids or slots ("volumes": {"0": ...}) compare by value shape only.
        if recorded and all(UUID.fullmatch(k) or k.isdigit() for k in recorded):
            if got:
                compare(next(iter(recorded.values())), next(iter(got.values())), path + "[*]", problems)
            return
        missing = sorted(set(recorded) - set(got))
        extra = sorted(set(got) - set(recorded))
        if missing:
            problems.append(f"{path}: missing keys {missing}")
        if extra:
            problems.append(f"{path}: extra keys {extra}")
        for k in set(recorded) & set(got):
            compare(recorded[k], got[k], f"{path}.{k}", problems)
    elif isinstance(recorded, list):
        if not isinstance(got, list):
            problems.append(f"{path}: recorded a list, got {got!r}")
        elif recorded and got:
            compare(recorded[0], got[0], path + "[0]", problems)
    elif recorded != got:
        problems.append(f"{path}: recorded {recorded}, got {got}")


def make_fixture(kind, ids):
    if kind == "attached_volume":
        r = requests.post(f"{BASE}/block/v1alpha1/zones/fr-par-1/volumes", headers=HEADERS,
                          json={"from_empty": {"size": 10000000000}, "name": "vol-fixture"})
        r.raise_for_status()
        vid = r.json()["id"]
        for _ in range(200):  # the recorded test waited for it (wait_for_volume)
            if requests.get(f"{BASE}/block/v1alpha1/zones/fr-par-1/volumes/{vid}", headers=HEADERS).json()["status"] == "available":
                break
            time.sleep(0.05)
        server = ids.get(FIXTURE_SERVER) or make_fixture("server", ids)
        ids.setdefault(FIXTURE_SERVER, server)
        r = requests.post(f"{BASE}/instance/v1/zones/fr-par-1/servers/{server}/attach-volume", headers=HEADERS,
                          json={"volume_id": vid, "volume_type": "sbs_volume"})
        r.raise_for_status()
        return vid
    body = {"commercial_type": "DEV1-S", "name": "test-sdk-python-fixture", "dynamic_ip_required": False,
            "image": "c00ae53c-1e29-4087-a384-47f3c5c1cd84", "volumes": {"0": {"volume_type": "l_ssd", "boot": False, "size": 10000000000}},
            "protected": False, "boot_type": "local"}
    r = requests.post(f"{BASE}/instance/v1/zones/fr-par-1/servers", headers=HEADERS, json=body)
    r.raise_for_status()
    return r.json()["server"]["id"]


def collect_ids(recorded, got, ids):
    """Maps recorded ids to emulator ids found at the same place."""
    if isinstance(recorded, dict) and isinstance(got, dict):
        for k, v in recorded.items():
            if k == "id" and isinstance(v, str) and isinstance(got.get("id"), str):
                ids.setdefault(v, got["id"])
            elif k in got:
                collect_ids(v, got[k], ids)
    elif isinstance(recorded, list) and isinstance(got, list):
        for a, b in zip(recorded, got):
            collect_ids(a, b, ids)


def main():
    files = sorted(glob.glob(os.path.join(sys.argv[1], "*.yaml")))
    if not files:
        print("FAIL: no cassettes in", sys.argv[1])
        sys.exit(1)
    replayed, skipped, failures = 0, [], []
    for f in files:
        name = os.path.basename(f)
        # Each cassette is a test of its own: a fresh account, fixtures made on demand.
        requests.post(f"{BASE}/__emulator/reset").raise_for_status()
        ids = {}
        for n, it in enumerate(yaml.safe_load(open(f))["interactions"]):
            rq, rs = it["request"], it["response"]
            url = rq["uri"].replace(RECORDED_HOST, "")
            parsed = urllib.parse.urlsplit(url)
            path = urllib.parse.unquote(parsed.path)
            where = f"{name}#{n} {rq['method']} {path}"
            if not any(re.match(p, path) for p in IMPLEMENTED):
                skipped.append(where)
                continue
            raw_body = rq.get("body") or ""
            if isinstance(raw_body, bytes):
                raw_body = raw_body.decode()
            for rid, kind in FIXTURES.items():
                if (rid in url or rid in raw_body) and rid not in ids:
                    ids[rid] = make_fixture(kind, ids)
            for rid, eid in ids.items():
                url = url.replace(rid, eid)
            body = rq.get("body")
            if isinstance(body, bytes):
                body = body.decode()
            if body:
                for rid, eid in ids.items():
                    body = body.replace(rid, eid)
            headers = dict(HEADERS)
            if "user_data/" in path and rq["method"] == "PATCH":
                headers["Content-Type"] = "text/plain"
            data = body.encode() if body and rq["method"] != "GET" else None
            got = requests.request(rq["method"], BASE + url, headers=headers, data=data)
            want = rs["status"]["code"]
            if got.status_code // 100 != want // 100:
                failures.append(f"{where}: status {got.status_code}, recorded {want}: {got.text[:300]}")
                continue
            rec_body = rs["body"]["string"]
            if isinstance(rec_body, bytes):
                rec_body = rec_body.decode()
            if rec_body:
                try:
                    rec_json = json.loads(rec_body)
                except ValueError:
                    if got.text != rec_body:
                        failures.append(f"{where}: text {got.text!r}, recorded {rec_body!r}")
                    else:
                        print(f"ok: {where} -> {got.status_code} (same text)", flush=True)
                    replayed += 1
                    continue
                try:
                    got_json = got.json()
                except ValueError:
                    failures.append(f"{where}: not JSON: {got.text[:200]}")
                    continue
                problems = []
                compare(shape(rec_json), shape(got_json), "$", problems)
                if problems:
                    failures.append(f"{where}: " + "; ".join(problems[:8]))
                collect_ids(rec_json, got_json, ids)
                if "x-total-count" in {k.lower() for k in rs["headers"]} and "x-total-count" not in {k.lower() for k in got.headers}:
                    failures.append(f"{where}: recorded an X-Total-Count header, got none")
            replayed += 1
            print(f"ok: {where} -> {got.status_code}", flush=True)
    for s in skipped:
        print(f"skipped (not emulated): {s}")
    print(f"replayed {replayed} recorded exchanges, skipped {len(skipped)}, {len(failures)} failures")
    for fl in failures:
        print(f"FAIL: {fl}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
