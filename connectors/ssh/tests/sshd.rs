//! `ssh.*` actions and the `Session` library against a real OpenSSH sshd
//! (`connector_ssh::testing`).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{alive, eventually, fresh};
use connector_ssh::testing::{free_port, keygen, openssh_fingerprint, pub_path, sh, Sshd};
use connector_ssh::{HostKeyTrust, Session, SshRun, SshRunInput, SshTarget, SshUpload, SshUploadInput, SshWait, SshWaitInput, UploadOptions, UploadSource};
use engine_connector::{Action, ErrorKind, LogStream, StepContext};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn run_input(v: Value) -> SshRunInput {
    serde_json::from_value(v).unwrap()
}

async fn run(v: Value, cx: &StepContext) -> Result<connector_ssh::SshRunOutput, engine_connector::ConnectorError> {
    let input = run_input(v);
    SshRun.validate(&input)?;
    SshRun.run(input, cx).await
}

fn target(v: Value) -> SshTarget {
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn run_streams_lines_separates_streams_and_passes_env_and_args() {
    let p = peer!();
    let (sink, _t, cx) = fresh(p.path());
    let out = run(
        p.with(json!({
            "command": "echo out1; echo \"err1 $GREETING\" >&2; printf 'out2 %s|%s\\n' \"$1\" \"$2\"; printf 'no newline'",
            "args": ["a b", "it's"],
            "env": {"GREETING": "hello 'world' $HOME"},
        })),
        &cx,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", p.log()));
    assert_eq!(out.exit_code, 0);
    assert_eq!(out.stdout, "out1\nout2 a b|it's\nno newline");
    assert_eq!(out.stderr, "err1 hello 'world' $HOME\n");
    assert_eq!(sink.lines(LogStream::Stdout), ["out1", "out2 a b|it's", "no newline"]);
    assert_eq!(sink.lines(LogStream::Stderr), ["err1 hello 'world' $HOME"]);
    // The fingerprint is the one OpenSSH prints for the server's key, and it was pinned.
    let fp = openssh_fingerprint(&p.host_key);
    assert_eq!(out.host_key, fp);
    assert_eq!(sink.pins.lock().unwrap().get(&format!("ssh-host-key:127.0.0.1:{}", p.port())), Some(&fp));
    assert!(sink.progress.lock().unwrap().iter().any(|(s, _)| s == "running"));
}

#[tokio::test]
async fn env_values_stay_off_command_lines_and_leave_no_file() {
    let p = peer!();
    let (_s, _t, cx) = fresh(p.path());
    let secret = format!("s3cret-{}-{}", std::process::id(), p.port());
    let out = run(p.with(json!({"command": "tr '\\0' ' ' < /proc/$$/cmdline; echo; tr '\\0' ' ' < /proc/$PPID/cmdline; echo; echo \"$TOKEN\"", "env": {"TOKEN": secret}})), &cx)
        .await
        .unwrap();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(!lines[0].contains(&secret) && !lines[1].contains(&secret), "a secret is on a command line: {lines:?}");
    assert_eq!(lines[2], secret);
    let tmp = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into());
    for entry in std::fs::read_dir(tmp).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("engine-ssh-env.") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            assert!(!text.contains(&secret), "the env file {} was left behind", entry.path().display());
        }
    }
}

#[tokio::test]
async fn lines_reach_the_log_while_the_command_still_runs() {
    let p = peer!();
    let (sink, _t, cx) = fresh(p.path());
    let marker = p.path().join("go");
    let cmd = format!("echo first; while [ ! -e {} ]; do sleep 0.05; done; echo second", marker.display());
    let task = tokio::spawn(async move { run(p.with(json!({ "command": cmd })), &cx).await.map(|o| (o, p)) });
    let s = sink.clone();
    assert!(eventually(Duration::from_secs(10), || s.lines(LogStream::Stdout) == ["first"]).await, "the first line was not logged before the command ended");
    std::fs::write(&marker, "").unwrap();
    let (out, _p) = task.await.unwrap().unwrap();
    assert_eq!(out.stdout, "first\nsecond\n");
    assert_eq!(sink.lines(LogStream::Stdout), ["first", "second"]);
}

