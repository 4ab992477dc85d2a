//! The `container` connector against the machine's real Docker Engine (no mocks): there is no
//! registry, so the tests use `engine-test/busybox:1`, an image built here FROM scratch with
//! Debian's static busybox (`scripts/peers/docker-images.sh` makes it; these tests build it
//! themselves when `/bin/busybox` is static and the image is missing).
//!
//! Without a daemon or the image the tests print `skipped: ...` and pass, unless
//! `ENGINE_REQUIRE_PEERS=1`, which makes them fail naming the script.
//!
//! Every test uses its own step name (so its own `engine.key` label and container names), and a
//! [`Cleanup`] guard removes what it made even when an assertion fails.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::query_parameters::{BuildImageOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use connector_container::{ContainerConnector, Dialer, RemoteTransport, UnixDialer, KIND};
use engine_connector::harness::Harness;
use engine_connector::{Action, ConnectorError, DynAction, ErrorKind, LogStream, ResourceRecord, ResourceState, StepContext};
use futures_util::StreamExt;
use serde_json::{json, Value};

const IMAGE: &str = "engine-test/busybox:1";
const SCRIPT: &str = "scripts/peers/docker-images.sh";
/// Kept in step with scripts/peers/docker-images.sh.
const DOCKERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && /bin/busybox mkdir -p /tmp /etc /root && /bin/busybox chmod 1777 /tmp && echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd && echo 'nobody:x:65534:65534:nobody:/:/bin/false' >> /etc/passwd && echo 'root:x:0:' > /etc/group && echo 'nogroup:x:65534:' >> /etc/group"]
LABEL org.opencontainers.image.title="engine-test busybox" engine.test="1"
CMD ["/bin/sh"]
"#;

/// The daemon the tests use: `DOCKER_HOST`, else the local socket.
async fn docker() -> Result<Docker, String> {
    let d = Docker::connect_with_defaults().map_err(|e| format!("no Docker daemon: {e}"))?;
    d.negotiate_version().await.map_err(|e| format!("the Docker daemon does not answer: {e}"))
}

fn busybox_is_static() -> bool {
    std::path::Path::new("/bin/busybox").exists()
        && std::process::Command::new("ldd").arg("/bin/busybox").output().is_ok_and(|o| !o.status.success())
}

/// Build the test image from the static busybox, as the script does, through the daemon's API.
async fn build_image(d: &Docker) -> Result<(), String> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(DOCKERFILE.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "Dockerfile", DOCKERFILE.as_bytes()).map_err(|e| e.to_string())?;
    tar.append_path_with_name("/bin/busybox", "busybox").map_err(|e| e.to_string())?;
    let context = tar.into_inner().map_err(|e| e.to_string())?;
    let options = BuildImageOptionsBuilder::new().dockerfile("Dockerfile").t(IMAGE).rm(true).forcerm(true).build();
    let mut s = d.build_image(options, None, Some(bollard::body_full(bytes::Bytes::from(context))));
    while let Some(item) = s.next().await {
        let info = item.map_err(|e| format!("building {IMAGE}: {e}"))?;
        if let Some(e) = info.error_detail.and_then(|d| d.message) {
            return Err(format!("building {IMAGE}: {e}"));
        }
    }
    Ok(())
}

/// Docker answers and the image is there (built now if it can be).
async fn prepare() -> Result<(), String> {
    let d = docker().await?;
    if d.inspect_image(IMAGE).await.is_ok() {
        return Ok(());
    }
    if !busybox_is_static() {
        return Err(format!("{IMAGE} is missing and /bin/busybox is not Debian's static busybox (busybox-static)"));
    }
    build_image(&d).await?;
    d.inspect_image(IMAGE).await.map(|_| ()).map_err(|e| format!("{IMAGE} is still missing after the build: {e}"))
}

/// Whether the peer is there; decided once per test binary, on a thread of its own so that
/// concurrent tests wait for one build.
fn peer_ready() -> Result<(), String> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY
        .get_or_init(|| {
            std::thread::spawn(|| tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(prepare()))
                .join()
                .unwrap_or_else(|_| Err("preparing the peer panicked".into()))
        })
        .clone()
}

/// `Some` when the test can run; `None` after printing why it is skipped.
fn require(test: &str) -> Option<()> {
    match peer_ready() {
        Ok(()) => Some(()),
        Err(why) => {
            assert!(std::env::var("ENGINE_REQUIRE_PEERS").as_deref() != Ok("1"), "{test}: {why}; run {SCRIPT} (ENGINE_REQUIRE_PEERS=1)");
            eprintln!("skipped: {test}: {why}; run {SCRIPT} to get the Docker peer");
            None
        }
    }
}

