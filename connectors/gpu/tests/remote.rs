//! `host:`: the actions over SSH, through the ssh connector's library, against a real
//! OpenSSH sshd started on 127.0.0.1 (`connector_ssh::testing`, the peer of
//! `scripts/peers/sshd.sh`) and the fake nvidia-smi of `connector_gpu::testing` on the "remote" side.
//!
//! Without sshd or ssh-keygen the tests print `skipped: ...`, or fail under
//! `ENGINE_REQUIRE_PEERS=1`.


use connector_gpu::testing::{four_gpus, FakeSmi};
use connector_gpu::{Allocate, Deallocate, List, Monitor};
use connector_ssh::testing::Peer;
use engine_connector::ErrorKind;
use serde_json::json;

#[tokio::test]
async fn actions_run_on_a_remote_host_over_ssh() {
    let Some(peer) = Peer::start() else { return };
    let fake = FakeSmi::new(&four_gpus());
    // A path with a space: the remote command line must be quoted.
    let spaced = peer.path().join("gpu tools");
    std::os::unix::fs::symlink(fake.dir.path(), &spaced).unwrap();
    let mut settings = fake.settings();
    settings["nvidia_smi"] = json!(spaced.join("nvidia-smi").to_str().unwrap());
    settings["ssh"] = peer.settings();
    let host = format!("127.0.0.1:{}", peer.port());
    let mut h = fake.harness("remote");
    h.settings = settings.clone();

    let out = h.run(&List, json!({"host": host})).await.unwrap_or_else(|e| panic!("{e}\n{}", peer.log()));
    assert_eq!(out.host, host);
    assert_eq!(out.count, 4);
    assert_eq!(fake.calls(), ["-q -x"]);

    let m = h.run(&Monitor, json!({"host": {"host": "127.0.0.1", "port": peer.port()}, "duration": "0s"})).await.unwrap();
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
    h2.settings = json!({"ssh": {"user": "nobody-here", "private_key_file": peer.key.to_str().unwrap(), "known_hosts": peer.known_hosts.to_str().unwrap()}});
    let e = h2.run(&List, json!({"host": host})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
}