#[tokio::test]
async fn a_failing_command_fails_the_step_with_its_code_and_stderr_unless_check_is_false() {
    let p = peer!();
    let (_s, _t, cx) = fresh(p.path());
    let e = run(p.with(json!({"command": "echo working; echo 'boom: disk full' >&2; exit 3"})), &cx).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
    assert!(e.message.contains("code 3") && e.message.contains("boom: disk full"), "{}", e.message);
    let out = run(p.with(json!({"command": "echo x >&2; exit 4", "check": false})), &cx).await.unwrap();
    assert_eq!((out.exit_code, out.stderr.as_str()), (4, "x\n"));
    // Killed by a signal: transient, with the signal's name.
    let e = run(p.with(json!({"command": "kill -KILL $$"})), &cx).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains("signal KILL"), "{}", e.message);
    let out = run(p.with(json!({"command": "kill -TERM $$", "check": false})), &cx).await.unwrap();
    assert_eq!((out.exit_code, out.signal.as_deref()), (-1, Some("TERM")));
}

#[tokio::test]
async fn sudo_runs_as_root_without_prompting() {
    let p = peer!();
    let (_s, _t, cx) = fresh(p.path());
    if !Path::new("/usr/bin/sudo").exists() {
        assert!(std::env::var("ENGINE_REQUIRE_PEERS").as_deref() != Ok("1"), "sudo missing: run scripts/peers/sshd.sh");
        eprintln!("skipped: sudo not installed (scripts/peers/sshd.sh installs it)");
        return;
    }
    let r = run(p.with(json!({"command": "id -u; echo \"$V\"; pwd", "sudo": true, "env": {"V": "kept"}, "cwd": "/tmp"})), &cx).await;
    if p.user == "root" {
        let out = r.unwrap();
        assert_eq!(out.stdout, "0\nkept\n/tmp\n");
    } else {
        // Without password-less sudo, `sudo -n` refuses: a clear auth error, never a prompt.
        match r {
            Ok(out) => assert!(out.stdout.starts_with("0\n")),
            Err(e) => assert_eq!(e.kind, ErrorKind::Auth, "{e}"),
        }
    }
}