/// A step name no other test, or other run of the tests, uses.
fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{tag}-{}-{nanos:x}", std::process::id())
}

/// Removes, on drop, every container labelled with one of `keys` or named one of `names`.
struct Cleanup {
    keys: Vec<String>,
    names: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let keys = std::mem::take(&mut self.keys);
        let names = std::mem::take(&mut self.names);
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async move {
                let Ok(d) = docker().await else { return };
                let mut ids = names;
                for key in keys {
                    ids.extend(containers_with_key(&d, &key).await.into_iter().map(|(id, _)| id));
                }
                for id in ids {
                    let _ = d.remove_container(&id, Some(RemoveContainerOptionsBuilder::new().force(true).v(true).build())).await;
                }
            });
        })
        .join();
    }
}

/// `(id, state)` of the containers labelled `engine.key=KEY`.
async fn containers_with_key(d: &Docker, key: &str) -> Vec<(String, String)> {
    let filters = HashMap::from([("label", vec![format!("engine.key={key}")])]);
    let list = d.list_containers(Some(ListContainersOptionsBuilder::new().all(true).filters(&filters).build())).await.unwrap_or_default();
    list.into_iter().map(|c| (c.id.unwrap_or_default(), c.state.map(|s| s.to_string()).unwrap_or_default())).collect()
}

/// A harness for a fresh step, and the guard that cleans up after it.
fn step(tag: &str) -> (Harness, Cleanup) {
    let h = Harness::new(&unique(tag));
    let key = h.context().idempotency_key();
    (h, Cleanup { keys: vec![key], names: Vec::new() })
}

fn last_state(h: &Harness) -> ResourceState {
    h.recorded().records.last().expect("a record").state
}

#[tokio::test]
async fn run_waits_for_the_exit_and_returns_code_and_output() {
    let Some(()) = require("run_waits_for_the_exit_and_returns_code_and_output") else { return };
    let c = ContainerConnector::new();
    let (h, _g) = step("wait");
    let out = h.run(&c.run(), json!({"image": IMAGE, "command": ["sh", "-c", "echo out; echo err >&2; echo -n partial"]})).await.unwrap();
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.stdout, "out\npartial");
    assert_eq!(out.stderr, "err\n");
    assert_eq!(out.status, "exited");
    assert!(!out.adopted);
    h.assert_intent_before_create();
    {
        let rec = h.recorded();
        assert!(rec.logs.iter().any(|(s, l)| *s == LogStream::Stdout && l == "out"), "{:?}", rec.logs);
        assert!(rec.logs.iter().any(|(s, l)| *s == LogStream::Stderr && l == "err"), "{:?}", rec.logs);
        // The unfinished last line reaches the step log once, however the live stream ended.
        assert_eq!(rec.logs.iter().filter(|(s, l)| *s == LogStream::Stdout && l == "partial").count(), 1, "{:?}", rec.logs);
        let created = rec.records.iter().find(|r| r.state == ResourceState::Created).unwrap();
        assert_eq!((created.kind.as_str(), created.id.as_deref()), (KIND, Some(out.id.as_str())));
        assert_eq!(created.undo["name"], json!(out.name));
    }
    // The container stays, recorded, until undo.
    let d = docker().await.unwrap();
    assert_eq!(containers_with_key(&d, &h.context().idempotency_key()).await.len(), 1);

    // A non-zero exit fails the step with the end of stderr; `check: false` makes it an output.
    let (h, _g2) = step("wait-fail");
    let e = h.run(&c.run(), json!({"image": IMAGE, "command": "sh -c 'echo boom >&2; exit 3'"})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains("exited with code 3") && e.message.contains("boom"), "{}", e.message);
    let (h, _g3) = step("wait-nocheck");
    let out = h.run(&c.run(), json!({"image": IMAGE, "command": ["sh", "-c", "exit 3"], "check": false, "rm": true})).await.unwrap();
    assert_eq!(out.exit_code, Some(3));
    // `rm` removed it, and the record says so.
    assert!(containers_with_key(&d, &h.context().idempotency_key()).await.is_empty());
    assert_eq!(last_state(&h), ResourceState::Deleted);

    // A command the image does not have cannot start: `invalid`, and nothing is left behind.
    let (h, _g4) = step("wait-nocmd");
    let e = h.run(&c.run(), json!({"image": IMAGE, "command": ["no-such-command"]})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
    assert!(e.message.contains("executable file not found"), "{}", e.message);
    assert!(containers_with_key(&d, &h.context().idempotency_key()).await.is_empty());
}

