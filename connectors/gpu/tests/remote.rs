//! `host:`: the actions over SSH, through the ssh connector's library, against a real
//! OpenSSH sshd started on 127.0.0.1 (the peer of `scripts/peers/sshd.sh`) and the fake
//! nvidia-smi of `common/` on the "remote" side.
//!
//! Without sshd or ssh-keygen the tests print `skipped: ...`, or fail under
//! `ENGINE_REQUIRE_PEERS=1`.

mod common;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{four_gpus, FakeSmi};
use connector_gpu::{Allocate, Deallocate, List, Monitor};
use engine_connector::ErrorKind;
use serde_json::json;

const SSHD: &str = "/usr/sbin/sshd";

struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    log: PathBuf,
    key: PathBuf,
    user: String,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn keygen(path: &Path) {
    run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(path));
}

/// A real sshd on 127.0.0.1 that lets the current user in with a fresh key.
fn sshd() -> Option<Sshd> {
    let have_keygen = Command::new("ssh-keygen").arg("-?").stderr(Stdio::null()).status().is_ok();
    if !Path::new(SSHD).is_file() || !have_keygen {
        assert!(std::env::var("ENGINE_REQUIRE_PEERS").as_deref() != Ok("1"), "sshd is missing: run scripts/peers/sshd.sh");
        eprintln!("skipped: sshd is missing (run scripts/peers/sshd.sh)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let (host_key, key) = (dir.path().join("host_key"), dir.path().join("id_ed25519"));
    keygen(&host_key);
    keygen(&key);
    std::fs::copy(dir.path().join("id_ed25519.pub"), dir.path().join("authorized_keys")).unwrap();
    std::fs::write(dir.path().join("known_hosts"), "").unwrap();
    let user = run(Command::new("id").arg("-un")).trim().to_string();
    let _ = std::fs::create_dir_all("/run/sshd");
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\nUsePAM no\nStrictModes no\nPermitRootLogin yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n",
                host_key.display(),
                d = dir.path().display()
            ),
        )
        .unwrap();
        let log = dir.path().join("sshd.log");
        let mut child = Command::new(SSHD).args(["-D", "-e", "-f"]).arg(&config).stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 8];
                if c.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"SSH-2.0")) {
                    return Some(Sshd { child, port, dir, log, key, user });
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The port was taken between the probe and the bind: try another.
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("sshd did not start");
}

#[tokio::test]
async fn actions_run_on_a_remote_host_over_ssh() {
    let Some(sshd) = sshd() else { return };
    let fake = FakeSmi::new(&four_gpus());
    // A path with a space: the remote command line must be quoted.
    let spaced = sshd.dir.path().join("gpu tools");
    std::os::unix::fs::symlink(fake.dir.path(), &spaced).unwrap();
    let mut settings = fake.settings();
    settings["nvidia_smi"] = json!(spaced.join("nvidia-smi").to_str().unwrap());
    settings["ssh"] = json!({
        "user": sshd.user, "private_key_file": sshd.key.to_str().unwrap(),
        "known_hosts": sshd.dir.path().join("known_hosts").to_str().unwrap(), "connect_timeout": "10s"
    });
    let host = format!("127.0.0.1:{}", sshd.port);
    let mut h = fake.harness("remote");
    h.settings = settings.clone();

    let out = h.run(&List, json!({"host": host})).await.unwrap_or_else(|e| panic!("{e}\n{}", std::fs::read_to_string(&sshd.log).unwrap_or_default()));
    assert_eq!(out.host, host);
    assert_eq!(out.count, 4);
    assert_eq!(fake.calls(), ["-q -x"]);

    let m = h.run(&Monitor, json!({"host": {"host": "127.0.0.1", "port": sshd.port}, "duration": "0s"})).await.unwrap();
    assert_eq!(m.samples[0].gpus.len(), 4);

    // The ledger names the remote host; local allocations are another machine's.
    let a = h.run(&Allocate, json!({"host": host, "count": 3})).await.unwrap();
    assert_eq!(a.host, host);
    let local = fake.harness("local").run(&Allocate, json!({"count": 3})).await.unwrap();
    assert_eq!(local.host, "local");
    let d = h.run(&Deallocate, json!({"key": "harness-run/remote", "host": host})).await.unwrap();
    assert!(d.released);

    // Failures on the remote side name the host.
    settings["nvidia_smi"] = json!("nvidia-smi-not-on-this-host");
    h.settings = settings.clone();
    let e = h.run(&List, json!({"host": host})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.message.contains(&format!("was not found on the PATH of {host}")), "{}", e.message);
    settings["nvidia_smi"] = json!(fake.path().to_str().unwrap());
    h.settings = settings;
    fake.fail_with(9, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.\n");
    let e = h.run(&List, json!({"host": host})).await.unwrap_err();
    assert!(e.message.contains(&format!("nvidia-smi on {host} cannot talk to the NVIDIA kernel driver")), "{}", e.message);

    // A refused key is `auth`.
    let mut h2 = fake.harness("remote");
    h2.settings = json!({"ssh": {"user": "nobody-here", "private_key_file": sshd.key.to_str().unwrap(), "known_hosts": sshd.dir.path().join("known_hosts").to_str().unwrap()}});
    let e = h2.run(&List, json!({"host": host})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
}