#[tokio::test]
async fn a_sudo_password_prompt_fails_clearly() {
    let p = peer!();
    let (_s, _t, cx) = fresh(p.path());
    if p.user != "root" || !Path::new("/usr/bin/sudo").exists() {
        eprintln!("skipped: needs root and sudo");
        return;
    }
    // As root the step's own `sudo -n` never asks; a user without password-less rights
    // (`nobody`, reached with su) makes the real sudo refuse with the words it prints to any
    // SSH user in that case. The step fails with `auth` and a clear message, never a prompt.
    let started = Instant::now();
    let e = run(p.with(json!({"command": "su nobody -s /bin/sh -c 'sudo -n true'", "sudo": true})), &cx).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(e.message.contains("wants a password") && e.message.contains("NOPASSWD"), "{}", e.message);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn scripts_are_uploaded_run_with_their_interpreter_and_removed() {
    let p = peer!();
    let (_s, _t, cx) = fresh(p.path());
    std::fs::create_dir_all(p.path().join("scripts")).unwrap();
    std::fs::write(p.path().join("scripts/with-shebang.sh"), "#!/bin/sh -e\necho \"$0\"\necho \"args=$1,$2 env=$MODE\"\necho warn >&2\n").unwrap();
    std::fs::write(p.path().join("scripts/plain.sh"), "echo \"$0\"\necho plain \"$@\"; exit 0\n").unwrap();
    let out = run(p.with(json!({"script": "scripts/with-shebang.sh", "args": ["x", "y z"], "env": {"MODE": "fast"}})), &cx).await.unwrap();
    let mut lines = out.stdout.lines();
    let remote = lines.next().unwrap().to_string();
    assert!(remote.contains("engine-ssh-script."), "{remote}");
    assert_eq!(lines.next(), Some("args=x,y z env=fast"));
    assert_eq!(out.stderr, "warn\n");
    assert!(!Path::new(&remote).exists(), "the uploaded script {remote} was left behind");
    let out = run(p.with(json!({"script": "scripts/plain.sh", "args": ["1"], "sudo": p.user == "root"})), &cx).await.unwrap();
    assert_eq!(out.stdout.lines().nth(1), Some("plain 1"));
    assert!(!Path::new(out.stdout.lines().next().unwrap()).exists());
    let e = run(p.with(json!({"script": "scripts/missing.sh"})), &cx).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
}

#[tokio::test]
async fn upload_streams_a_large_file_and_checks_it() {
    let p = peer!();
    let (sink, _t, cx) = fresh(p.path());
    // 24 MiB of non-repeating bytes.
    let local = p.path().join("big.bin");
    let mut data = Vec::with_capacity(24 << 20);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while data.len() < (24 << 20) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(&local, &data).unwrap();
    let remote = p.path().join("remote/sub dir/big.bin");
    let input: SshUploadInput = serde_json::from_value(p.with(json!({"source": "big.bin", "path": remote.to_str().unwrap(), "mode": "0600"}))).unwrap();
    SshUpload.validate(&input).unwrap();
    let started = Instant::now();
    let out = SshUpload.run(input, &cx).await.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("uploaded 24 MiB in {:?}", started.elapsed());
    assert_eq!(out.size, data.len() as u64);
    assert!(out.checksum_verified);
    let expected = sh(std::process::Command::new("sha256sum").arg(&local));
    assert_eq!(out.sha256, expected.split_whitespace().next().unwrap());
    assert_eq!(out.mode, "0600");
    assert!(std::fs::read(&remote).unwrap() == data, "the remote file differs");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&remote).unwrap().permissions().mode() & 0o7777, 0o600);
    let progress = sink.progress.lock().unwrap().clone();
    assert!(progress.iter().any(|(s, p)| s == "uploading" && *p == Some(100)), "{progress:?}");
    // No temporary file is left beside it.
    let left: Vec<_> = std::fs::read_dir(remote.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 1, "{left:?}");

    // Inline content replacing it keeps its mode.
    let input: SshUploadInput = serde_json::from_value(p.with(json!({"content": "small\n", "path": remote.to_str().unwrap()}))).unwrap();
    let out = SshUpload.run(input, &cx).await.unwrap();
    assert_eq!((out.size, out.mode.as_str()), (6, "0600"));
    assert_eq!(std::fs::read_to_string(&remote).unwrap(), "small\n");

    // A missing directory without create_dirs: invalid, nothing written.
    let nowhere = p.path().join("nowhere/file");
    let input: SshUploadInput = serde_json::from_value(p.with(json!({"content": "x", "path": nowhere.to_str().unwrap(), "create_dirs": false}))).unwrap();
    let e = SshUpload.run(input, &cx).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
    assert!(e.message.contains("no directory"), "{}", e.message);
    assert!(!nowhere.parent().unwrap().exists());
}

#[tokio::test]
async fn a_wrong_host_key_in_known_hosts_is_refused_naming_both_fingerprints() {
    let p = peer!();
    let (_s, _t, cx) = fresh(p.path());
    let other = keygen(p.path(), "other_host", "ed25519", "");
    let other_pub = std::fs::read_to_string(pub_path(&other)).unwrap();
    std::fs::write(&p.known_hosts, format!("[127.0.0.1]:{} {other_pub}", p.port())).unwrap();
    let e = run(p.with(json!({"command": "touch should-not-run"})), &cx).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(e.message.contains("mismatch"), "{}", e.message);
    assert!(e.message.contains(&openssh_fingerprint(&p.host_key)), "{}", e.message);
    assert!(e.message.contains(&openssh_fingerprint(&other)), "{}", e.message);
    assert!(e.message.contains(&format!("127.0.0.1:{}", p.port())), "{}", e.message);
    assert!(!p.log().contains("Accepted publickey"), "credentials were sent to an untrusted host");
}

