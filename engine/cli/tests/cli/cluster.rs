//! Seed 002 end to end: `examples/cluster.yaml` (Scaleway servers, then `workflows/vllm-worker.yaml`
//! on each) run by the `engine` binary against the Scaleway emulator (in process, its public IPs
//! drawn from a loopback pool, `127.0.0.N`), with each "server" played by a real OpenSSH sshd
//! bound to its own 127.0.0.N. The install scripts really run there over SSH; Docker, the
//! NVIDIA tools and systemd are executables on the host's PATH standing in for the real ones
//! (`docker run ... vllm` starts a small HTTP server on the host's address that answers like
//! vLLM; `systemctl start` starts the unit's `ExecStart`, the real health endpoint). Also: the
//! `fallback:` from L4 to L40S when L4 is out of stock, and the server sequence SIGKILLed at
//! every event, resumed and destroyed.
//!
//! Without sshd: `skipped: ...`, or a failure naming scripts/peers/sshd.sh under
//! `ENGINE_REQUIRE_PEERS=1`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use connector_gpu::testing::{combine, FakeSmi};
use connector_ssh::testing::{free_port, keygen, peer_available, SSHD};
use engine_emulator::scaleway::{self, IpPool, Stock};
use serde_json::Value;

use crate::{root, text, CliTest};

const ZONE: &str = "fr-par-2";
const MODEL: &str = "Qwen/Qwen2.5-1.5B-Instruct";

fn json_lines(s: &str) -> Vec<Value> {
    s.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn write_exe(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    let mut p = std::fs::metadata(path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
    std::fs::set_permissions(path, p).unwrap();
}

/// The emulator, in process on its own runtime.
struct Emulator {
    rt: tokio::runtime::Runtime,
    server: Option<scaleway::Server>,
}

impl Emulator {
    fn start(time_scale: f64, pool: Option<IpPool>) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let config = scaleway::Config { time_scale, ..scaleway::Config::default() };
        let server = rt.block_on(scaleway::start("127.0.0.1:0".parse().unwrap(), config)).expect("the emulator starts");
        server.set_public_ip_pool(pool);
        Self { rt, server: Some(server) }
    }
    fn api(&self) -> &scaleway::Server {
        self.server.as_ref().unwrap()
    }
    /// The engine's environment for the example: API URL, secret key, project.
    fn env(&self, cmd: &mut Command) {
        let c = scaleway::Config::default();
        cmd.env("SCW_API_URL", &self.api().base_url).env("SCW_SECRET_KEY", c.secret_key).env("SCW_PROJECT_ID", c.project_id).env("SCW_DEFAULT_ZONE", ZONE);
    }
    /// What is left: servers, volumes, IPs, and rules beyond each group's defaults.
    fn leftovers(&self) -> Vec<String> {
        let snap = self.api().snapshot();
        let mut left = Vec::new();
        for k in ["servers", "volumes", "local_volumes", "ips"] {
            if let Some(a) = snap[k].as_array() {
                left.extend(a.iter().map(|x| format!("{k}: {}", x["id"])));
            } else if let Some(o) = snap[k].as_object() {
                left.extend(o.keys().map(|id| format!("{k}: {id}")));
            }
        }
        left.extend(added_rules(&snap).into_iter().map(|r| format!("rule: {r}")));
        left
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            self.rt.block_on(s.shutdown());
        }
    }
}

/// Rules of every security group other than the ones a new group gets (the emulator's
/// defaults are the rules without the ports the workflows open).
fn added_rules(snap: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let groups: Vec<&Value> = match &snap["security_groups"] {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) => o.values().collect(),
        _ => Vec::new(),
    };
    for g in groups {
        for r in g["rules"].as_array().into_iter().flatten() {
            if r["editable"] != Value::Bool(false) {
                out.push(format!("{} {}", g["id"], r["dest_port_from"]));
            }
        }
    }
    out
}

/// One "server": a real sshd on `ip:ssh_port` whose sessions see the stub tools first on
/// PATH, and whose files (the worker's, the units, the stub Docker's state) live in `dir`.
struct FakeHost {
    ip: Ipv4Addr,
    dir: PathBuf,
    sshd: Option<Child>,
    _smi: FakeSmi,
}

