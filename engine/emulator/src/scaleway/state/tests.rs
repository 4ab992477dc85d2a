//! Unit tests of the state machine, on a fake clock (`now` is passed in).

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};

use super::*;

const Z: &str = "fr-par-2";
const GPU_IMAGE: &str = "5c3d28db-33ce-4997-8572-f49506339283";
const P: &str = "11111111-1111-1111-1111-111111111111";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn state() -> State {
    State::new(P, 1.0)
}

fn create_gpu(st: &mut State) -> (String, String) {
    let r = st
        .create_server(Z, &json!({"name": "gpu", "commercial_type": "L4-1-24G", "image": GPU_IMAGE, "dynamic_ip_required": true, "tags": ["k"]}))
        .unwrap();
    assert_eq!(r.status, 201);
    let s = &r.body.unwrap()["server"];
    (
        s["id"].as_str().unwrap().to_owned(),
        s["volumes"]["0"]["id"].as_str().unwrap().to_owned(),
    )
}

fn server_state(st: &State, id: &str) -> Value {
    st.get_server(Z, id).unwrap().body.unwrap()["server"].clone()
}

fn volume(st: &State, id: &str) -> Value {
    st.get_block_volume(Z, id).unwrap().body.unwrap()
}

#[test]
fn image_only_create_makes_a_20gb_sbs_boot_volume() {
    let mut st = state();
    let (sid, vid) = create_gpu(&mut st);
    let s = server_state(&st, &sid);
    assert_eq!(s["state"], "stopped");
    assert_eq!(s["volumes"]["0"]["volume_type"], "sbs_volume");
    assert_eq!(s["security_group"]["name"], "Default security group");
    let v = volume(&st, &vid);
    assert_eq!(v["size"], 20_000_000_000_u64);
    assert_eq!(v["status"], "in_use");
    assert_eq!(v["references"][0]["product_resource_id"], sid.as_str());
}

#[test]
fn resize_grows_only_and_blocks_poweron_until_done() {
    let mut st = state();
    let (sid, vid) = create_gpu(&mut st);
    let shrink = st.update_block_volume(Z, &vid, &json!({"size": 10_000_000_000_u64}), secs(0));
    assert!(matches!(shrink, Err(ApiError::InvalidArguments { .. })));
    let r = st
        .update_block_volume(Z, &vid, &json!({"size": 200_000_000_000_u64}), secs(0))
        .unwrap();
    assert_eq!(r.body.unwrap()["status"], "updating");
    assert!(matches!(
        st.update_block_volume(Z, &vid, &json!({"size": 300_000_000_000_u64}), secs(1)),
        Err(ApiError::TransientState { .. })
    ));
    assert!(matches!(
        st.server_action(Z, &sid, &json!({"action": "poweron"}), secs(1)),
        Err(ApiError::InvalidRequest { .. })
    ));
    st.advance(secs(4));
    assert_eq!(volume(&st, &vid)["status"], "updating");
    st.advance(secs(5));
    let v = volume(&st, &vid);
    assert_eq!(v["status"], "in_use");
    assert_eq!(v["size"], 200_000_000_000_u64);
    assert_eq!(
        st.server_action(Z, &sid, &json!({"action": "poweron"}), secs(5))
            .unwrap()
            .status,
        202
    );
}

#[test]
fn power_cycle_follows_the_durations_and_gives_a_dynamic_ip_while_running() {
    let mut st = state();
    let (sid, _) = create_gpu(&mut st);
    let task = st
        .server_action(Z, &sid, &json!({"action": "poweron"}), secs(10))
        .unwrap()
        .body
        .unwrap();
    assert_eq!(task["task"]["status"], "pending");
    assert_eq!(server_state(&st, &sid)["state"], "starting");
    assert!(matches!(
        st.delete_server(Z, &sid),
        Err(ApiError::InvalidRequest { .. })
    ));
    st.advance(secs(39));
    assert_eq!(server_state(&st, &sid)["state"], "starting");
    assert_eq!(server_state(&st, &sid)["public_ip"], Value::Null);
    st.advance(secs(40));
    let s = server_state(&st, &sid);
    assert_eq!(s["state"], "running");
    assert_eq!(s["public_ip"]["dynamic"], true);
    assert!(s["allowed_actions"]
        .as_array()
        .unwrap()
        .contains(&json!("poweroff")));
    assert!(matches!(
        st.server_action(Z, &sid, &json!({"action": "poweron"}), secs(40)),
        Err(ApiError::InvalidRequest { .. })
    ));
    assert!(matches!(
        st.delete_server(Z, &sid),
        Err(ApiError::InvalidRequest { .. })
    ));
    st.server_action(Z, &sid, &json!({"action": "poweroff"}), secs(50))
        .unwrap();
    assert_eq!(server_state(&st, &sid)["state"], "stopping");
    st.advance(secs(65));
    let s = server_state(&st, &sid);
    assert_eq!(s["state"], "stopped");
    assert_eq!(s["public_ips"], json!([]));
}