#[tokio::test]
async fn known_hosts_hashed_by_ssh_keygen_strict_and_revoked() {
    let p = peer!();
    let (sink, _t, cx) = fresh(p.path());
    // strict with an unknown host: refused.
    let e = Session::connect(&cx, &target(p.with(json!({"host_key_check": "strict"})))).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(e.message.contains("unknown") && e.message.contains("strict"), "{}", e.message);
    // The right key, hashed by the real ssh-keygen: trusted through known_hosts, not pinned.
    let host_pub = std::fs::read_to_string(pub_path(&p.host_key)).unwrap();
    std::fs::write(&p.known_hosts, format!("[127.0.0.1]:{} {host_pub}", p.port())).unwrap();
    sh(std::process::Command::new("ssh-keygen").arg("-q").arg("-H").arg("-f").arg(&p.known_hosts));
    let hashed = std::fs::read_to_string(&p.known_hosts).unwrap();
    assert!(hashed.starts_with("|1|"), "{hashed}");
    let s = Session::connect(&cx, &target(p.with(json!({"host_key_check": "strict"})))).await.unwrap();
    assert_eq!(s.host_key().trust, HostKeyTrust::KnownHosts);
    assert!(sink.pins.lock().unwrap().is_empty());
    drop(s);
    // The same key marked @revoked: refused even though it is listed.
    std::fs::write(&p.known_hosts, format!("{hashed}@revoked * {host_pub}")).unwrap();
    let e = Session::connect(&cx, &target(p.target())).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(e.message.contains("@revoked"), "{}", e.message);
}

#[tokio::test]
async fn the_first_host_key_is_pinned_and_a_different_one_later_in_the_run_is_refused() {
    let mut p = peer!();
    let (sink, _t, cx) = fresh(p.path());
    let first = openssh_fingerprint(&p.host_key);
    let s = Session::connect(&cx, &target(p.target())).await.unwrap();
    assert_eq!(s.host_key().trust, HostKeyTrust::Pinned);
    assert_eq!(s.host_key().fingerprint, first);
    s.close().await;
    // Same run, same key: fine.
    Session::connect(&cx, &target(p.target())).await.unwrap().close().await;

    // Another sshd with another host key at the same host:port.
    let other = keygen(p.path(), "host2_ed25519", "ed25519", "");
    p.restart_with_host_key(&other);
    let second = openssh_fingerprint(&other);
    let e = run(p.with(json!({"command": "true"})), &cx).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(e.message.contains(&first) && e.message.contains(&second), "{}", e.message);
    assert!(e.message.contains("changed during this run"), "{}", e.message);
    assert_eq!(sink.pins.lock().unwrap().len(), 1);
    assert!(!p.log().contains("Accepted publickey"), "credentials were sent before the pin was checked");

    // Another run has no pin yet: it trusts the new key.
    let (_s2, _t2, cx2) = fresh(p.path());
    let s = Session::connect(&cx2, &target(p.target())).await.unwrap();
    assert_eq!(s.host_key().fingerprint, second);
}

#[tokio::test]
async fn host_key_check_off_accepts_with_a_warning() {
    let p = peer!();
    let (sink, _t, cx) = fresh(p.path());
    let other = keygen(p.path(), "other_host", "ed25519", "");
    let other_pub = std::fs::read_to_string(pub_path(&other)).unwrap();
    std::fs::write(&p.known_hosts, format!("[127.0.0.1]:{} {other_pub}", p.port())).unwrap();
    let s = Session::connect(&cx, &target(p.with(json!({"host_key_check": "off"})))).await.unwrap();
    assert_eq!(s.host_key().trust, HostKeyTrust::Unchecked);
    let warnings = sink.lines(LogStream::Stderr);
    assert!(warnings.iter().any(|l| l.contains("warning") && l.contains("host_key_check is off")), "{warnings:?}");
}

