//! Credentials found the way `ssh` finds them when a step names none: an ssh-agent
//! (`SSH_AUTH_SOCK`), then `~/.ssh/id_*`. This binary changes `SSH_AUTH_SOCK` and `HOME`, so
//! it holds one test only (each test binary is its own process).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::fresh;
use connector_ssh::testing::{keygen, sh};
use connector_ssh::{Session, SshTarget};
use engine_connector::ErrorKind;
use serde_json::json;

#[tokio::test]
async fn agent_then_default_key_files_then_a_clear_error() {
    let p = peer!();
    if Command::new("ssh-agent").arg("-h").stderr(Stdio::null()).status().is_err() {
        eprintln!("skipped: ssh-agent not installed");
        return;
    }
    let (_s, _t, cx) = fresh(p.path());
    let home = p.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    // Nothing in the step, no agent, an empty home: a clear auth error.
    std::env::set_var("HOME", &home);
    std::env::remove_var("SSH_AUTH_SOCK");
    let bare: SshTarget = serde_json::from_value(json!({"host": "127.0.0.1", "port": p.port(), "user": p.user, "known_hosts": p.known_hosts})).unwrap();
    let e = Session::connect(&cx, &bare).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(e.message.contains("no credentials"), "{}", e.message);

    // An agent holding an authorized key.
    let sock = p.path().join("agent.sock");
    let mut agent = Command::new("ssh-agent").arg("-D").arg("-a").arg(&sock).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    for _ in 0..200 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let agent_key = keygen(p.path(), "agent_key", "ed25519", "");
    p.authorize(&agent_key);
    sh(Command::new("ssh-add").arg("-q").arg(&agent_key).env("SSH_AUTH_SOCK", &sock));
    std::env::set_var("SSH_AUTH_SOCK", &sock);
    let s = Session::connect(&cx, &bare).await.unwrap_or_else(|e| panic!("{e}\n{}", p.log()));
    assert_eq!(s.exec("echo via-agent").await.unwrap().stdout, "via-agent\n");
    drop(s);
    let _ = agent.kill();
    let _ = agent.wait();

    // The agent is gone; ~/.ssh/id_ed25519 is used, as ssh would.
    std::env::remove_var("SSH_AUTH_SOCK");
    std::fs::copy(&p.key, home.join(".ssh/id_ed25519")).unwrap();
    let s = Session::connect(&cx, &bare).await.unwrap_or_else(|e| panic!("{e}\n{}", p.log()));
    assert!(s.exec("true").await.unwrap().success());
}