#[test]
fn time_scale_zero_is_instant() {
    let mut st = State::new(P, 0.0);
    let (sid, _) = create_gpu(&mut st);
    st.server_action(Z, &sid, &json!({"action": "poweron"}), secs(0))
        .unwrap();
    st.advance(secs(0));
    assert_eq!(server_state(&st, &sid)["state"], "running");
}

#[test]
fn delete_detaches_sbs_volumes_and_terminate_deletes_them() {
    let mut st = State::new(P, 0.0);
    let (sid, vid) = create_gpu(&mut st);
    assert!(matches!(
        st.delete_block_volume(Z, &vid),
        Err(ApiError::PreconditionFailed { .. })
    ));
    st.delete_server(Z, &sid).unwrap();
    let v = volume(&st, &vid);
    assert_eq!(v["status"], "available");
    assert_eq!(v["references"], json!([]));
    st.delete_block_volume(Z, &vid).unwrap();

    let (sid, vid) = create_gpu(&mut st);
    st.server_action(Z, &sid, &json!({"action": "poweron"}), secs(0))
        .unwrap();
    st.advance(secs(0));
    st.server_action(Z, &sid, &json!({"action": "terminate"}), secs(0))
        .unwrap();
    st.advance(secs(0));
    assert!(matches!(
        st.get_server(Z, &sid),
        Err(ApiError::UnknownResource(_))
    ));
    assert!(matches!(
        st.get_block_volume(Z, &vid),
        Err(ApiError::NotFound { .. })
    ));
    let snap = st.snapshot();
    assert_eq!(snap["servers"], json!([]));
    assert_eq!(snap["volumes"], json!([]));
}

#[test]
fn gpu_types_refuse_local_volumes_and_other_zones() {
    let mut st = state();
    let local = st.create_server(Z, &json!({"commercial_type": "L40S-1-48G", "image": GPU_IMAGE, "volumes": {"0": {"volume_type": "l_ssd", "size": 20_000_000_000_u64}}}));
    assert!(matches!(
        local,
        Err(ApiError::InvalidRequest {
            fields: Some(_),
            ..
        })
    ));
    let zone = st.create_server("fr-par-1", &json!({"commercial_type": "H100-1-80G"}));
    let Err(ApiError::InvalidRequest {
        fields: Some(fields),
        ..
    }) = zone
    else {
        panic!("{zone:?}")
    };
    assert!(
        fields["commercial_type"][0]
            .as_str()
            .unwrap()
            .contains("fr-par-2"),
        "names the zones that have it"
    );
    let dev = st
        .create_server(
            "fr-par-1",
            &json!({"commercial_type": "DEV1-S", "image": "c00ae53c-1e29-4087-a384-47f3c5c1cd84"}),
        )
        .unwrap();
    assert_eq!(
        dev.body.unwrap()["server"]["volumes"]["0"]["volume_type"],
        "l_ssd"
    );
}

#[test]
fn shortage_refuses_create_and_poweron_with_out_of_stock() {
    let mut st = state();
    let (sid, _) = create_gpu(&mut st);
    st.set_stock(Z, "L4-1-24G", Stock::Shortage);
    assert_eq!(
        st.create_server(
            Z,
            &json!({"commercial_type": "L4-1-24G", "image": GPU_IMAGE})
        ),
        Err(ApiError::OutOfStock)
    );
    assert_eq!(
        st.server_action(Z, &sid, &json!({"action": "poweron"}), secs(0)),
        Err(ApiError::OutOfStock)
    );
    let avail = st.availability(Z, Page::default()).body.unwrap();
    assert_eq!(avail["servers"]["L4-1-24G"]["availability"], "shortage");
    assert_eq!(avail["servers"]["L40S-1-48G"]["availability"], "available");
}