#[tokio::test]
async fn refused_credentials_are_auth_errors_that_name_the_user_and_key_but_no_secret() {
    let p = peer!();
    let (_s, _t, cx) = fresh(p.path());
    let stranger = keygen(p.path(), "stranger", "ed25519", "");
    let e = Session::connect(&cx, &target(p.with(json!({"private_key_file": stranger.to_str().unwrap()})))).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(e.message.contains("permission denied") && e.message.contains(&format!("`{}`", p.user)), "{}", e.message);
    assert!(e.message.contains(stranger.to_str().unwrap()) && e.message.contains(&openssh_fingerprint(&stranger)), "{}", e.message);
    assert!(e.message.contains("publickey"), "{}", e.message);

    // An inline key and a password, both refused: neither appears in the error.
    let key_text = std::fs::read_to_string(&stranger).unwrap();
    let e = Session::connect(&cx, &target(json!({"host": "127.0.0.1", "port": p.port(), "user": p.user, "known_hosts": p.known_hosts, "private_key": key_text, "password": "hunter2-not-it"})))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(e.message.contains("password") && e.message.contains("`private_key`"), "{}", e.message);
    assert!(!e.message.contains("hunter2-not-it") && !e.message.contains("PRIVATE KEY") && !e.message.contains(key_text.lines().nth(1).unwrap()), "{}", e.message);
    assert!(!format!("{e:?}").contains("hunter2-not-it"));
}

#[tokio::test]
async fn encrypted_and_rsa_keys() {
    let p = peer!();
    let (_s, _t, cx) = fresh(p.path());
    let enc = keygen(p.path(), "id_enc", "ed25519", "correct horse");
    let rsa = keygen(p.path(), "id_rsa", "rsa", "");
    p.authorize(&enc);
    p.authorize(&rsa);
    let s = Session::connect(&cx, &target(p.with(json!({"private_key_file": enc.to_str().unwrap(), "passphrase": "correct horse"})))).await.unwrap();
    assert!(s.exec("true").await.unwrap().success());
    let e = Session::connect(&cx, &target(p.with(json!({"private_key_file": enc.to_str().unwrap()})))).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.message.contains("encrypted") && e.message.contains("passphrase"), "{}", e.message);
    let e = Session::connect(&cx, &target(p.with(json!({"private_key_file": enc.to_str().unwrap(), "passphrase": "wrong-pass-xyz"})))).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
    assert!(!e.message.contains("wrong-pass-xyz"), "{}", e.message);
    // RSA, inline (PEM text from a secret), signed with rsa-sha2.
    let rsa_text = std::fs::read_to_string(&rsa).unwrap();
    let t = target(json!({"host": "127.0.0.1", "port": p.port(), "user": p.user, "known_hosts": p.known_hosts, "private_key": rsa_text}));
    let s = Session::connect(&cx, &t).await.unwrap_or_else(|e| panic!("{e}\n{}", p.log()));
    assert_eq!(s.exec("echo rsa").await.unwrap().stdout, "rsa\n");
}

#[tokio::test]
async fn connection_settings_come_from_the_connectors_block() {
    let p = peer!();
    let (_s, _t, mut cx) = fresh(p.path());
    cx.settings = json!({"user": p.user, "private_key_file": p.key.to_str().unwrap(), "known_hosts": p.known_hosts, "port": p.port()});
    let out = run(json!({"host": "127.0.0.1", "command": "echo via-settings"}), &cx).await.unwrap();
    assert_eq!(out.stdout, "via-settings\n");
    cx.settings = json!({"usr": "x"});
    let e = run(json!({"host": "127.0.0.1", "command": "true"}), &cx).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
}

