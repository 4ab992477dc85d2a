//! Integration tests of every `aws` action against a real moto server (TESTING.md), with the
//! fault proxy in front of it for capacity and throttling answers.
//!
//! One moto server per test binary, started on first use (`scripts/peers/moto.sh` installs it);
//! each test works in its own region, so tests run in parallel without seeing each other.
//! Without moto: `skipped: ...`, or a failure when `ENGINE_REQUIRE_PEERS=1`.

use connector_aws::client::{items, text, Params};
use connector_aws::testing::{ec2, TEST_SECRET_KEY, UBUNTU_AMI};
use connector_aws::{userdata, AmiLookup, Availability, CostEstimate, GpuTypes, InstanceCreate, InstanceTerminate, SecurityGroupCreate};
use engine_connector::harness::Harness;
use engine_connector::{DynAction, ErrorKind, StepContext};
use engine_faultproxy::{Fault, FaultProxy, Match, Rule};
use serde_json::{json, Value};

fn moto() -> Option<&'static str> {
    connector_aws::testing::moto()
}

fn settings(endpoint: &str, region: &str) -> Value {
    connector_aws::testing::settings(endpoint, region)
}

fn harness(step: &str, endpoint: &str, region: &str) -> Harness {
    let mut h = Harness::new(step);
    h.settings = settings(endpoint, region);
    h
}

async fn call(endpoint: &str, region: &str, action: &str, p: &Params) -> String {
    let (ec2, cx) = ec2(endpoint, region);
    ec2.call(&cx, action, &p.0).await.unwrap_or_else(|e| panic!("{action}: {e}"))
}

async fn live_instances_with_key(endpoint: &str, region: &str, key: &str) -> Vec<String> {
    let (ec2, cx) = ec2(endpoint, region);
    connector_aws::ops::find_by_key(&ec2, &cx, key).await.unwrap().into_iter().map(|i| i.id).collect()
}