#[tokio::test]
async fn detached_container_with_exec_logs_stop_and_remove() {
    let Some(()) = require("detached_container_with_exec_logs_stop_and_remove") else { return };
    let c = ContainerConnector::new();
    let (h, _g) = step("detached");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "from-host").unwrap();
    let input = json!({
        "image": IMAGE,
        "command": ["sh", "-c", "echo started; echo warned >&2; exec sleep 300"],
        "detach": true,
        "env": {"FOO": "bar baz"},
        "labels": {"team": "gpu"},
        "ports": ["127.0.0.1::8080", "9090/udp"],
        "volumes": [format!("{}:/data:ro", dir.path().display()), "/scratch"],
        "workdir": "/tmp",
        "user": "65534:65534",
        "hostname": "box1",
        "memory": "64m",
    });
    let out = h.run(&c.run(), input).await.unwrap();
    assert_eq!(out.status, "running");
    assert_eq!(out.exit_code, None);
    let bound = &out.ports["8080/tcp"];
    assert!(bound.len() == 1 && bound[0].starts_with("127.0.0.1:") && bound[0] != "127.0.0.1:", "{bound:?}");
    assert!(out.ports.contains_key("9090/udp"), "{:?}", out.ports);
    assert!(out.ip_address.is_some());

    // What the daemon really holds.
    let d = docker().await.unwrap();
    let i = d.inspect_container(&out.id, None).await.unwrap();
    let config = i.config.unwrap();
    assert!(config.env.unwrap().contains(&"FOO=bar baz".to_string()));
    let labels = config.labels.unwrap();
    assert_eq!(labels["team"], "gpu");
    assert_eq!(labels["engine.key"], h.context().idempotency_key());
    assert_eq!(config.working_dir.as_deref(), Some("/tmp"));
    assert_eq!(config.user.as_deref(), Some("65534:65534"));
    assert_eq!(config.hostname.as_deref(), Some("box1"));
    let host = i.host_config.unwrap();
    assert_eq!(host.memory, Some(64 << 20));
    let mounts = i.mounts.unwrap();
    assert!(mounts.iter().any(|m| m.destination.as_deref() == Some("/data") && m.rw == Some(false)), "{mounts:?}");
    assert!(mounts.iter().any(|m| m.destination.as_deref() == Some("/scratch")), "{mounts:?}");

    // exec sees the bind mount, the environment, the working directory and the user.
    let e = c.exec();
    let x = h.run(&e, json!({"container": out.name, "command": "cat /data/hello.txt"})).await.unwrap();
    assert_eq!((x.exit_code, x.stdout.as_str()), (0, "from-host"));
    let x = h.run(&e, json!({"container": out.id, "command": ["sh", "-c", "echo $FOO; pwd; id -u; echo $EXTRA; hostname"], "env": {"EXTRA": "1"}})).await.unwrap();
    assert_eq!(x.stdout, "bar baz\n/tmp\n65534\n1\nbox1\n");
    let x = h.run(&e, json!({"container": out.name, "command": ["sh", "-c", "echo no >&2; exit 4"], "check": false})).await.unwrap();
    assert_eq!((x.exit_code, x.stderr.as_str()), (4, "no\n"));
    let err = h.run(&e, json!({"container": out.name, "command": ["sh", "-c", "exit 4"]})).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    let err = h.run(&e, json!({"container": out.name, "command": ["no-such-command"]})).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Invalid, "{err}");

    // logs: both streams, one, the tail, timestamps, since.
    let l = c.logs();
    let all = h.run(&l, json!({"container": out.name})).await.unwrap();
    assert_eq!((all.stdout.as_str(), all.stderr.as_str(), all.lines), ("started\n", "warned\n", 2));
    let only_out = h.run(&l, json!({"container": out.name, "stderr": false, "timestamps": true})).await.unwrap();
    assert!(only_out.stderr.is_empty());
    assert!(only_out.stdout.starts_with("20") && only_out.stdout.trim_end().ends_with(" started"), "{}", only_out.stdout);
    // Docker cuts the tail from both streams together, then filters.
    let last = h.run(&l, json!({"container": out.name, "tail": 1})).await.unwrap();
    assert_eq!(last.lines, 1, "{last:?}");
    assert_eq!(h.run(&l, json!({"container": out.name, "since": "1h"})).await.unwrap().lines, 2);
    let future = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600).to_string();
    assert_eq!(h.run(&l, json!({"container": out.name, "since": future})).await.unwrap().lines, 0);

    // stop: `sleep` as PID 1 ignores SIGTERM, so SIGKILL after the 1s grace period.
    let s = h.run(&c.stop(), json!({"container": out.name, "timeout": "1s"})).await.unwrap();
    assert!(s.was_running);
    assert_eq!((s.status.as_str(), s.exit_code), ("exited", 137));
    let s = h.run(&c.stop(), json!({"container": out.name})).await.unwrap();
    assert!(!s.was_running);
    let err = h.run(&e, json!({"container": out.name, "command": "true"})).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict, "{err}");

    // remove, then the same again.
    let r = h.run(&c.remove(), json!({"container": out.name, "volumes": true})).await.unwrap();
    assert!(r.removed);
    assert_eq!(r.id.as_deref(), Some(out.id.as_str()));
    let err = h.run(&c.remove(), json!({"container": out.name})).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    assert!(!h.run(&c.remove(), json!({"container": out.name, "missing_ok": true})).await.unwrap().removed);
    let err = h.run(&l, json!({"container": out.name})).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    // Undo of the record finds it gone: done.
    let rec = h.created().pop().unwrap();
    c.run().undo_value(&rec, &h.context()).await.unwrap();
}