#[tokio::test]
async fn cancellation_returns_promptly_and_signals_the_remote_process_group() {
    let p = peer!();
    let (sink, token, cx) = fresh(p.path());
    let pids = p.path().join("pids");
    let cmd = format!("sleep 60 & echo $$ $! > {}; echo ready; wait", pids.display());
    // The peer (and its sshd) lives on in the task, after the cancellation too.
    let task = tokio::spawn(async move {
        let r = run(p.with(json!({ "command": cmd })), &cx).await;
        (r, p)
    });
    let s = sink.clone();
    assert!(eventually(Duration::from_secs(10), || s.lines(LogStream::Stdout).contains(&"ready".to_string())).await);
    let text = std::fs::read_to_string(&pids).unwrap();
    let ids: Vec<u32> = text.split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert!(ids.iter().all(|&pid| alive(pid)));
    let started = Instant::now();
    token.cancel();
    let (r, p) = task.await.unwrap();
    let e = r.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert!(eventually(Duration::from_secs(3), || ids.iter().all(|&pid| !alive(pid))).await, "remote processes {ids:?} survived the cancellation\n{}", p.log());
}

#[tokio::test]
async fn a_step_timeout_dropping_the_run_kills_the_remote_command() {
    let p = peer!();
    let (sink, _t, cx) = fresh(p.path());
    let pids = p.path().join("pids");
    let cmd = format!("sleep 60 & echo $$ $! > {}; echo ready; wait", pids.display());
    let input = run_input(p.with(json!({ "command": cmd })));
    let s = sink.clone();
    // The engine's per-attempt timeout drops the future.
    let r = tokio::time::timeout(Duration::from_secs(20), async {
        let running = SshRun.run(input, &cx);
        tokio::pin!(running);
        tokio::select! {
            _ = &mut running => panic!("the command ended by itself"),
            () = async { while !s.lines(LogStream::Stdout).contains(&"ready".to_string()) { tokio::time::sleep(Duration::from_millis(20)).await } } => {}
        }
        // `running` is dropped here, as a timeout drops it.
    })
    .await;
    r.unwrap();
    let ids: Vec<u32> = std::fs::read_to_string(&pids).unwrap().split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert!(eventually(Duration::from_secs(4), || ids.iter().all(|&pid| !alive(pid))).await, "remote processes {ids:?} survived the dropped step");
}

#[tokio::test]
async fn wait_succeeds_once_a_late_sshd_starts() {
    let p = peer!();
    let (sink, _t, cx) = fresh(p.path());
    let port = free_port();
    let dir = p.path().to_path_buf();
    let host_key = p.host_key.clone();
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1200));
        Sshd::start(&dir, port, &host_key)
    });
    let input: SshWaitInput = serde_json::from_value(p.with(json!({"port": port, "within": "20s", "interval": "200ms"}))).unwrap();
    SshWait.validate(&input).unwrap();
    let started = Instant::now();
    let out = SshWait.run(input, &cx).await;
    let late = starter.join().unwrap().unwrap();
    let out = out.unwrap_or_else(|e| panic!("{e}\n{}", late.log()));
    assert!(out.attempts >= 2, "{out:?}");
    assert!(out.waited_s >= 1.0 && started.elapsed() < Duration::from_secs(15), "{out:?}");
    assert_eq!(out.host_key, openssh_fingerprint(&p.host_key));
    assert_eq!(out.host_key_trust, "pinned");
    assert!(sink.lines(LogStream::Stdout).iter().any(|l| l.contains("not ready")), "{:?}", sink.logs.lock().unwrap());
    assert!(sink.progress.lock().unwrap().iter().any(|(s, p)| s == "waiting" && p.is_some()));
}

#[tokio::test]
async fn wait_on_a_closed_port_times_out_within_its_limit() {
    let p = peer!();
    let (_s, _t, cx) = fresh(p.path());
    let input: SshWaitInput = serde_json::from_value(p.with(json!({"port": free_port(), "within": "1500ms", "interval": "200ms"}))).unwrap();
    let started = Instant::now();
    let e = SshWait.run(input, &cx).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(e.message.contains("refused"), "{}", e.message);
    assert!(took >= Duration::from_millis(1400) && took < Duration::from_secs(4), "took {took:?}");
}