impl FakeHost {
    fn start(dir: &Path, ip: Ipv4Addr, ssh_port: u16, host_key: &Path, client_pub: &Path) -> Self {
        let dir = dir.join(ip.to_string());
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let smi = FakeSmi::new(&combine(&[("tesla-t4.xml", None)]));
        for f in std::fs::read_dir(smi.dir.path()).unwrap().flatten() {
            std::fs::copy(f.path(), bin.join(f.file_name())).unwrap();
        }
        write_exe(&bin.join("docker"), DOCKER);
        write_exe(&bin.join("systemctl"), SYSTEMCTL);
        write_exe(&bin.join("nvidia-ctk"), "#!/bin/sh\necho \"nvidia-ctk $*\" >> \"$FAKE_HOST/calls.log\"\necho 'NVIDIA Container Toolkit CLI version 1.17.4'\n");
        std::fs::write(bin.join("fake_vllm.py"), FAKE_VLLM).unwrap();
        std::fs::copy(client_pub, dir.join("authorized_keys")).unwrap();
        let d = dir.display();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {ssh_port}\nListenAddress {ip}\nHostKey {hk}\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\n\
                 UsePAM no\nStrictModes no\nPermitRootLogin yes\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nMaxStartups 100\nLogLevel VERBOSE\n\
                 SetEnv PATH={d}/bin:/usr/sbin:/usr/bin:/sbin:/bin FAKE_HOST={d} WORKER_DIR={d}/worker UNIT_DIR={d}/units WORKER_BIND={ip}\n",
                hk = host_key.display()
            ),
        )
        .unwrap();
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .expect("start sshd");
        let mut host = Self { ip, dir, sshd: Some(child), _smi: smi };
        let start = Instant::now();
        while TcpStream::connect((ip, ssh_port)).is_err() {
            if let Some(Ok(Some(st))) = host.sshd.as_mut().map(Child::try_wait) {
                panic!("sshd on {ip}:{ssh_port} exited with {st}: {}", host.log());
            }
            assert!(start.elapsed() < Duration::from_secs(10), "sshd on {ip}:{ssh_port} does not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
        host
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.join("calls.log")).unwrap_or_default()
    }

    /// Pids of the processes the stubs started (the fake vLLM, the health endpoint).
    fn started(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for sub in ["docker", "units"] {
            for f in std::fs::read_dir(self.dir.join(sub)).into_iter().flatten().flatten() {
                if f.path().extension().is_some_and(|e| e == "pid") {
                    if let Ok(p) = std::fs::read_to_string(f.path()).unwrap_or_default().trim().parse::<i32>() {
                        pids.push(p);
                    }
                }
            }
        }
        pids
    }

    /// Processes running a program of this host (the stubs, the fake vLLM, the health
    /// endpoint): those whose command line names a file under its directory.
    fn processes(&self) -> Vec<String> {
        let needle = self.dir.to_string_lossy().into_owned();
        let mut found = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.parse::<u32>().is_err() {
                continue;
            }
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&needle) {
                found.push(name);
            }
        }
        found
    }

    /// The machine is gone: its sshd stops, and everything it ran (recorded pids, then any
    /// process still running one of its programs) is killed.
    fn power_off(&mut self) {
        if let Some(mut c) = self.sshd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let kill = |pid: &str| {
            let _ = Command::new("kill").args(["-KILL", pid]).stderr(Stdio::null()).status();
        };
        for pid in self.started() {
            kill(&pid.to_string());
        }
        let start = Instant::now();
        loop {
            let left = self.processes();
            if left.is_empty() || start.elapsed() > Duration::from_secs(5) {
                break;
            }
            left.iter().for_each(|p| kill(p));
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        self.power_off();
    }
}