#[test]
fn flexible_ip_attaches_and_outlives_the_server() {
    let mut st = State::new(P, 0.0);
    let (sid, _) = create_gpu(&mut st);
    let ip = st
        .create_ip(Z, &json!({"type": "routed_ipv4"}))
        .unwrap()
        .body
        .unwrap()["ip"]
        .clone();
    let ip_id = ip["id"].as_str().unwrap();
    st.update_ip(Z, ip_id, &json!({"server": sid})).unwrap();
    st.server_action(Z, &sid, &json!({"action": "poweron"}), secs(0))
        .unwrap();
    st.advance(secs(0));
    let s = server_state(&st, &sid);
    assert_eq!(
        s["public_ips"].as_array().unwrap().len(),
        1,
        "no dynamic ip on top of a flexible one"
    );
    assert_eq!(s["public_ip"]["address"], ip["address"]);
    assert_eq!(s["public_ip"]["dynamic"], false);
    st.server_action(Z, &sid, &json!({"action": "poweroff"}), secs(0))
        .unwrap();
    st.advance(secs(0));
    st.delete_server(Z, &sid).unwrap();
    let ip = st.get_ip(Z, ip_id).unwrap().body.unwrap();
    assert_eq!(ip["ip"]["state"], "detached");
    assert_eq!(ip["ip"]["server"], Value::Null);
}

#[test]
fn tags_filter_servers_and_groups_keep_rules() {
    let mut st = state();
    let (sid, _) = create_gpu(&mut st);
    st.create_server(Z, &json!({"commercial_type": "PRO2-S", "tags": ["other"]}))
        .unwrap();
    let f = ListFilters {
        tags: vec!["k".to_owned()],
        ..ListFilters::default()
    };
    let r = st.list_servers(Z, &f, Page::default());
    assert_eq!(r.total, Some(1));
    assert_eq!(r.body.unwrap()["servers"][0]["id"], sid.as_str());
    let groups = st
        .list_groups(Z, &ListFilters::default(), Page::default())
        .body
        .unwrap();
    let gid = groups["security_groups"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rule = st.create_rule(Z, &gid, &json!({"protocol": "tcp", "direction": "inbound", "action": "accept", "dest_port_from": 22})).unwrap();
    assert_eq!(rule.body.unwrap()["rule"]["protocol"], "TCP");
    assert_eq!(
        st.list_rules(Z, &gid, Page::default()).unwrap().total,
        Some(4)
    );
    assert!(matches!(
        st.create_rule(Z, &gid, &json!({"dest_port_from": 70_000})),
        Err(ApiError::InvalidRequest { .. })
    ));
}

#[test]
fn pages_and_dates() {
    let (items, total) = Page {
        page: 2,
        per_page: 2,
    }
    .slice(vec![1, 2, 3, 4, 5]);
    assert_eq!((items, total), (vec![3, 4], 5));
    let (items, _) = Page {
        page: 9,
        per_page: 2,
    }
    .slice(vec![1]);
    assert!(items.is_empty());
    let t = UNIX_EPOCH + Duration::from_micros(1_756_799_298_035_029);
    assert_eq!(rfc3339(t, false), "2025-09-02T07:48:18.035029+00:00");
    assert_eq!(rfc3339(t, true), "2025-09-02T07:48:18.035029Z");
}

#[test]
fn public_ips_come_from_the_pool_lowest_free_first_and_survive_reset() {
    assert_eq!(
        IpPool::parse("127.0.0.10-127.0.0.11").unwrap(),
        IpPool::parse("127.0.0.10/2").unwrap()
    );
    assert!(IpPool::parse("127.0.0.11-127.0.0.10").is_err());
    assert!(IpPool::parse("127.0.0.10").is_err());
    let mut st = State::new(P, 0.0);
    st.set_ip_pool(Some(IpPool::parse("127.0.0.10/2").unwrap()));
    let boot = |st: &mut State| {
        let (sid, _) = create_gpu(st);
        st.server_action(Z, &sid, &json!({"action": "poweron"}), secs(0))
            .unwrap();
        st.advance(secs(0));
        let ip = server_state(st, &sid)["public_ip"]["address"]
            .as_str()
            .unwrap()
            .to_owned();
        (sid, ip)
    };
    let (a, ip_a) = boot(&mut st);
    let (_, ip_b) = boot(&mut st);
    assert_eq!((ip_a.as_str(), ip_b.as_str()), ("127.0.0.10", "127.0.0.11"));
    // The pool is spent: the default range.
    let (_, ip_c) = boot(&mut st);
    assert!(ip_c.starts_with("51.15"), "{ip_c}");
    // A stopped server gives its address back; the next server gets it.
    st.server_action(Z, &a, &json!({"action": "poweroff"}), secs(0))
        .unwrap();
    st.advance(secs(0));
    assert_eq!(boot(&mut st).1, "127.0.0.10");
    st.reset();
    assert_eq!(boot(&mut st).1, "127.0.0.10");
}