#[test]
fn gpu_types_validation_and_table() {
    let a = GpuTypes;
    for bad in [json!({"gpu_type": "nvidia-k80"}), json!({"gpu_type": "nvidia-a100", "gpu_count": 2}), json!({"instance_type": "t3.micro"}), json!({"gpu_count": 1})] {
        let e = a.validate_value(&bad).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid, "{bad}");
        assert!(e.message.contains("valid") || e.message.contains("needs"), "{}", e.message);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let out = rt.block_on(a.run_value(json!({"gpu_type": "nvidia-v100", "gpu_count": 4}), &StepContext::detached("t"))).unwrap();
    assert_eq!(out["selected"]["instance_type"], "p3.8xlarge");
    assert_eq!(out["selected"]["gpu_memory_gb"], 16);
    assert!(out["types"].as_array().unwrap().iter().all(|t| t["gpu_type"] == "nvidia-v100"));
    assert!(out["table"].as_array().unwrap().iter().any(|r| r["gpu_type"] == "nvidia-a100" && r["gpu_count"] == 8 && r["instance_type"] == "p4d.24xlarge"));
    // instance.create validates the same way, before any network.
    let e = InstanceCreate.validate_value(&json!({"gpu": {"type": "nvidia-t4", "count": 3}})).unwrap_err();
    assert!(e.message.contains("1, 4, 8"), "{}", e.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ami_lookup_deep_learning_fallback_and_cache() {
    let Some(url) = moto() else { return };
    let region = "us-west-1";
    let h = harness("ami", url, region);
    // moto's Deep Learning AMIs are 2017 ones; ask for their names.
    let out = h.run(&AmiLookup, json!({"name_patterns": ["Deep Learning AMI Ubuntu Linux - *"]})).await.unwrap();
    assert_eq!(out.image_id, "ami-dca37ea5");
    assert!(!out.fallback && !out.cached && !out.driver_install_needed);
    assert_eq!(out.ssh_user, "ubuntu");
    let again = h.run(&AmiLookup, json!({"name_patterns": ["Deep Learning AMI Ubuntu Linux - *"]})).await.unwrap();
    assert!(again.cached);
    assert_eq!(again.image_id, out.image_id);

    // The default patterns (today's DLAMIs) match nothing in moto: fallback to Ubuntu.
    let fb = h.run(&AmiLookup, json!({"fallback_name_patterns": ["ubuntu/images/hvm-ssd/ubuntu-*-amd64-server-*"]})).await.unwrap();
    assert!(fb.fallback && fb.driver_install_needed);
    assert!(fb.reason.as_deref().unwrap().contains("no Deep Learning AMI"));
    assert_eq!(fb.image_id, UBUNTU_AMI, "newest Ubuntu (16.04 over 14.04)");
    assert_eq!(fb.owner_id, "099720109477");

    // Nothing at all: not_found; no fallback: not_found.
    let e = h.run(&AmiLookup, json!({"cache": false})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    let e = h.run(&AmiLookup, json!({"fallback": false, "cache": false})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);

    // File cache: a second process (a fresh key here) reads it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ami.json");
    let mut h2 = harness("ami2", url, region);
    h2.settings["ami_cache_file"] = json!(file);
    let out = h2.run(&AmiLookup, json!({"name_patterns": ["Deep Learning AMI Amazon Linux*"]})).await.unwrap();
    assert_eq!(out.ssh_user, "ec2-user");
    let cached: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(cached.as_object().unwrap().len(), 1);
    assert!(cached.to_string().contains("ami-999844e0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_create_user_data_volume_group_tags_retry_and_undo() {
    let Some(url) = moto() else { return };
    let region = "eu-west-1";
    let h = harness("gpu-box", url, region);
    let input = json!({
        "gpu": {"type": "nvidia-t4", "count": 1},
        "ami": UBUNTU_AMI,
        "volume_gb": 150,
        "user_data": "#!/bin/bash\necho my-own-part > /tmp/mine",
        "tags": {"team": "ml"},
    });
    let out = h.run(&InstanceCreate, input.clone()).await.unwrap();
    assert_eq!(out.instance_type, "g4dn.xlarge");
    assert_eq!(out.provider, "aws");
    assert_eq!(out.region, region);
    assert!(out.zone.starts_with(region));
    assert_eq!(out.image, UBUNTU_AMI);
    assert_eq!(out.state, "running");
    assert_eq!(out.ssh_user, "ubuntu");
    let gpu = out.gpu.as_ref().unwrap();
    assert_eq!((gpu.model.as_str(), gpu.count, gpu.memory_gb), ("NVIDIA T4", 1, 16));
    assert_eq!(out.gpu_type.as_deref(), Some("nvidia-t4"));
    assert_eq!(out.hourly_price, Some(0.526));
    assert!(!out.spot && !out.adopted && !out.ami_fallback);
    assert!(out.private_ip.is_some());
    h.assert_intent_before_create();
    let progress = h.recorded().progress.clone();
    assert!(progress.iter().any(|(_, p)| *p == Some(100)), "{progress:?}");
    let key = "harness-run/gpu-box";

    // The user data that reached moto: the GPU part (with driver install: not a DLAMI), then ours.
    let mut p = Params::new();
    p.set("InstanceId", &out.id).set("Attribute", "userData");
    let xml = call(url, region, "DescribeInstanceAttribute", &p).await;
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let b64 = doc.descendants().find(|n| n.has_tag_name("userData")).and_then(|n| text(n, "value")).expect("userData");
    let ud = userdata::decode(&b64).unwrap();
    for needle in ["nvidia-smi -pm 1", "ubuntu-drivers install", "nvidia-container-toolkit", "nvidia-ctk runtime configure --runtime=docker", "systemctl restart docker"] {
        assert!(ud.contains(needle), "user data lacks {needle}");
    }
    assert!(ud.find("nvidia-ctk").unwrap() < ud.find("echo my-own-part").unwrap());

    // The root volume: encrypted gp3 of the asked size.
    let mut p = Params::new();
    p.filters(&[("attachment.instance-id", vec![out.id.clone()])]);
    let xml = call(url, region, "DescribeVolumes", &p).await;
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let vols = items(doc.root_element(), "volumeSet");
    assert_eq!(vols.len(), 1, "{xml}");
    assert_eq!(text(vols[0], "encrypted").as_deref(), Some("true"));
    assert_eq!(text(vols[0], "volumeType").as_deref(), Some("gp3"));
    assert_eq!(text(vols[0], "size").as_deref(), Some("150"));

    // The group made for it: no inbound rule at all.
    let sg = out.security_group_id.clone().unwrap();
    let (c, cx) = ec2(url, region);
    assert!(connector_aws::ops::group_ingress_ports(&c, &cx, &sg).await.unwrap().is_empty());

    // Tags.
    let inst = connector_aws::ops::describe_instances(&c, &cx, std::slice::from_ref(&out.id), &[]).await.unwrap().remove(0);
    assert_eq!(inst.tags.get("engine:key").map(String::as_str), Some(key));
    assert_eq!(inst.tags.get("engine:run").map(String::as_str), Some("harness-run"));
    assert_eq!(inst.tags.get("engine:step").map(String::as_str), Some("gpu-box"));
    assert_eq!(inst.tags.get("team").map(String::as_str), Some("ml"));
    assert_eq!(inst.security_groups, std::slice::from_ref(&sg));

    // A retry of the step adopts: still exactly one instance.
    let again = h.run(&InstanceCreate, input).await.unwrap();
    assert_eq!(again.id, out.id);
    assert!(again.adopted);
    assert_eq!(again.security_group_id.as_deref(), Some(sg.as_str()));
    assert_eq!(live_instances_with_key(url, region, key).await, std::slice::from_ref(&out.id));

    // Undo: terminated, group gone; and again (gone = done), and from the key alone.
    h.assert_undo_idempotent(&InstanceCreate).await;
    let inst = connector_aws::ops::describe_instances(&c, &cx, std::slice::from_ref(&out.id), &[]).await.unwrap().remove(0);
    assert_eq!(inst.state, "terminated");
    let mut p = Params::new();
    p.set("GroupId.1", &sg);
    let e = c.call(&cx, "DescribeSecurityGroups", &p.0).await.unwrap_err();
    assert_eq!(e.code(), Some("InvalidGroup.NotFound"), "{e}");
    assert!(live_instances_with_key(url, region, key).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_instance_with_open_ports_then_terminate() {
    let Some(url) = moto() else { return };
    let region = "us-west-2";
    let h = harness("spot", url, region);
    let out = h
        .run(&InstanceCreate, json!({"instance_type": "g5.xlarge", "ami": UBUNTU_AMI, "spot": true, "max_price": 0.6, "open_ports": [22, 8888], "ingress_cidrs": ["203.0.113.0/24"], "wait_for": "running"}))
        .await
        .unwrap();
    assert!(out.spot);
    assert_eq!(out.hourly_price, Some(0.6));
    let (c, cx) = ec2(url, region);
    let sg = out.security_group_id.clone().unwrap();
    assert_eq!(connector_aws::ops::group_ingress_ports(&c, &cx, &sg).await.unwrap(), [22, 8888]);

    let t = h.run(&InstanceTerminate, json!({"instance_id": out.id})).await.unwrap();
    assert_eq!(t.terminated, std::slice::from_ref(&out.id));
    let t = h.run(&InstanceTerminate, json!({"instance_ids": [out.id], "delete_security_group": sg})).await.unwrap();
    assert!(t.terminated.is_empty() && t.security_group_deleted);
    assert_eq!(t.already_gone.len(), 1);
    // Undo after both are gone: done.
    let rec = h.created().remove(0);
    InstanceCreate.undo_value(&rec, &h.context()).await.unwrap();
    let e = InstanceTerminate.validate_value(&json!({"instance_id": "sg-1"})).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_group_create_adopt_and_undo() {
    let Some(url) = moto() else { return };
    let region = "eu-central-1";
    let h = harness("web-sg", url, region);
    let out = h.run(&SecurityGroupCreate, json!({"name": "engine-test-web", "ports": [443]})).await.unwrap();
    assert!(!out.adopted);
    let (c, cx) = ec2(url, region);
    assert_eq!(connector_aws::ops::group_ingress_ports(&c, &cx, &out.security_group_id).await.unwrap(), [443]);
    let again = h.run(&SecurityGroupCreate, json!({"name": "engine-test-web", "ports": [443]})).await.unwrap();
    assert!(again.adopted);
    assert_eq!(again.security_group_id, out.security_group_id);
    // Another step may not take it over.
    let other = harness("other", url, region);
    let e = other.run(&SecurityGroupCreate, json!({"name": "engine-test-web"})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
    h.assert_intent_before_create();
    h.assert_undo_idempotent(&SecurityGroupCreate).await;
    assert!(connector_aws::ops::find_group(&c, &cx, "engine-test-web", None).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_offerings_spot_prices_and_alternatives() {
    let Some(url) = moto() else { return };
    let region = "us-east-2";
    let h = harness("avail", url, region);
    let out = h.run(&Availability, json!({"gpu": {"type": "nvidia-a10g", "count": 1}})).await.unwrap();
    assert_eq!(out.instance_type, "g5.xlarge");
    assert!(out.available, "{out:?}");
    assert!(!out.zones.is_empty() && out.zones.iter().all(|z| z.starts_with(region)));
    assert!(out.alternatives.is_empty());
    assert!(!out.spot_prices.is_empty());

    let out = h.run(&Availability, json!({"instance_type": "g4dn.xlarge", "availability_zone": "us-east-2z", "spot": false})).await.unwrap();
    assert!(!out.available);
    assert_eq!(out.alternatives[0].reason, "same type, another zone");
    assert_eq!(out.alternatives[0].instance_type, "g4dn.xlarge");
    assert!(out.alternatives.iter().any(|a| a.reason == "next size"));
    let e = h.run(&Availability, json!({"instance_type": "g4dn.xlarge", "availability_zone": "us-east-2z", "require": true})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Capacity);
    assert!(e.message.contains("alternatives"), "{}", e.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_estimate_table_and_live() {
    let h = Harness::new("cost");
    let out = h.run(&CostEstimate, json!({"gpu": {"type": "nvidia-t4"}, "count": 2, "hours": 10, "live": false})).await.unwrap();
    assert_eq!(out.instance_type, "g4dn.xlarge");
    assert_eq!(out.spot_source, "table");
    assert!((out.total_on_demand - 0.526 * 20.0).abs() < 1e-6);
    assert!(out.spot_savings_percent > 50.0);
    assert_eq!(out.price_date, connector_aws::catalog::PRICE_TABLE_DATE);
    assert!(CostEstimate.validate_value(&json!({"instance_type": "t3.micro"})).is_err());
    assert!(CostEstimate.validate_value(&json!({"instance_type": "g5.xlarge", "hours": 0})).is_err());

    let Some(url) = moto() else { return };
    let h = harness("cost", url, "ap-northeast-1");
    let out = h.run(&CostEstimate, json!({"instance_type": "g5.xlarge", "hours": 730, "spot": true})).await.unwrap();
    // moto answers spot prices (dummies): live when positive, else the table, and it says which.
    assert!(out.spot_source == "live" || out.notes.iter().any(|n| n.contains("no usable spot price")), "{out:?}");
    assert!((out.total - out.spot_hourly * 730.0).abs() < 0.01);
    assert_eq!(out.hourly_price, out.spot_hourly);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_and_throttling_through_the_fault_proxy() {
    let Some(url) = moto() else { return };
    let region = "ap-southeast-1";
    let proxy = FaultProxy::start(url).await.unwrap();
    proxy.add_rule(Rule::once(Fault::Ec2InsufficientCapacity).matching(Match::ec2_action("RunInstances")));
    let h = harness("cap", &proxy.url(), region);
    let input = json!({"instance_type": "g4dn.xlarge", "ami": UBUNTU_AMI, "wait_for": "running"});
    let e = h.run(&InstanceCreate, input.clone()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Capacity, "{e}");
    assert!(e.message.contains("InsufficientInstanceCapacity"), "{}", e.message);
    assert!(!e.message.contains(TEST_SECRET_KEY));
    // Nothing leaked: no instance, and the group made for it was removed.
    assert!(live_instances_with_key(url, region, "harness-run/cap").await.is_empty());
    let (c, cx) = ec2(url, region);
    assert!(connector_aws::ops::find_groups_by_key(&c, &cx, "harness-run/cap").await.unwrap().is_empty());

    // Throttled once: transient; the engine's retry (same key) then makes exactly one.
    proxy.add_rule(Rule::once(Fault::Ec2Throttling).matching(Match::ec2_action("RunInstances")));
    let h = harness("thr", &proxy.url(), region);
    let e = h.run(&InstanceCreate, input.clone()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains("RequestLimitExceeded"));
    let out = h.run(&InstanceCreate, input).await.unwrap();
    assert_eq!(live_instances_with_key(url, region, "harness-run/thr").await, std::slice::from_ref(&out.id));
    // Throttling while waiting is absorbed by the poll.
    proxy.add_rule(Rule::times(2, Fault::Ec2Throttling).matching(Match::ec2_action("DescribeInstances")));
    h.assert_undo_idempotent(&InstanceCreate).await;
    assert!(live_instances_with_key(url, region, "harness-run/thr").await.is_empty());
    assert!(proxy.requests().iter().filter(|r| r.faulted).count() >= 3);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ami_is_invalid_and_no_credentials_is_auth() {
    let Some(url) = moto() else { return };
    let region = "sa-east-1";
    let h = harness("bad", url, region);
    let e = h.run(&InstanceCreate, json!({"instance_type": "g5.xlarge", "ami": "ami-00000000deadbeef"})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
    let e = h.run(&InstanceCreate, json!({"instance_type": "g5.nonsense", "ami": UBUNTU_AMI, "wait_for": "none"})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
    let mut h = Harness::new("nocreds");
    h.settings = json!({"endpoint": url, "region": region, "profile": "does-not-exist"});
    let e = h.run(&AmiLookup, json!({})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
}
