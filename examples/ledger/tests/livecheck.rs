//! The ledger's own `livecheck` binary, made by the one call `live::main(cases())`: a
//! `--for` run against the embedded broker judges the transfers it sees and exits 0, and
//! its `--help` works.

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use livecheck_core::{LiveCheck, Target, TestContext};
use livecheck_harness::{EnvironmentConfig, EnvironmentKind};

const LEDGER: &str = env!("CARGO_BIN_EXE_ledger");
const LEDGER_LIVECHECK: &str = env!("CARGO_BIN_EXE_ledger-livecheck");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_for_run_on_the_embedded_broker_judges_the_transfers_and_exits_cleanly() {
    let prefix = format!("ledger-live-{}-", uuid::Uuid::new_v4().simple());
    let config = ledger::checks::environment(
        EnvironmentConfig::new(EnvironmentKind::Embedded).topic_prefix(prefix.clone()),
        LEDGER,
        false,
    );
    let env = config.start().await.expect("environment");

    let mut child = Command::new(LEDGER_LIVECHECK)
        .args(["--brokers", &env.kafka.brokers, "--topic-prefix", &prefix])
        .args([
            "--group-id",
            &format!("{prefix}livecheck"),
            "--http-port",
            "0",
        ])
        .args(["--for", "20s", "--print-verdicts"])
        .env_remove("LIVECHECK_PROFILE")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ledger-livecheck");
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut stderr = child.stderr.take().expect("stderr");
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("ledger-livecheck printed no status page line");
        if line.starts_with("livecheck status page:") {
            break;
        }
    }
    // Three transfers with a test context, as synthetic traffic would send them.
    let client = LiveCheck::new(env.kafka.clone(), env.topics.clone()).expect("client");
    let target = Target::new(env.app_url.clone());
    let case = ledger::checks::transfer();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let stimulus = case.prepare_stimulus().expect("stimulus");
        let mut context = TestContext::new(case.name(), case.settings().test_expires)
            .arguments(stimulus.arguments().clone());
        context.route = stimulus.route().map(str::to_owned);
        ids.push(context.id.clone());
        client
            .scope(context, stimulus.send(target.clone()))
            .await
            .expect("transfer sent");
    }

    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    let stderr = stderr.join().expect("stderr reader");
    assert_eq!(status.code(), Some(0), "{stderr}");
    for id in &ids {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(id.as_str()) && l.contains("PASS")),
            "no PASS for {id}:\n{stderr}"
        );
    }
}

#[test]
fn help_of_the_ledger_livecheck_binary_lists_its_flags() {
    let output = Command::new(LEDGER_LIVECHECK)
        .arg("--help")
        .output()
        .expect("run ledger-livecheck --help");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    for flag in ["--brokers", "--profile", "--for", "--http-port"] {
        assert!(help.contains(flag), "{flag} missing:\n{help}");
    }
}