#[tokio::test]
async fn a_retry_adopts_the_container_and_undo_removes_it() {
    let Some(()) = require("a_retry_adopts_the_container_and_undo_removes_it") else { return };
    let c = ContainerConnector::new();
    let (h, _g) = step("adopt");
    let input = json!({"image": IMAGE, "command": ["sleep", "300"], "detach": true, "stop_timeout": "1s"});
    let first = h.run(&c.run(), input.clone()).await.unwrap();
    let second = h.run(&c.run(), input).await.unwrap();
    assert_eq!(first.id, second.id);
    assert_eq!(first.name, second.name);
    assert!(!first.adopted && second.adopted);
    h.assert_intent_before_create();
    let d = docker().await.unwrap();
    let key = h.context().idempotency_key();
    assert_eq!(containers_with_key(&d, &key).await.len(), 1);

    // Undo twice, and once more as an intent that never confirmed: all succeed.
    h.assert_undo_idempotent(&c.run()).await;
    assert!(containers_with_key(&d, &key).await.is_empty());
    assert!(d.inspect_container(&first.id, None).await.is_err());
}

#[tokio::test]
async fn undo_of_an_intent_finds_the_container_by_its_label() {
    let Some(()) = require("undo_of_an_intent_finds_the_container_by_its_label") else { return };
    let c = ContainerConnector::new();
    let (h, _g) = step("intent");
    let out = h.run(&c.run(), json!({"image": IMAGE, "command": ["sleep", "300"], "detach": true, "stop_timeout": "1s"})).await.unwrap();
    // What the run state holds when the engine died between the create and the confirmation.
    let cx = h.context();
    let intent = ResourceRecord { kind: KIND.into(), key: cx.idempotency_key(), id: None, state: ResourceState::Intended, undo: Value::Null, step: cx.step.clone() };
    c.run().undo(&intent, &cx).await.unwrap();
    let d = docker().await.unwrap();
    assert!(d.inspect_container(&out.id, None).await.is_err());
    assert_eq!(c.run().undo(&intent, &cx).await.unwrap_err().kind, ErrorKind::NotFound);
}

#[tokio::test]
async fn a_retried_waited_run_replaces_a_failure_and_keeps_a_success() {
    let Some(()) = require("a_retried_waited_run_replaces_a_failure_and_keeps_a_success") else { return };
    let c = ContainerConnector::new();
    let d = docker().await.unwrap();

    // The first attempt failed: the retry runs the command again, in a new container.
    let (h, _g) = step("retry-fail");
    let input = json!({"image": IMAGE, "command": ["sh", "-c", "echo once; exit 2"], "check": false});
    let first = h.run(&c.run(), input.clone()).await.unwrap();
    let second = h.run(&c.run(), input).await.unwrap();
    assert_ne!(first.id, second.id);
    assert!(!second.adopted);
    assert_eq!((second.exit_code, second.stdout.as_str()), (Some(2), "once\n"));
    assert_eq!(containers_with_key(&d, &h.context().idempotency_key()).await.len(), 1);

    // The first attempt succeeded (the engine died before recording it): the result is adopted.
    let (h, _g2) = step("retry-ok");
    let input = json!({"image": IMAGE, "command": ["sh", "-c", "echo done"]});
    let first = h.run(&c.run(), input.clone()).await.unwrap();
    let second = h.run(&c.run(), input).await.unwrap();
    assert_eq!(first.id, second.id);
    assert!(second.adopted);
    assert_eq!((second.exit_code, second.stdout.as_str()), (Some(0), "done\n"));
}