/// Docker on a GPU host with the toolkit configured. `run` starts fake_vllm.py (an HTTP server
/// answering like vLLM) on the host's own address (from SSH_CONNECTION) and the published port.
const DOCKER: &str = r#"#!/bin/sh
d=$FAKE_HOST/docker
mkdir -p "$d"
echo "docker $*" >> "$FAKE_HOST/calls.log"
alive() { [ -f "$d/vllm.pid" ] && kill -0 "$(cat "$d/vllm.pid")" 2>/dev/null; }
serve() {
    ip=$(echo "$SSH_CONNECTION" | cut -d' ' -f3)
    setsid python3 "$FAKE_HOST/bin/fake_vllm.py" "$ip" "$(cat "$d/vllm.port")" "$(cat "$d/vllm.model")" "$d/requests.log" </dev/null >>"$d/vllm.log" 2>&1 &
    echo "$!" > "$d/vllm.pid"
}
case "$1" in
    --version) echo "Docker version 27.5.1, build 9f9e405" ;;
    info)
        case "$*" in
            *Runtimes*) echo '{"io.containerd.runc.v2":{},"nvidia":{},"runc":{}}' ;;
            *DefaultRuntime*) echo runc ;;
            *) echo "Server Version: 27.5.1" ;;
        esac ;;
    pull) ;;
    inspect)
        [ -f "$d/vllm.label" ] || { echo "Error: No such object: $3" >&2; exit 1; }
        case "$*" in
            *Labels*) cat "$d/vllm.label" ;;
            *State.Running*) if alive; then echo true; else echo false; fi ;;
            *) echo '[{}]' ;;
        esac ;;
    rm)
        alive && kill "$(cat "$d/vllm.pid")"
        rm -f "$d"/vllm.* ;;
    start) alive || serve ;;
    run)
        shift
        model=; port=; label=; prev=
        for a in "$@"; do
            case "$prev" in
                -p) port=${a%%:*} ;;
                --label) case "$a" in engine.vllm-worker.config=*) label=${a#*=} ;; esac ;;
                --model) model=$a ;;
            esac
            prev=$a
        done
        case "$*" in *--gpus*--ipc=host*vllm/vllm-openai:*) ;; *) echo "docker stub: unexpected run $*" >&2; exit 125 ;; esac
        echo "$model" > "$d/vllm.model"; echo "$port" > "$d/vllm.port"; echo "$label" > "$d/vllm.label"
        serve
        echo 4f1c0ffee0000000000000000000000000000000000000000000000000000000 ;;
    *) echo "docker stub: unexpected docker $*" >&2; exit 2 ;;
esac
"#;

/// systemd: `start`/`restart` run the unit's ExecStart (with its EnvironmentFile) in the
/// background; `is-active` asks whether it still runs.
const SYSTEMCTL: &str = r#"#!/bin/sh
echo "systemctl $*" >> "$FAKE_HOST/calls.log"
u=$FAKE_HOST/units
mkdir -p "$u"
case "$1" in
    --*) shift ;;
esac
pidf="$u/$2.pid"
alive() { [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; }
case "$1" in
    daemon-reload | enable) ;;
    start | restart)
        unit="$UNIT_DIR/$2.service"
        [ -f "$unit" ] || exit 0
        [ "$1" = restart ] && alive && kill "$(cat "$pidf")"
        envf=$(sed -n 's/^EnvironmentFile=//p' "$unit")
        cmd=$(sed -n 's/^ExecStart=//p' "$unit")
        # shellcheck disable=SC2086
        (set -a; . "$envf"; set +a; exec setsid $cmd) </dev/null >>"$u/$2.log" 2>&1 &
        echo "$!" > "$pidf" ;;
    is-active) alive ;;
    stop | disable) alive && kill "$(cat "$pidf")"; rm -f "$pidf" ;;
esac
exit 0
"#;

/// vLLM's OpenAI server, as far as the worker's checks go: /health (503 while "loading", the
/// first half second), /v1/models, /v1/completions for the served model.
const FAKE_VLLM: &str = r#"import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
ip, port, model, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
started = time.time()
class H(BaseHTTPRequestHandler):
    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def note(self):
        with open(log, "a") as f:
            f.write("%s %s\n" % (self.command, self.path))
    def do_GET(self):
        self.note()
        if self.path == "/health":
            self.reply(200 if time.time() - started > 0.5 else 503, {})
        elif self.path == "/v1/models":
            self.reply(200, {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "vllm"}]})
        else:
            self.reply(404, {"error": "not found"})
    def do_POST(self):
        self.note()
        req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path == "/v1/completions" and req.get("model") == model:
            self.reply(200, {"object": "text_completion", "model": model, "choices": [{"index": 0, "text": " world", "finish_reason": "length"}]})
        else:
            self.reply(404, {"error": "no such model %r" % req.get("model")})
    def log_message(self, *a):
        pass
