//! Fidelity of the Scaleway emulator, judged by third parties: the official
//! Scaleway Python SDK drives every endpoint through its typed API
//! (`tests/sdk/sdk_fidelity.py`), and the SDK's recorded real API exchanges
//! (its VCR cassettes) are replayed against the emulator
//! (`tests/sdk/replay_cassettes.py`).
//!
//! The SDK comes from `scripts/peers/scaleway-sdk.sh` (a venv under
//! `target/peers/scw-venv`, the sdist with the cassettes under
//! `target/peers/scw-sdist`). Without it: `skipped: ...`, or a failure when
//! `ENGINE_REQUIRE_PEERS=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use engine_emulator::scaleway::{self, Config};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

fn require_peers() -> bool {
    std::env::var("ENGINE_REQUIRE_PEERS").as_deref() == Ok("1")
}

fn skip(test: &str, why: &str) {
    assert!(
        !require_peers(),
        "{test}: {why}: run scripts/peers/scaleway-sdk.sh"
    );
    println!("skipped: {test}: {why} (run scripts/peers/scaleway-sdk.sh)");
}

/// The venv's python, if it can import the SDK.
fn sdk_python() -> Option<PathBuf> {
    let python = std::env::var_os("SCW_SDK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/peers/scw-venv/bin/python"));
    let ok = Command::new(&python)
        .args(["-c", "import scaleway, scaleway_core, yaml, requests"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

fn cassettes() -> Option<PathBuf> {
    let sdist = workspace_root().join("target/peers/scw-sdist");
    std::fs::read_dir(&sdist)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("scaleway/instance/v1/tests/cassettes"))
        .find(|p| p.is_dir())
}

async fn run_python(
    python: &Path,
    script: &str,
    args: &[&Path],
    config: &Config,
    base_url: &str,
) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let mut cmd = Command::new(python);
    cmd.arg(&script)
        .args(args)
        .env("SCW_API_URL", base_url)
        .env("SCW_SECRET_KEY", &config.secret_key)
        .env("SCW_DEFAULT_PROJECT_ID", &config.project_id)
        .env_remove("SCW_ACCESS_KEY")
        .env_remove("SCW_PROFILE")
        .env("SCW_CONFIG_PATH", "/nonexistent");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_accepts_every_endpoint() {
    let Some(python) = sdk_python() else {
        return skip(
            "official_python_sdk_accepts_every_endpoint",
            "no python with the scaleway SDK",
        );
    };
    let config = Config {
        time_scale: 0.005,
        ..Config::default()
    };
    let server = scaleway::start("127.0.0.1:0".parse().unwrap(), config.clone())
        .await
        .expect("start emulator");
    let (ok, output) = run_python(&python, "sdk_fidelity.py", &[], &config, &server.base_url).await;
    println!("{output}");
    assert!(ok, "the official SDK found a difference:\n{output}");
    assert!(output.contains("all sdk checks passed"));
    let state = server.snapshot();
    assert_eq!(state["servers"], serde_json::json!([]));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_real_exchanges_replay() {
    let Some(python) = sdk_python() else {
        return skip(
            "recorded_real_exchanges_replay",
            "no python with the scaleway SDK",
        );
    };
    let Some(dir) = cassettes() else {
        return skip(
            "recorded_real_exchanges_replay",
            "no SDK cassettes under target/peers/scw-sdist",
        );
    };
    let config = Config {
        time_scale: 0.005,
        ..Config::default()
    };
    let server = scaleway::start("127.0.0.1:0".parse().unwrap(), config.clone())
        .await
        .expect("start emulator");
    let (ok, output) = run_python(
        &python,
        "replay_cassettes.py",
        &[&dir],
        &config,
        &server.base_url,
    )
    .await;
    println!("{output}");
    assert!(ok, "recorded exchanges differ:\n{output}");
    assert!(output.contains(" 0 failures"), "{output}");
    server.shutdown().await;
}