#[tokio::test]
async fn wait_stops_at_once_on_a_host_key_mismatch_and_when_cancelled() {
    let p = peer!();
    let (_s, token, cx) = fresh(p.path());
    let other = keygen(p.path(), "other_host", "ed25519", "");
    std::fs::write(&p.known_hosts, format!("[127.0.0.1]:{} {}", p.port(), std::fs::read_to_string(pub_path(&other)).unwrap())).unwrap();
    let input: SshWaitInput = serde_json::from_value(p.with(json!({"within": "30s"}))).unwrap();
    let started = Instant::now();
    let e = SshWait.run(input, &cx).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let input: SshWaitInput = serde_json::from_value(p.with(json!({"port": free_port(), "within": "60s", "interval": "200ms"}))).unwrap();
    let t = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        t.cancel();
    });
    let started = Instant::now();
    let e = SshWait.run(input, &cx).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Cancelled, "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn open_unix_socket_round_trips_through_sshd() {
    let p = peer!();
    let (_s, _t, cx) = fresh(p.path());
    let sock = p.path().join("echo.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let s = Session::connect(&cx, &target(p.target())).await.unwrap();
    let mut stream = s.open_unix_socket(sock.to_str().unwrap()).await.unwrap_or_else(|e| panic!("{e}\n{}", p.log()));
    // The stream outlives the session it came from.
    drop(s);
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let send = payload.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&send).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut back)).await.unwrap().unwrap();
    writer.await.unwrap();
    assert!(back == payload, "echoed {} bytes, sent {}", back.len(), payload.len());

    // A socket that does not exist: a classified error naming it.
    let s = Session::connect(&cx, &target(p.target())).await.unwrap();
    let e = s.open_unix_socket("/nonexistent/docker.sock").await.unwrap_err();
    assert!(e.message.contains("/nonexistent/docker.sock"), "{}", e.message);
    assert_eq!(e.kind, ErrorKind::Transient);
    stream = s.open_unix_socket(sock.to_str().unwrap()).await.unwrap();
    stream.write_all(b"again").await.unwrap();
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"again");
}

#[tokio::test]
async fn the_library_exec_collects_without_logging_and_check_classifies() {
    let p = peer!();
    let (sink, _t, cx) = fresh(p.path());
    let s = Session::connect(&cx, &target(p.target())).await.unwrap();
    let out = s.exec("echo out; echo err >&2; exit 2").await.unwrap();
    assert_eq!((out.exit_code, out.stdout.as_str(), out.stderr.as_str()), (Some(2), "out\n", "err\n"));
    assert!(sink.lines(LogStream::Stdout).is_empty(), "exec must not log");
    let e = s.check(out, "nvidia-smi").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.message.contains("nvidia-smi exited with code 2") && e.message.contains("err"), "{}", e.message);
    // Several commands at once on one connection.
    let (a, b) = tokio::join!(s.exec("sleep 0.3; echo a"), s.exec_logged("echo b"));
    assert_eq!((a.unwrap().stdout, b.unwrap().stdout), ("a\n".to_string(), "b\n".to_string()));
    assert_eq!(sink.lines(LogStream::Stdout), ["b"]);
    let mut input: &[u8] = b"line1\nline2\n";
    let out = s.exec_with_stdin("wc -l", &mut input, false).await.unwrap();
    assert_eq!(out.stdout.trim(), "2");
    let up = s.upload(UploadSource::Bytes(b"hi".to_vec()), p.path().join("lib.txt").to_str().unwrap(), &UploadOptions { mode: Some(0o640), ..UploadOptions::default() }).await.unwrap();
    assert_eq!((up.size, up.mode.as_str()), (2, "0640"));
    assert_eq!(std::fs::read_to_string(p.path().join("lib.txt")).unwrap(), "hi");
}

#[tokio::test]
async fn connecting_to_a_closed_port_is_transient() {
    let p = peer!();
    let (_s, _t, cx) = fresh(p.path());
    let e = Session::connect(&cx, &target(p.with(json!({"port": free_port()})))).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains("refused"), "{}", e.message);
}