ThreadingHTTPServer((ip, port), H).serve_forever()
"#;

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| text(&o.stdout).trim() == "0")
}

/// The emulator, `nodes` fake hosts on 127.0.0.`first`.., and the inputs for
/// examples/cluster.yaml (ports, user, model); the engine's HOME holds the SSH key.
struct Cluster {
    t: CliTest,
    emu: Emulator,
    hosts: Vec<FakeHost>,
    inputs: Vec<String>,
    ports: (u16, u16, u16),
}

impl Cluster {
    fn start(first: u8, nodes: u8) -> Option<Self> {
        if !peer_available() {
            return None;
        }
        if !is_root() {
            assert!(std::env::var("ENGINE_REQUIRE_PEERS").as_deref() != Ok("1"), "the cluster tests run the install scripts as root: run them as root");
            eprintln!("skipped: the cluster tests run the install scripts as root");
            return None;
        }
        let t = CliTest::new();
        // The engine's HOME: the ssh connector's default key and known_hosts (empty: the
        // servers' host keys are pinned on first use), as for a user of the example.
        let ssh_dir = t.dir.path().join("home/.ssh");
        std::fs::create_dir_all(&ssh_dir).unwrap();
        let host_key = keygen(t.dir.path(), "host_ed25519", "ed25519", "");
        let key = keygen(&ssh_dir, "id_ed25519", "ed25519", "");
        std::fs::write(ssh_dir.join("known_hosts"), "").unwrap();
        let first_ip = Ipv4Addr::new(127, 0, 0, first);
        let emu = Emulator::start(0.002, Some(IpPool { first: first_ip, count: u32::from(nodes) }));
        let ports = (free_port(), free_port(), free_port());
        let hosts = (0..nodes).map(|i| FakeHost::start(t.dir.path(), Ipv4Addr::new(127, 0, 0, first + i), ports.0, &host_key, &connector_ssh::testing::pub_path(&key))).collect();
        let inputs = vec![
            format!("nodes={nodes}"),
            format!("ssh_port={}", ports.0),
            format!("port={}", ports.1),
            format!("health_port={}", ports.2),
            "ssh_user=root".to_string(),
            format!("model={MODEL}"),
        ];
        Some(Self { t, emu, hosts, inputs, ports })
    }

    fn engine(&self, args: &[&str]) -> std::process::Output {
        let mut c = self.t.cmd();
        self.emu.env(&mut c);
        c.env("HOME", self.t.dir.path().join("home")).env_remove("SSH_AUTH_SOCK");
        c.args(args).output().expect("spawn engine")
    }

    /// `engine run examples/cluster.yaml -i ... --output json`, as a user runs it.
    fn run_example(&self) -> std::process::Output {
        let example = root().join("examples/cluster.yaml");
        let mut args = vec!["run", example.to_str().unwrap(), "--output", "json"];
        for i in &self.inputs {
            args.extend(["-i", i.as_str()]);
        }
        self.engine(&args)
    }

    fn diagnose(&self, out: &std::process::Output) -> String {
        let logs: Vec<String> = self.hosts.iter().map(|h| format!("--- {} calls:\n{}\n--- sshd:\n{}", h.ip, h.calls(), h.log().lines().rev().take(15).collect::<Vec<_>>().join("\n"))).collect();
        format!("stdout:\n{}\nstderr:\n{}\n{}", text(&out.stdout), text(&out.stderr), logs.join("\n"))
    }