#[tokio::test]
async fn a_name_held_by_another_container_is_a_conflict() {
    let Some(()) = require("a_name_held_by_another_container_is_a_conflict") else { return };
    let c = ContainerConnector::new();
    let (h, mut g) = step("conflict");
    let name = unique("foreign");
    g.names.push(name.clone());
    let d = docker().await.unwrap();
    let body = bollard::models::ContainerCreateBody { image: Some(IMAGE.into()), cmd: Some(vec!["true".into()]), ..Default::default() };
    d.create_container(Some(bollard::query_parameters::CreateContainerOptionsBuilder::new().name(&name).build()), body).await.unwrap();
    let e = h.run(&c.run(), json!({"image": IMAGE, "name": name, "command": ["true"]})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
    assert!(e.message.contains("did not create"), "{}", e.message);
}

#[tokio::test]
async fn health_checks_are_waited_for() {
    let Some(()) = require("health_checks_are_waited_for") else { return };
    let c = ContainerConnector::new();
    let healthy = async {
        let (h, _g) = step("healthy");
        let out = h
            .run(
                &c.run(),
                json!({"image": IMAGE, "command": ["sleep", "300"], "detach": true, "wait_healthy": "30s",
                       "healthcheck": {"test": "test -e /proc/1", "interval": "200ms", "retries": 3}}),
            )
            .await
            .unwrap();
        assert_eq!(out.health.as_deref(), Some("healthy"));
    };
    let unhealthy = async {
        let (h, _g) = step("unhealthy");
        let e = h
            .run(
                &c.run(),
                json!({"image": IMAGE, "command": ["sleep", "300"], "detach": true, "wait_healthy": "30s",
                       "healthcheck": {"test": "echo sick; exit 1", "interval": "200ms", "retries": 1}}),
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Transient, "{e}");
        assert!(e.message.contains("unhealthy") && e.message.contains("sick"), "{}", e.message);
    };
    let exits = async {
        let (h, _g) = step("exits");
        let e = h
            .run(
                &c.run(),
                json!({"image": IMAGE, "command": ["sh", "-c", "echo bye; exit 1"], "detach": true, "wait_healthy": "30s",
                       "healthcheck": {"test": "true", "interval": "200ms"}}),
            )
            .await
            .unwrap_err();
        assert!(e.message.contains("exited before it was healthy") && e.message.contains("bye"), "{}", e.message);
    };
    let none = async {
        let (h, _g) = step("nohealth");
        let e = h.run(&c.run(), json!({"image": IMAGE, "command": ["sleep", "300"], "detach": true, "wait_healthy": "5s"})).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
    };
    tokio::join!(healthy, unhealthy, exits, none);
}

#[tokio::test]
async fn a_missing_image_fails_clearly_without_a_registry() {
    let Some(()) = require("a_missing_image_fails_clearly_without_a_registry") else { return };
    let c = ContainerConnector::new();
    let missing = "engine-test/nonexistent:1";
    let started = Instant::now();
    let h = Harness::new(&unique("pull"));
    let e = h.run(&c.pull(), json!({"image": missing})).await.unwrap_err();
    // No registry here: the daemon cannot resolve it (transient). With one, it would answer that
    // there is no such repository (not_found). Either way, fast and saying which image.
    eprintln!("the pull error: {e}");
    assert!(matches!(e.kind, ErrorKind::Transient | ErrorKind::NotFound), "{e}");
    assert!(e.message.contains(missing), "{}", e.message);
    if e.kind == ErrorKind::Transient {
        assert!(e.message.contains("registry cannot be reached") && e.message.contains("pull: never"), "{}", e.message);
    }
    assert!(started.elapsed() < Duration::from_secs(60));

    // `pull: never` does not try at all.
    let (h, _g) = step("never");
    let e = h.run(&c.run(), json!({"image": missing, "pull": "never"})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    assert!(e.message.contains("pull: never"), "{}", e.message);
    // Nothing was recorded: the image check comes before the intent.
    assert!(h.recorded().records.is_empty());

    // A present image is "pulled" from the registry too: with none, that fails the same way.
    let e = h.run(&c.run(), json!({"image": IMAGE, "pull": "always", "command": ["true"]})).await.unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Transient | ErrorKind::NotFound), "{e}");
}

/// Whether this daemon has the NVIDIA runtime: then the no-GPU error path cannot happen.
async fn has_nvidia() -> bool {
    let d = docker().await.unwrap();
    d.info().await.unwrap().runtimes.unwrap_or_default().contains_key("nvidia")
}

