//! Unit tests: request building and parsing, without a daemon. The Docker Engine itself is
//! exercised by `tests/docker.rs`.

use std::path::Path;

use engine_connector::{Action, Connector, ErrorKind, StepContext};
use serde_json::json;

use crate::client::{parse_host, resolve_host, Endpoint, Settings};
use crate::error::{is_no_gpu_driver, pull_kind, status_kind, Error, Target};
use crate::spec::*;
use crate::{parse_gpus, since_unix, ContainerConnector, RunInput};

fn run_input(v: serde_json::Value) -> RunInput {
    serde_json::from_value(v).unwrap()
}

#[test]
fn gpus_become_device_requests_and_nvidia_env() {
    let all = GpuRequest { all: true, ..Default::default() };
    let r = all.device_request();
    assert_eq!(r.driver.as_deref(), Some("nvidia"));
    assert_eq!(r.count, Some(-1));
    assert_eq!(r.device_ids, None);
    assert_eq!(r.capabilities, Some(vec![vec!["gpu".to_string()]]));
    assert_eq!(all.env(), [("NVIDIA_VISIBLE_DEVICES".to_string(), "all".to_string())]);

    // Neither all, ids nor count: all GPUs, as `--gpus all`.
    assert_eq!(GpuRequest::default().device_request().count, Some(-1));

    let ids = GpuRequest { ids: vec!["0".into(), "GPU-abc".into()], capabilities: vec!["compute".into(), "utility".into()], ..Default::default() };
    let r = ids.device_request();
    assert_eq!(r.count, None);
    assert_eq!(r.device_ids, Some(vec!["0".to_string(), "GPU-abc".to_string()]));
    assert_eq!(r.capabilities, Some(vec![vec!["gpu".to_string(), "compute".to_string(), "utility".to_string()]]));
    assert_eq!(
        ids.env(),
        [("NVIDIA_VISIBLE_DEVICES".to_string(), "0,GPU-abc".to_string()), ("NVIDIA_DRIVER_CAPABILITIES".to_string(), "compute,utility".to_string())]
    );

    let two = GpuRequest { count: Some(2), capabilities: vec!["gpu".into(), "video".into(), "custom".into()], ..Default::default() };
    assert_eq!(two.device_request().count, Some(2));
    // `gpu` is not repeated; only NVIDIA's capabilities reach NVIDIA_DRIVER_CAPABILITIES.
    assert_eq!(two.device_request().capabilities, Some(vec![vec!["gpu".to_string(), "video".to_string(), "custom".to_string()]]));
    assert_eq!(two.env()[0].1, "0,1");
    assert_eq!(two.env()[1].1, "video");
}

#[test]
fn gpu_requests_are_checked() {
    assert!(GpuRequest { all: true, count: Some(1), ..Default::default() }.check().is_err());
    assert!(GpuRequest { ids: vec!["0".into()], count: Some(1), ..Default::default() }.check().is_err());
    assert!(GpuRequest { count: Some(0), ..Default::default() }.check().is_err());
    assert!(GpuRequest { ids: vec!["0,1".into()], ..Default::default() }.check().is_err());
    assert!(GpuRequest { memory: Some("lots".into()), ..Default::default() }.check().is_err());
    let ok = GpuRequest { count: Some(1), memory: Some("16GiB".into()), ..Default::default() };
    ok.check().unwrap();
    assert_eq!(ok.memory_bytes(), Some(16 << 30));
}