    /// `engine destroy`; then the emulator holds nothing, and the machines that were deleted
    /// are powered off (their processes with them), leaving no port open.
    fn destroy_and_check(&mut self, run_id: &str) {
        let d = self.engine(&["destroy", run_id]);
        assert_eq!(d.status.code(), Some(0), "{}", self.diagnose(&d));
        let left = self.emu.leftovers();
        assert!(left.is_empty(), "destroy left {left:?}\n{}", text(&d.stdout));
        assert!(self.emu.api().snapshot()["servers"].as_array().is_none_or(Vec::is_empty));
        let (_, v, h) = self.ports;
        for host in &mut self.hosts {
            assert_eq!(host.started().len(), 2, "{}: the fake vLLM and the health endpoint ran", host.ip);
            host.power_off();
            assert!(host.processes().is_empty(), "{}: processes left: {:?}", host.ip, host.processes());
            for port in [v, h] {
                let addr = SocketAddr::from((host.ip, port));
                let start = Instant::now();
                while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    assert!(start.elapsed() < Duration::from_secs(5), "{addr} still answers after the machine is gone");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

fn run_id_of(events: &[Value]) -> String {
    events.first().and_then(|e| e["run_id"].as_str()).expect("a run id").to_string()
}

/// The whole example, two servers: created the seed-002 way, each really reached over SSH on
/// its own address, the install script run there (Docker, toolkit check, vLLM container,
/// health endpoint under "systemd"), vLLM's /health, /v1/models and a completion really
/// polled, the worker's own health endpoint really answering ready; the worker sub-workflow run
/// again changes nothing, and with another model replaces the container; `destroy` leaves the
/// account empty and, the machines gone, nothing of the workers runs.
#[test]
fn the_cluster_example_runs_end_to_end_and_destroy_leaves_nothing() {
    let Some(mut c) = Cluster::start(20, 2) else { return };
    let out = c.run_example();
    assert_eq!(out.status.code(), Some(0), "{}", c.diagnose(&out));
    let events = json_lines(&text(&out.stdout));
    let last = events.last().unwrap();
    assert_eq!(last["event"], "run_finished");
    let ips: BTreeSet<String> = last["outputs"]["public_ips"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(ips, BTreeSet::from(["127.0.0.20".to_string(), "127.0.0.21".to_string()]));
    let endpoints: BTreeSet<String> = last["outputs"]["endpoints"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(endpoints, ips.iter().map(|ip| format!("http://{ip}:{}/v1", c.ports.1)).collect());
    assert_eq!(last["outputs"]["types"], serde_json::json!(["L4-1-24G", "L4-1-24G"]));
    // Every stage of seed 002's create sequence was reported, for each server.
    for i in 0..2 {
        let stages: Vec<&str> = events.iter().filter(|e| e["event"] == "step_progress" && e["index"] == i && e["step"].as_str().unwrap().ends_with("server")).map(|e| e["stage"].as_str().unwrap()).collect();
        for s in ["PROVIDER_CREATE", "PROVIDER_VOLUME_RESIZE", "PROVIDER_START", "PROVIDER_GET_IP", "PROVIDER_SECURITY_GROUP", "ready"] {
            assert!(stages.contains(&s), "server[{i}] never reported {s}: {stages:?}");
        }
    }
    // The API saw two running L4 servers with 200 GB boot volumes and the three ports open.
    let snap = c.emu.api().snapshot();
    let servers = snap["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2, "{snap}");
    assert!(servers.iter().all(|s| s["commercial_type"] == "L4-1-24G" && s["state"] == "running"), "{snap}");
    let rules = added_rules(&snap).join(" ");
    for p in [c.ports.0, c.ports.1, c.ports.2] {
        assert!(rules.contains(&format!(" {p}")), "port {p} not opened: {rules}");
    }
    for h in &c.hosts {
        let calls = h.calls();
        assert!(calls.contains("--gpus all --ipc=host") && calls.contains(&format!("--model {MODEL}")), "{}: {calls}", h.ip);
        assert_eq!(calls.matches("docker run").count(), 1, "{calls}");
        assert!(calls.contains("systemctl restart vllm-worker-health"), "{calls}");
        let reqs = std::fs::read_to_string(h.dir.join("docker/requests.log")).unwrap_or_default();
        for r in ["GET /health", "GET /v1/models", "POST /v1/completions"] {
            assert!(reqs.contains(r), "{}: vLLM never got {r}: {reqs}", h.ip);
        }
        // The worker endpoint is the real one, asking vLLM and nvidia-smi.
        let health = http_get(SocketAddr::from((h.ip, c.ports.2)), "/health");
        assert!(health.starts_with("HTTP/1.0 200") && health.contains("\"status\": \"ready\"") && health.contains("Tesla T4"), "{health}");
    }
    let run_id = run_id_of(&events);
    // The worker sub-workflow again on the first server, as users run it on its own: the
    // install script finds everything in place and changes nothing.
    let h0 = &c.hosts[0];
    let worker = |model: &str| {
        let wf = root().join("workflows/vllm-worker.yaml");
        let (s, v, hp) = c.ports;
        let args = [
            "run", wf.to_str().unwrap(), "--output", "json", "-i", &format!("host={}", h0.ip), "-i", &format!("ssh_port={s}"),
            "-i", &format!("port={v}"), "-i", &format!("health_port={hp}"), "-i", &format!("model={model}"),
        ]
        .map(str::to_string);
        c.engine(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let again = worker(MODEL);
    assert_eq!(again.status.code(), Some(0), "{}", c.diagnose(&again));
    let calls = h0.calls();
    assert_eq!(calls.matches("docker run").count(), 1, "a second install started vLLM again: {calls}");
    assert_eq!(calls.matches("systemctl restart vllm-worker-health").count(), 1, "{calls}");
    assert!(text(&again.stdout).contains(&format!("vLLM already serves {MODEL}")), "{}", text(&again.stdout));
    // Another model: the container is replaced, and the checks see the new model.
    let other = "Qwen/Qwen2.5-0.5B-Instruct";
    let changed = worker(other);
    assert_eq!(changed.status.code(), Some(0), "{}", c.diagnose(&changed));
    let calls = h0.calls();
    assert_eq!(calls.matches("docker rm -f vllm").count(), 1, "{calls}");
    assert!(calls.contains(&format!("--model {other}")), "{calls}");
    let last: Value = json_lines(&text(&changed.stdout)).pop().unwrap();
    assert_eq!(last["outputs"]["model"], other);
    assert_eq!(last["outputs"]["completion"], " world");
    let health = http_get(SocketAddr::from((h0.ip, c.ports.2)), "/health");
    assert!(health.contains(&format!("\"model\": \"{other}\"")), "{health}");
    c.destroy_and_check(&run_id);
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf
}

/// L4 is out of stock in the zone: each server falls back to L40S-1-48G (the `fallback:` of the
/// example), the run says why, the workers are installed on the L40S servers all the same.
#[test]
fn the_cluster_falls_back_to_l40s_when_l4_is_out_of_stock() {
    let Some(mut c) = Cluster::start(30, 2) else { return };
    c.emu.api().set_stock(ZONE, "L4-1-24G", Stock::Shortage);
    let out = c.run_example();
    assert_eq!(out.status.code(), Some(0), "{}", c.diagnose(&out));
    let events = json_lines(&text(&out.stdout));
    assert_eq!(events.last().unwrap()["outputs"]["types"], serde_json::json!(["L40S-1-48G", "L40S-1-48G"]));
    let fallbacks: Vec<&Value> = events.iter().filter(|e| e["event"] == "step_fallback").collect();
    assert_eq!(fallbacks.len(), 2, "{fallbacks:?}");
    for f in &fallbacks {
        assert_eq!(f["fallback_index"], 0);
        let why = f["error"].as_str().unwrap();
        assert!(why.contains("412 out_of_stock") && why.contains("POST /instance/v1/zones/fr-par-2/servers"), "{f}");
    }
    let run_id = run_id_of(&events);
    let shown: Value = serde_json::from_slice(&c.engine(&["show", &run_id, "--output", "json"]).stdout).unwrap();
    let steps = shown["steps"].as_object().unwrap();
    let server0 = steps.iter().find(|(k, _)| k.ends_with("server[0]")).map(|(_, v)| v).expect("server[0] in show");
    assert_eq!(server0["outputs"]["fallback_index"], 0, "{server0}");
    assert_eq!(server0["outputs"]["instance_type"], "L40S-1-48G");
    let snap = c.emu.api().snapshot();
    assert!(snap["servers"].as_array().unwrap().iter().all(|s| s["commercial_type"] == "L40S-1-48G"), "{snap}");
    c.destroy_and_check(&run_id);
}

/// The server part of the example (availability, then `scaleway.server.create` fanned out with
/// its fallback: the same steps as examples/cluster.yaml, without the worker install, to keep
/// each kill point cheap), SIGKILLed after each event of the JSON stream, stage events
/// included (so also between the volume resize and the poweron): `resume` finishes with
/// exactly one server per node, and `destroy` leaves nothing.
#[test]
fn the_server_sequence_survives_a_kill_at_every_event() {
    let t = CliTest::new();
    let emu = Emulator::start(0.01, None);
    let wf = t.write(
        "servers.yaml",
        "version: 1\nname: servers\ninputs:\n  nodes: { type: integer, default: 2 }\nsecrets:\n  scw_secret_key: { env: SCW_SECRET_KEY }\nconnectors:\n  scaleway: { secret_key: '${{ secrets.scw_secret_key }}', project_id: '${{ env.SCW_PROJECT_ID }}' }\n\
         steps:\n  capacity:\n    uses: scaleway.availability\n    with: { zone: fr-par-2, types: [L4-1-24G, L40S-1-48G] }\n\
         \x20 server:\n    uses: scaleway.server.create\n    needs: [capacity]\n    for_each: ${{ range(inputs.nodes) }}\n    with: { zone: fr-par-2, name: 'gpu-${{ index }}', commercial_type: L4-1-24G, root_volume_gb: 200, open_ports: [22, 8000, 8080] }\n    fallback:\n      - with: { commercial_type: L40S-1-48G }\n\
         outputs:\n  ids: ${{ steps.server.outputs | map(attribute='id') | list }}\n",
    );
    let engine = |args: &[&str]| {
        let mut c = t.cmd();
        emu.env(&mut c);
        c.args(args).output().unwrap()
    };
    let full = engine(&["run", wf.to_str().unwrap(), "--output", "json"]);
    assert_eq!(full.status.code(), Some(0), "{}", text(&full.stderr));
    let probe = json_lines(&text(&full.stdout));
    let total = probe.len();
    assert!(probe.iter().filter(|e| e["event"] == "step_progress").count() >= 12, "{probe:?}");
    let d = engine(&["destroy", &run_id_of(&probe)]);
    assert_eq!(d.status.code(), Some(0));
    let mut points = 0;
    let mut labels = BTreeSet::new();
    let mut between_resize_and_start = 0;
    for k in 1..total {
        emu.api().reset();
        let mut cmd = t.cmd();
        emu.env(&mut cmd);
        let mut child = cmd.args(["run", wf.to_str().unwrap(), "--output", "json"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut seen = Vec::new();
        let mut line = String::new();
        while seen.len() < k {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            seen.push(serde_json::from_str::<Value>(&line).unwrap());
        }
        Command::new("kill").args(["-KILL", &child.id().to_string()]).status().unwrap();
        let _ = child.wait();
        let Some(last) = seen.last() else { continue };
        if last["event"] == "run_finished" {
            continue;
        }
        let point = format!("{} {} {} {}", last["event"], last["step"], last["index"], last["stage"].as_str().or(last["status"].as_str()).unwrap_or(""));
        if last["stage"] == "PROVIDER_VOLUME_RESIZE" {
            between_resize_and_start += 1;
        }
        let run_id = run_id_of(&seen);
        let out = engine(&["resume", &run_id, "--output", "json"]);
        assert_eq!(out.status.code(), Some(0), "kill after {point}: {}\n{}", text(&out.stdout), text(&out.stderr));
        let snap = emu.api().snapshot();
        let servers = snap["servers"].as_array().unwrap();
        assert_eq!(servers.len(), 2, "kill after {point}: {snap}");
        let names: BTreeSet<&str> = servers.iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(names, BTreeSet::from(["gpu-0", "gpu-1"]), "kill after {point}");
        assert!(servers.iter().all(|s| s["state"] == "running"), "kill after {point}: {snap}");
        let vols = snap["volumes"].as_array().map_or(0, Vec::len);
        assert_eq!(vols, 2, "kill after {point}: one boot volume per server: {snap}");
        let d = engine(&["destroy", &run_id]);
        assert_eq!(d.status.code(), Some(0), "kill after {point}: {}", text(&d.stderr));
        let left = emu.leftovers();
        assert!(left.is_empty(), "kill after {point}: destroy left {left:?}");
        points += 1;
        labels.insert(point);
    }
    eprintln!("{points} kill points ({} distinct events) of {total} events", labels.len());
    assert!(points >= 20, "only {points} kill points: {labels:?}");
    assert!(labels.len() >= 15, "only {} distinct events killed after: {labels:?}", labels.len());
    assert!(between_resize_and_start >= 1, "no kill between the volume resize and the poweron");
}