#[tokio::test]
async fn gpus_without_the_nvidia_toolkit_fail_clearly_and_leave_nothing() {
    let Some(()) = require("gpus_without_the_nvidia_toolkit_fail_clearly_and_leave_nothing") else { return };
    if has_nvidia().await {
        eprintln!("skipped: this Docker daemon has the nvidia runtime");
        return;
    }
    let c = ContainerConnector::new();
    let d = docker().await.unwrap();
    let (h, _g) = step("gpu");
    let e = h.run(&c.run(), json!({"image": IMAGE, "command": ["true"], "gpus": {"all": true, "capabilities": ["utility"]}})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
    eprintln!("the GPU error: {}", e.message);
    // Docker names the driver of the request it refused: `DeviceRequests` reached it as asked.
    for needle in ["could not select device driver \"nvidia\" with capabilities: [[gpu utility]]", "nvidia-container-toolkit", "sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker", "runtime_info found", "the nvidia runtime is not configured"] {
        assert!(e.message.contains(needle), "no `{needle}` in: {}", e.message);
    }
    // The container was recorded, then removed, and the record says so: nothing leaked.
    assert!(containers_with_key(&d, &h.context().idempotency_key()).await.is_empty());
    let states: Vec<ResourceState> = h.recorded().records.iter().map(|r| r.state).collect();
    assert_eq!(states, [ResourceState::Intended, ResourceState::Created, ResourceState::Deleted]);

    // gpu_check takes the same path.
    let (h, _g2) = step("gpu-check");
    let e = h.run(&c.gpu_check(), json!({"image": IMAGE, "gpus": {"count": 1, "memory": "8GiB"}})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
    assert!(e.message.contains("nvidia-container-toolkit"), "{}", e.message);
    assert!(containers_with_key(&d, &h.context().idempotency_key()).await.is_empty());
}

#[tokio::test]
async fn gpu_check_reads_what_the_command_printed() {
    let Some(()) = require("gpu_check_reads_what_the_command_printed") else { return };
    if !has_nvidia().await {
        // Without the toolkit no container gets GPUs; the parsing is unit-tested, and the path
        // up to the daemon's refusal is tested above.
        eprintln!("skipped: gpu_check_reads_what_the_command_printed: this Docker daemon has no nvidia runtime");
        return;
    }
    let c = ContainerConnector::new();
    let (h, _g) = step("gpu-check-real");
    let image = std::env::var("ENGINE_GPU_IMAGE").unwrap_or_else(|_| "ubuntu:24.04".into());
    let out = h.run(&c.gpu_check(), json!({"image": image})).await.unwrap();
    assert!(out.count >= 1, "{out:?}");
}

#[tokio::test]
async fn runtime_info_reports_this_daemon() {
    let Some(()) = require("runtime_info_reports_this_daemon") else { return };
    let c = ContainerConnector::new();
    let h = Harness::new(&unique("info"));
    let info = h.run(&c.runtime_info(), json!({})).await.unwrap();
    let d = docker().await.unwrap();
    let version = d.version().await.unwrap();
    assert_eq!(Some(info.server_version.clone()), version.version);
    assert!(info.runtimes.contains_key("runc"), "{:?}", info.runtimes);
    assert!(!info.default_runtime.is_empty());
    assert_eq!(info.nvidia_runtime, info.runtimes.contains_key("nvidia"));
    // Negotiated down to the daemon's API (1.41 for Docker 20.10), not bollard's newer default.
    assert_eq!(info.api_version, info.server_api_version, "{info:?}");
    if !has_nvidia().await {
        assert!(!info.nvidia_runtime && !info.nvidia_default);
        assert!(info.gpu_support.contains("not configured"), "{}", info.gpu_support);
    }
}

#[tokio::test]
async fn an_unreachable_daemon_is_transient_and_says_where() {
    let Some(()) = require("an_unreachable_daemon_is_transient_and_says_where") else { return };
    let c = ContainerConnector::new();
    let mut h = Harness::new(&unique("unreachable"));
    for host in ["unix:///nonexistent.sock", "tcp://127.0.0.1:1"] {
        h.settings = json!({ "host": host });
        let started = Instant::now();
        let e = h.run(&c.runtime_info(), json!({})).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Transient, "{e}");
        assert!(e.message.contains(host) && e.message.contains("is the Docker daemon running? DOCKER_HOST="), "{}", e.message);
        assert!(started.elapsed() < Duration::from_secs(20));
        // Every action says the same, and undo too.
        let e = h.run(&c.run(), json!({"image": IMAGE})).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    }
    // A connector built without the SSH transport says what is missing.
    h.settings = json!({ "host": "ssh://me@gpu-box" });
    let e = h.run(&ContainerConnector::default().runtime_info(), json!({})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
    assert!(e.message.contains("remote transport"), "{}", e.message);
    h.settings = json!({ "hots": "unix:///var/run/docker.sock" });
    assert_eq!(h.run(&c.runtime_info(), json!({})).await.unwrap_err().kind, ErrorKind::Invalid);
}

#[tokio::test]
async fn cancelling_a_waited_run_returns_at_once_and_keeps_the_record() {
    let Some(()) = require("cancelling_a_waited_run_returns_at_once_and_keeps_the_record") else { return };
    let c = ContainerConnector::new();
    let (h, _g) = step("cancel");
    let h = Arc::new(h);
    let key = h.context().idempotency_key();
    let running = {
        let (h, run) = (h.clone(), c.run());
        tokio::spawn(async move { h.run(&run, json!({"image": IMAGE, "command": ["sleep", "300"], "stop_timeout": "1s"})).await })
    };
    let d = docker().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !containers_with_key(&d, &key).await.iter().any(|(_, s)| s == "running") {
        assert!(Instant::now() < deadline, "the container never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cancelled_at = Instant::now();
    h.cancel();
    let e = running.await.unwrap().unwrap_err();
    assert!(cancelled_at.elapsed() < Duration::from_secs(2), "took {:?}", cancelled_at.elapsed());
    assert_eq!(e.kind, ErrorKind::Cancelled, "{e}");
    // Left running and recorded: undo (which the engine runs on destroy) removes it.
    let rec = h.created().pop().expect("the container is recorded");
    assert_eq!(containers_with_key(&d, &key).await.len(), 1);
    let cx = StepContext::detached("undo");
    c.run().undo(&rec, &cx).await.unwrap();
    assert!(containers_with_key(&d, &key).await.is_empty());
}

/// A remote transport for the scheme `local+unix`, which dials the local daemon's socket: the
/// path an SSH tunnel would take, minus SSH.
struct LocalSocket;

#[async_trait]
impl RemoteTransport for LocalSocket {
    fn scheme(&self) -> &'static str {
        "local+unix"
    }
    async fn dialer(&self, _host: &str, _cx: &StepContext) -> Result<Arc<dyn Dialer>, ConnectorError> {
        let path = match std::env::var("DOCKER_HOST") {
            Ok(h) if h.starts_with("unix://") => h.trim_start_matches("unix://").to_string(),
            _ => "/var/run/docker.sock".to_string(),
        };
        Ok(Arc::new(UnixDialer { path: path.into() }))
    }
}

#[tokio::test]
async fn a_remote_transport_carries_every_call() {
    let Some(()) = require("a_remote_transport_carries_every_call") else { return };
    if std::env::var("DOCKER_HOST").is_ok_and(|h| !h.is_empty() && !h.starts_with("unix://")) {
        eprintln!("skipped: a_remote_transport_carries_every_call: DOCKER_HOST is not a Unix socket");
        return;
    }
    let c = ContainerConnector::new().with_remote(Arc::new(LocalSocket));
    let (mut h, _g) = step("remote");
    h.settings = json!({ "host": "local+unix://docker" });
    let info = h.run(&c.runtime_info(), json!({})).await.unwrap();
    assert_eq!(info.host, "local+unix://docker");
    assert_eq!(info.api_version, info.server_api_version);
    // Create, start, logs, wait; then exec, whose output comes over an upgraded connection.
    let out = h.run(&c.run(), json!({"image": IMAGE, "command": ["sh", "-c", "echo over-the-dialer"]})).await.unwrap();
    assert_eq!(out.stdout, "over-the-dialer\n");
    let (h2, _g2) = step("remote-exec");
    let mut h2 = h2;
    h2.settings = h.settings.clone();
    let up = h2.run(&c.run(), json!({"image": IMAGE, "command": ["sleep", "300"], "detach": true, "stop_timeout": "1s"})).await.unwrap();
    let x = h2.run(&c.exec(), json!({"container": up.id, "command": ["sh", "-c", "echo exec-ok; echo e >&2"]})).await.unwrap();
    assert_eq!((x.stdout.as_str(), x.stderr.as_str()), ("exec-ok\n", "e\n"));
    // The record names the host it was made on, so undo goes back through the transport.
    let rec = h2.created().pop().unwrap();
    assert_eq!(rec.undo["host"], json!("local+unix://docker"));
    h2.assert_undo_idempotent(&c.run()).await;
    let d = docker().await.unwrap();
    assert!(d.inspect_container(&up.id, None).await.is_err());
}

#[tokio::test]
async fn the_api_version_is_negotiated_down_to_the_daemons() {
    let Some(()) = require("the_api_version_is_negotiated_down_to_the_daemons") else { return };
    let d = docker().await.unwrap();
    let server = d.version().await.unwrap().api_version.unwrap();
    // A fresh client starts at bollard's default (1.53); negotiation steps down to the daemon's
    // when that is older (Docker 20.10: 1.41), and a call then works.
    // (bollard 0.21 also drops the `/v1.xx` prefix from its paths, so the daemon answers at its
    // own version either way; negotiating keeps this working when bollard sends the prefix.)
    let raw = Docker::connect_with_socket_defaults().unwrap();
    let before = raw.client_version();
    assert_eq!((before.major_version, before.minor_version), (bollard::API_DEFAULT_VERSION.major_version, bollard::API_DEFAULT_VERSION.minor_version));
    let raw = raw.negotiate_version().await.unwrap();
    let after = raw.client_version();
    let ours = format!("{}.{}", after.major_version, after.minor_version);
    let default = format!("{}.{}", before.major_version, before.minor_version);
    let older = |a: &str, b: &str| {
        let p = |v: &str| v.split_once('.').map(|(x, y)| (x.parse::<u32>().unwrap(), y.parse::<u32>().unwrap())).unwrap();
        p(a) < p(b)
    };
    assert_eq!(ours, if older(&server, &default) { server.clone() } else { default });
    raw.info().await.unwrap();
    // The connector does the same and reports the version it settled on.
    let info = ContainerConnector::new().runtime_info().run(connector_container::RuntimeInfoInput::default(), &StepContext::detached("version")).await.unwrap();
    assert_eq!(info.api_version, ours);
}

/// Docker over SSH, for real: a real OpenSSH sshd on 127.0.0.1 forwards each request to this
/// machine's Docker socket (`direct-streamlocal`), as it would on a remote GPU host. The step
/// names the host (`host: ssh://user@127.0.0.1:PORT`), the `ssh:` key of the connector block
/// brings the key and known_hosts; undo goes back the same way.
#[tokio::test]
async fn docker_over_ssh_through_a_real_sshd() {
    let Some(()) = require("docker_over_ssh_through_a_real_sshd") else { return };
    if std::env::var("DOCKER_HOST").is_ok_and(|h| !h.is_empty() && h != "unix:///var/run/docker.sock") {
        eprintln!("skipped: docker_over_ssh_through_a_real_sshd: the daemon is not on /var/run/docker.sock");
        return;
    }
    let Some(peer) = connector_ssh::testing::Peer::start() else { return };
    let c = ContainerConnector::new();
    let host = format!("ssh://{}@127.0.0.1:{}", peer.user, peer.port());
    let (mut h, _g) = step("over-ssh");
    h.settings = json!({ "ssh": peer.settings() });
    let info = h.run(&c.runtime_info(), json!({ "host": host })).await.unwrap();
    assert_eq!(info.host, host);
    let out = h.run(&c.run(), json!({"host": host, "image": IMAGE, "command": ["sh", "-c", "echo through-sshd"]})).await.unwrap();
    assert_eq!(out.stdout, "through-sshd\n");
    // A detached container, an exec into it (an upgraded connection through the channel).
    let (mut h2, _g2) = step("over-ssh-detached");
    h2.settings = h.settings.clone();
    let up = h2.run(&c.run(), json!({"host": host, "image": IMAGE, "command": ["sleep", "300"], "detach": true, "stop_timeout": "1s"})).await.unwrap();
    let x = h2.run(&c.exec(), json!({"host": host, "container": up.id, "command": ["sh", "-c", "echo exec-over-ssh"]})).await.unwrap();
    assert_eq!(x.stdout, "exec-over-ssh\n");
    let rec = h2.created().pop().unwrap();
    assert_eq!(rec.undo["host"], json!(host));
    h2.assert_undo_idempotent(&c.run()).await;
    assert!(docker().await.unwrap().inspect_container(&up.id, None).await.is_err(), "undo over SSH removed the container");
    // The host key was checked: pinned on first sight, for the run.
    assert_eq!(h.recorded().pins.len(), 1, "{:?}", h.recorded().pins);
    // A key sshd does not accept is `auth`, with no Docker call made.
    let other = connector_ssh::testing::keygen(peer.path(), "stranger", "ed25519", "");
    let mut settings = peer.settings();
    settings["private_key_file"] = json!(other.to_str().unwrap());
    h.settings = json!({ "ssh": settings });
    let e = h.run(&c.runtime_info(), json!({ "host": host })).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
}
