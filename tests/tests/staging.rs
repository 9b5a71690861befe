//! Staging reuse: the `livecheck` binary, with `--profile staging` from a settings file,
//! attached to a broker and app started separately (the environment `LIVECHECK_ENV` picks:
//! tansu and the app in containers under CI, in-process elsewhere), gives the same
//! verdicts as the check file — for the sell limit too, its table in the changelog the
//! environment created — and a SIGTERM ends it cleanly with exit code 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use livecheck_core::{LiveCheck, TestContext};
use livecheck_harness::{EnvironmentConfig, Session};
use livecheck_tests::{cases, environment, orders};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_livecheck_binary_with_a_staging_profile_gives_the_same_verdicts() {
    let config: EnvironmentConfig = environment().unwrap();
    // The CI harness's verdicts on this environment, for comparison.
    let session = Session::start(&config, cases()).await.unwrap();
    let case = orders::place_order();
    let harness_verdict = session.run_once(&case).await.verdict;
    let env = session.environment();
    let prefix = env
        .topics
        .tests
        .trim_end_matches("livecheck-tests")
        .to_owned();

    let dir = std::env::temp_dir().join(format!(
        "livecheck-staging-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let settings = dir.join("livecheck.toml");
    std::fs::write(
        &settings,
        format!(
            "[profiles.staging]\nbrokers = \"{}\"\ntopic_prefix = \"{prefix}\"\ngroup_id = \"{prefix}staging\"\nhttp_port = 0\napp_url = \"{}\"\nhold_down_secs = 1\n",
            env.kafka.brokers, env.app_url
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_livecheck"))
        .args(["--profile", "staging", "--config"])
        .arg(&settings)
        .args(["--print-verdicts", "--for", "120s"])
        .env("RUST_LOG", "warn,livecheck_harness=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // stdout says where the status page is; the log (stderr) has the verdict lines.
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("livecheck> {line}");
            let _ = out.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            println!("livecheck (log)> {line}");
            let _ = tx.send(line);
        }
    });
    // Wait for the status page line: the runner has its partitions.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("livecheck did not start");
        if line.starts_with("livecheck status page:") {
            break;
        }
    }
    // Staging traffic: requests carrying a test context, as the synthetic traffic makes them,
    // each after the verdict of the one before (a user's sells are judged in order only when
    // they are not judged at once). The sell limit's three sells are one user's: accepted,
    // accepted, refused.
    let client = LiveCheck::new(env.kafka.clone(), env.topics.clone()).unwrap();
    let target = livecheck_core::Target::new(env.app_url.clone());
    let sell_limit = orders::sell_limit();
    let mut verdicts = Vec::new();
    for case in [&case, &sell_limit] {
        for _ in 0..3 {
            let stimulus = case.prepare_stimulus().unwrap();
            let mut context = TestContext::new(case.name(), case.settings().test_expires)
                .arguments(stimulus.arguments().clone());
            context.route = stimulus.route().map(str::to_owned);
            let id = context.id.clone();
            client
                .scope(context, stimulus.send(target.clone()))
                .await
                .unwrap();
            verdicts.push((case.name().to_owned(), verdict_line(&rx, &id)));
        }
    }
    let expected: Vec<_> = [(&case, harness_verdict.as_str()), (&sell_limit, "PASS")]
        .iter()
        .flat_map(|(case, verdict)| {
            std::iter::repeat_n((case.name().to_owned(), (*verdict).to_owned()), 3)
        })
        .collect();
    assert_eq!(
        verdicts, expected,
        "the harness's verdict: {harness_verdict}"
    );
    assert_eq!(harness_verdict.as_str(), "PASS");

    // SIGTERM: a clean stop, exit code 0.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(45);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "livecheck did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(exit.code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
    session.close().await;
}

/// The verdict (`PASS`, ...) of the verdict line of test `id` among the binary's lines,
/// within 60 s.
fn verdict_line(lines: &mpsc::Receiver<String>, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no verdict for test {id} within 60 s"));
        // `<time>  INFO livecheck::verdict: PASS    orders.place_order <id> 51.2 ms`
        let Some((_, verdict_line)) = line.split_once("livecheck::verdict: ") else {
            continue;
        };
        if verdict_line.contains(id) {
            return verdict_line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
    }
}