#[test]
fn the_create_body_carries_everything_the_input_says() {
    let input = run_input(json!({
        "image": "ollama/ollama:0.3.12",
        "command": "serve --verbose 'two words'",
        "entrypoint": [],
        "env": {"OLLAMA_HOST": "0.0.0.0", "NVIDIA_VISIBLE_DEVICES": "1"},
        "labels": {"team": "ml"},
        "ports": ["11434:11434", "127.0.0.1::80", "53/udp"],
        "volumes": ["./models:/models:ro", "ollama:/root/.ollama", "/scratch"],
        "gpus": {"all": true, "capabilities": ["compute", "utility"], "memory": "24g"},
        "restart": "on-failure:3",
        "network": "host",
        "user": "1000:1000",
        "workdir": "/work",
        "memory": "2g",
        "cpus": 1.5,
        "shm_size": "1g",
        "healthcheck": {"test": "ollama list", "interval": "5s", "retries": 10},
        "detach": true,
        "stop_timeout": "30s"
    }));
    let mut cx = StepContext::detached("ollama");
    cx.workflow_dir = "/srv/wf".into();
    let body = input.body(&cx, "run1/ollama").unwrap();
    assert_eq!(body.cmd, Some(vec!["serve".to_string(), "--verbose".to_string(), "two words".to_string()]));
    assert_eq!(body.entrypoint, Some(vec![String::new()]));
    let env = body.env.unwrap();
    // The user's own NVIDIA_VISIBLE_DEVICES wins; the capabilities come from `gpus`.
    assert!(env.contains(&"NVIDIA_VISIBLE_DEVICES=1".to_string()), "{env:?}");
    assert!(env.contains(&"NVIDIA_DRIVER_CAPABILITIES=compute,utility".to_string()), "{env:?}");
    assert!(env.contains(&"OLLAMA_HOST=0.0.0.0".to_string()));
    let labels = body.labels.unwrap();
    assert_eq!(labels["engine.key"], "run1/ollama");
    assert_eq!(labels["engine.step"], "ollama");
    assert_eq!(labels["team"], "ml");
    assert_eq!(labels["engine.gpu.memory"], (24u64 << 30).to_string());
    let mut exposed = body.exposed_ports.unwrap();
    exposed.sort();
    assert_eq!(exposed, ["11434/tcp", "53/udp", "80/tcp"]);
    assert_eq!(body.volumes, Some(vec!["/scratch".to_string()]));
    assert_eq!(body.stop_timeout, Some(30));
    let hc = body.healthcheck.unwrap();
    assert_eq!(hc.test, Some(vec!["CMD-SHELL".to_string(), "ollama list".to_string()]));
    assert_eq!(hc.interval, Some(5_000_000_000));
    let host = body.host_config.unwrap();
    let req = &host.device_requests.unwrap()[0];
    assert_eq!((req.driver.as_deref(), req.count), (Some("nvidia"), Some(-1)));
    assert_eq!(host.binds, Some(vec!["/srv/wf/models:/models:ro".to_string(), "ollama:/root/.ollama".to_string()]));
    let ports = host.port_bindings.unwrap();
    assert_eq!(ports["11434/tcp"].as_ref().unwrap()[0].host_port.as_deref(), Some("11434"));
    assert_eq!(ports["80/tcp"].as_ref().unwrap()[0].host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(ports["80/tcp"].as_ref().unwrap()[0].host_port.as_deref(), Some(""));
    assert_eq!(host.restart_policy.unwrap().maximum_retry_count, Some(3));
    assert_eq!(host.network_mode.as_deref(), Some("host"));
    assert_eq!(host.memory, Some(2 << 30));
    assert_eq!(host.shm_size, Some(1 << 30));
    assert_eq!(host.nano_cpus, Some(1_500_000_000));
}

#[test]
fn validate_rejects_what_docker_would_refuse() {
    let run = ContainerConnector::new().run();
    let bad = [
        json!({"image": "Busybox"}),
        json!({"image": "busybox", "name": "-x"}),
        json!({"image": "busybox", "ports": ["80:99999"]}),
        json!({"image": "busybox", "ports": ["1:2:3:4"]}),
        json!({"image": "busybox", "volumes": ["data:relative"]}),
        json!({"image": "busybox", "volumes": ["/a:/b:bogus"]}),
        json!({"image": "busybox", "restart": "sometimes", "detach": true}),
        json!({"image": "busybox", "restart": "always"}),
        json!({"image": "busybox", "gpus": {"all": true, "ids": ["0"]}}),
        json!({"image": "busybox", "command": "echo 'unterminated"}),
        json!({"image": "busybox", "env": {"A=B": "x"}}),
        json!({"image": "busybox", "labels": {"engine.key": "mine"}}),
        json!({"image": "busybox", "wait_healthy": "1m"}),
        json!({"image": "busybox", "rm": true, "detach": true}),
        json!({"image": "busybox", "memory": "much"}),
        json!({"image": "busybox", "cpus": 0.0}),
    ];
    for b in bad {
        let input = run_input(b.clone());
        let e = run.validate(&input).expect_err(&b.to_string());
        assert_eq!(e.kind, ErrorKind::Invalid, "{b}");
    }
    run.validate(&run_input(json!({"image": "ghcr.io/org/app@sha256:abc", "name": "web.1", "ports": ["[::1]:8080:80/tcp"], "detach": true, "restart": "always"})))
        .unwrap();
    // Unknown keys are refused by the schema's deserializer.
    assert!(serde_json::from_value::<RunInput>(json!({"image": "busybox", "gpu": {"all": true}})).is_err());
}

#[test]
fn words_split_like_a_shell() {
    assert_eq!(split_words(r#"sh -c "echo \"hi\" \$HOME" 'a b' c\ d"#).unwrap(), ["sh", "-c", r#"echo "hi" $HOME"#, "a b", "c d"]);
    assert_eq!(split_words("  ").unwrap(), Vec::<String>::new());
    assert_eq!(split_words("''").unwrap(), [""]);
    assert!(split_words("a\\").is_err());
    assert!(Command::Line(" ".into()).argv().is_err());
}

#[test]
fn ports_volumes_restart_and_sizes_parse() {
    let p = parse_port("127.0.0.1:8080:80/udp").unwrap();
    assert_eq!((p.container.as_str(), p.host_ip.as_str(), p.host_port.as_str()), ("80/udp", "127.0.0.1", "8080"));
    let p = parse_port("80").unwrap();
    assert_eq!((p.container.as_str(), p.host_port.as_str()), ("80/tcp", ""));
    assert!(parse_port("80/icmp").is_err());
    assert_eq!(parse_volume("/in", Path::new("/wf")).unwrap(), VolumeSpec::Anonymous("/in".into()));
    assert_eq!(parse_volume("../x:/in:ro,z", Path::new("/wf/sub")).unwrap(), VolumeSpec::Bind("/wf/x:/in:ro,z".into()));
    assert!(parse_restart("on-failure:x").is_err());
    assert!(parse_restart("always:3").is_err());
    assert_eq!(parse_size("512m").unwrap(), 512 << 20);
    assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
    assert_eq!(parse_size("100").unwrap(), 100);
    assert!(parse_size("0").is_err());
    assert!(parse_size("12 parsecs").is_err());
}

#[test]
fn references_split_into_image_and_tag() {
    assert_eq!(split_reference("busybox"), ("busybox".into(), "latest".into()));
    assert_eq!(split_reference("localhost:5000/app"), ("localhost:5000/app".into(), "latest".into()));
    assert_eq!(split_reference("localhost:5000/app:1.2"), ("localhost:5000/app".into(), "1.2".into()));
    assert_eq!(split_reference("app@sha256:00ff"), ("app".into(), "sha256:00ff".into()));
    assert!(check_image("bad image").is_err());
    assert!(check_image("").is_err());
    assert!(check_image("ghcr.io/Org-Not-Fine/app:1").is_err());
    check_image("Registry.Example.com:5000/app:1").unwrap();
}

#[test]
fn names_come_from_the_key_and_never_collide() {
    let a = name_for_key("run-1/web/0");
    assert!(a.starts_with("engine-run-1-web-0-"), "{a}");
    assert!(valid_name(&a));
    // `/` and `-` both become `-`: the fingerprint keeps the names apart.
    assert_ne!(name_for_key("r/a-b"), name_for_key("r-a/b"));
    assert_eq!(name_for_key("r/a"), name_for_key("r/a"));
    let long = name_for_key(&"x".repeat(500));
    assert!(long.len() < 128 && valid_name(&long));
    assert!(valid_name(&name_for_key("run with spaces/étape")));
}

#[test]
fn hosts_resolve_setting_then_env_then_socket() {
    assert_eq!(resolve_host(Some("tcp://h:2375"), Some("unix:///x.sock")), "tcp://h:2375");
    assert_eq!(resolve_host(None, Some("unix:///x.sock")), "unix:///x.sock");
    assert_eq!(resolve_host(Some(" "), Some("")), crate::DEFAULT_HOST);
    assert_eq!(parse_host("unix:///var/run/docker.sock").unwrap(), Endpoint::Unix("/var/run/docker.sock".into()));
    assert_eq!(parse_host("/run/docker.sock").unwrap(), Endpoint::Unix("/run/docker.sock".into()));
    assert_eq!(parse_host("tcp://10.0.0.5:2375").unwrap(), Endpoint::Tcp("10.0.0.5:2375".into()));
    assert_eq!(parse_host("ssh://me@box").unwrap(), Endpoint::Remote { scheme: "ssh".into() });
    assert_eq!(parse_host("https://h:2376").unwrap_err().kind(), ErrorKind::Invalid);
    assert!(parse_host("unix://").is_err());
    assert!(parse_host("tcp://h:1/path").is_err());
    assert!(parse_host("docker.example.com").is_err());

    let mut cx = StepContext::detached("s");
    cx.settings = json!({"host": "tcp://h:1", "timeout": "5s"});
    assert_eq!(Settings::from_context(&cx).unwrap().host.as_deref(), Some("tcp://h:1"));
    cx.settings = json!({"hots": "tcp://h:1"});
    assert!(Settings::from_context(&cx).is_err());
    cx.settings = json!({"host": "tcp://h:1", "endpoint": "tcp://h:2"});
    assert!(Settings::from_context(&cx).is_err());
}

#[test]
fn docker_statuses_map_to_kinds() {
    assert_eq!(status_kind(404, "No such container: x"), ErrorKind::NotFound);
    assert_eq!(status_kind(409, "Conflict. The container name \"/x\" is already in use"), ErrorKind::Conflict);
    assert_eq!(status_kind(500, "driver failed programming external connectivity"), ErrorKind::Transient);
    assert_eq!(status_kind(503, "busy"), ErrorKind::Transient);
    assert_eq!(status_kind(400, "bad parameter"), ErrorKind::Invalid);
    assert_eq!(status_kind(403, "forbidden"), ErrorKind::Auth);
    // Real answers of Docker 20.10 to a GPU request without the NVIDIA toolkit, and to a missing
    // executable: retrying cannot help.
    let gpu = "could not select device driver \"nvidia\" with capabilities: [[gpu]]";
    assert!(is_no_gpu_driver(gpu));
    assert_eq!(status_kind(500, gpu), ErrorKind::Invalid);
    let exe = "failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"nosuchcmd\": executable file not found in $PATH: unknown";
    assert_eq!(status_kind(500, exe), ErrorKind::Invalid);
}

#[test]
fn registry_failures_map_to_kinds() {
    // What Docker 20.10 says with no registry reachable (recorded on this machine).
    assert_eq!(pull_kind("Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io on 10.255.255.53:53: no such host"), ErrorKind::Transient);
    assert_eq!(
        pull_kind("pull access denied for engine-test/nonexistent, repository does not exist or may require 'docker login': denied: requested access to the resource is denied"),
        ErrorKind::NotFound
    );
    assert_eq!(pull_kind("manifest for busybox:nope not found: manifest unknown: manifest unknown"), ErrorKind::NotFound);
    assert_eq!(pull_kind("unauthorized: authentication required"), ErrorKind::Auth);
}

#[test]
fn client_errors_are_classified() {
    let t = Target { host: "unix:///nonexistent.sock".into(), timeout: 120 };
    let e = t.classify("connecting", bollard::errors::Error::SocketNotFoundError("/nonexistent.sock".into()));
    assert_eq!(e.kind(), ErrorKind::Transient);
    assert!(e.to_string().contains("is the Docker daemon running? DOCKER_HOST="), "{e}");
    let e = t.classify("x", bollard::errors::Error::IOError { err: std::io::Error::from(std::io::ErrorKind::PermissionDenied) });
    assert_eq!(e.kind(), ErrorKind::Auth);
    let e = t.classify("x", bollard::errors::Error::RequestTimeoutError);
    assert_eq!(e.kind(), ErrorKind::Transient);
    let e = t.classify("x", bollard::errors::Error::DockerResponseServerError { status_code: 404, message: "No such image: a:b".into() });
    assert!(e.is_not_found());
    assert_eq!(Error::Input("x".into()).kind(), ErrorKind::Invalid);
}

#[test]
fn gpus_are_read_from_csv_and_list_output() {
    let csv = "0, GPU-5a1f, NVIDIA H100 80GB HBM3, 81559, 550.54.15\n1, GPU-77c0, NVIDIA H100 80GB HBM3, 81559, 550.54.15\n";
    let g = parse_gpus(csv);
    assert_eq!(g.len(), 2);
    assert_eq!(g[1].index, 1);
    assert_eq!(g[0].uuid.as_deref(), Some("GPU-5a1f"));
    assert_eq!(g[0].memory_total_mib, Some(81559));
    assert_eq!(g[0].driver_version.as_deref(), Some("550.54.15"));
    let list = "GPU 0: NVIDIA A10G (UUID: GPU-d1e2)\nGPU 1: Tesla T4 (UUID: GPU-aa)\n";
    let g = parse_gpus(list);
    assert_eq!((g[0].name.as_str(), g[0].uuid.as_deref()), ("NVIDIA A10G", Some("GPU-d1e2")));
    assert_eq!(g[1].name, "Tesla T4");
    assert!(parse_gpus("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.").is_empty());
}

#[test]
fn since_takes_durations_and_unix_times() {
    assert_eq!(since_unix("1732400000", 5).unwrap(), 1_732_400_000);
    assert_eq!(since_unix("10m", 10_000).unwrap(), 9_400);
    assert!(since_unix("yesterday", 0).is_err());
}

#[test]
fn every_action_publishes_schemas_and_the_resource_kind() {
    let c = ContainerConnector::new();
    assert_eq!(c.name(), "container");
    for a in c.actions() {
        assert!(a.id().starts_with("container."), "{}", a.id());
        let input = a.input_schema();
        assert_eq!(input["type"], "object", "{}", a.id());
        assert_eq!(input["additionalProperties"], json!(false), "{} must refuse unknown keys", a.id());
        assert!(a.output_schema()["properties"].is_object(), "{}", a.id());
        let creates = matches!(a.id(), "container.run" | "container.gpu_check");
        assert_eq!(a.resource_kind(), creates.then_some(crate::KIND), "{}", a.id());
    }
    let run = c.run();
    let schema = engine_connector::DynAction::input_schema(&run);
    let props = schema["properties"].as_object().unwrap();
    for key in ["image", "command", "entrypoint", "name", "gpus", "ports", "volumes", "env", "labels", "restart", "network", "user", "workdir", "detach", "check", "pull"] {
        assert!(props.contains_key(key), "container.run has no `{key}`");
    }
    let out = engine_connector::DynAction::output_names(&run);
    for key in ["id", "name", "exit_code", "stdout", "stderr", "ports", "status"] {
        assert!(out.iter().any(|o| o == key), "container.run outputs no `{key}`");
    }
    // Registry passwords never show in Debug output.
    let auth: crate::RegistryAuth = serde_json::from_value(json!({"username": "u", "password": "hunter22"})).unwrap();
    assert!(!format!("{auth:?}").contains("hunter22"));
}
