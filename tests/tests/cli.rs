//! `livecheck --help` never prints the values of secret-bearing environment variables.

use std::process::Command;

#[test]
fn help_does_not_print_secret_environment_values() {
    let output = Command::new(env!("CARGO_BIN_EXE_livecheck"))
        .arg("--help")
        .env(
            "LIVECHECK_KAFKA",
            "sasl.username=alice,sasl.password=SENTINEL-SASL-PASSWORD",
        )
        .env(
            "LIVECHECK_ALERT_WEBHOOK",
            "https://hooks.slack.com/services/T0/B0/SENTINEL-WEBHOOK-TOKEN",
        )
        .env(
            "LIVECHECK_APP_URL",
            "http://user:SENTINEL-APP-PASSWORD@app/",
        )
        .env("LIVECHECK_ADMIN_TOKEN", "SENTINEL-ADMIN-TOKEN-0123456789")
        .env("LIVECHECK_BROKERS", "shown-brokers:9092")
        .output()
        .expect("run livecheck --help");
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8_lossy(&output.stdout);
    for sentinel in [
        "SENTINEL-SASL-PASSWORD",
        "SENTINEL-WEBHOOK-TOKEN",
        "SENTINEL-APP-PASSWORD",
        "SENTINEL-ADMIN-TOKEN",
        "alice",
    ] {
        assert!(
            !help.contains(sentinel),
            "--help prints {sentinel}:\n{help}"
        );
    }
    assert!(help.contains("LIVECHECK_KAFKA"), "{help}");
    assert!(help.contains("LIVECHECK_ADMIN_TOKEN"), "{help}");
    // Harmless values are still shown (the test would pass vacuously otherwise).
    assert!(help.contains("shown-brokers:9092"), "{help}");
}

/// Runs the `livecheck` demo (embedded broker, example app) with `args` for its `--for`,
/// stdout and stderr piped, `RUST_LOG` and `NO_COLOR` unset unless `env` sets them.
fn run_livecheck(args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_livecheck"));
    command
        .args(args)
        .args(["--http-port", "0"])
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .env_remove("LIVECHECK_PRINT_VERDICTS")
        .env_remove("LIVECHECK_LOG_FORMAT")
        .env_remove("LIVECHECK_PROFILE")
        .env_remove("LIVECHECK_BROKERS");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("run livecheck");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "livecheck {args:?} failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    (stdout, stderr)
}

#[test]
fn the_demo_logs_summaries_not_verdicts_and_no_colours_in_a_pipe() {
    let (stdout, stderr) = run_livecheck(&["--for", "8s", "--summary-every", "2"], &[]);
    assert!(
        stdout.contains("livecheck status page: http://"),
        "{stdout}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escape codes in a pipe:\n{stderr}"
    );
    assert!(
        !stderr.contains("livecheck::verdict"),
        "verdict lines without --print-verdicts:\n{stderr}"
    );
    let summaries: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("livecheck::summary") && l.contains("orders.place_order"))
        .collect();
    // One every 2 s for 8 s, and the final one at shutdown.
    assert!(summaries.len() >= 3, "{stderr}");
    let last = summaries.last().unwrap();
    assert!(
        last.contains("since start") && !last.contains(": 0 since start"),
        "the final summary counts the demo's runs: {last}"
    );
}

#[test]
fn json_logs_are_one_object_per_line_with_verdicts_and_summaries_as_fields() {
    let (_, stderr) = run_livecheck(
        &[
            "--for",
            "8s",
            "--summary-every",
            "2",
            "--print-verdicts",
            "--log-format",
            "json",
        ],
        &[],
    );
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{stderr}"))
        })
        .collect();
    for line in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line.get(key).is_some(), "no `{key}` in {line}");
        }
    }
    let of = |target: &str| -> Vec<&serde_json::Value> {
        lines.iter().filter(|l| l["target"] == target).collect()
    };
    let verdicts = of("livecheck::verdict");
    assert!(!verdicts.is_empty(), "no verdict lines:\n{stderr}");
    for v in &verdicts {
        assert!(
            ["orders.place_order", "orders.sell_limit"]
                .contains(&v["case"].as_str().unwrap_or_default()),
            "{v}"
        );
        assert!(
            v["test_id"].as_str().is_some_and(|id| !id.is_empty()),
            "{v}"
        );
        assert!(v["ms"].as_f64().is_some(), "{v}");
        assert!(
            ["PASS", "FAIL", "ERROR", "TIMEOUT", "SKIP"].contains(&v["verdict"].as_str().unwrap()),
            "{v}"
        );
    }
    assert!(verdicts.iter().any(|v| v["verdict"] == "PASS"), "{stderr}");
    let summaries = of("livecheck::summary");
    assert!(summaries.len() >= 3, "{stderr}");
    let last = summaries.last().unwrap();
    let runs = last["runs"].as_u64().expect("runs");
    assert!(runs > 0, "{last}");
    assert_eq!(
        last["pass"].as_u64().unwrap()
            + last["fail"].as_u64().unwrap()
            + last["error"].as_u64().unwrap()
            + last["timeout"].as_u64().unwrap()
            + last["skip"].as_u64().unwrap(),
        runs,
        "{last}"
    );
}

#[test]
fn kafka_client_lines_are_logged_once_at_sensible_levels() {
    // A port nothing listens on: every Kafka client of the service fails to connect.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let brokers = format!("127.0.0.1:{closed}");
    let (_, stderr) = run_livecheck(
        &["--brokers", &brokers, "--for", "5s", "--log-format", "json"],
        &[("RUST_LOG", "info,librdkafka=debug")],
    );
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let kafka: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "librdkafka")
        .collect();
    // Not vacuous: the refused connections were logged.
    assert!(
        kafka.iter().any(|l| l["message"]
            .as_str()
            .unwrap()
            .contains("Connection refused")),
        "{stderr}"
    );
    for line in &kafka {
        let message = line["message"].as_str().unwrap();
        assert!(
            !message.starts_with("librdkafka:"),
            "logged twice over (rdkafka's default context): {line}"
        );
        assert_ne!(
            line["level"], "ERROR",
            "a refused connection is routine for a client, not an ERROR: {line}"
        );
    }
    // What an operator needs is said once, by LiveCheck, at WARN or above.
    assert!(
        lines.iter().any(|l| l["target"] != "librdkafka"
            && (l["level"] == "WARN" || l["level"] == "ERROR")
            && l["message"].as_str().unwrap().contains(&brokers)),
        "{stderr}"
    );
}

/// A `livecheck` binary made by the one call, `live::main(cases)`, with the given flags;
/// no settings come from this process's environment.
fn user_binary(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_livecheck-chaos"))
        .args(args)
        .env_remove("LIVECHECK_BROKERS")
        .env_remove("LIVECHECK_PROFILE")
        .env_remove("RUST_LOG")
        .output()
        .expect("run livecheck-chaos")
}

#[test]
fn a_user_binary_without_brokers_exits_with_the_configuration_code() {
    let output = user_binary(&["--http-port", "0", "--for", "1s"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(i32::from(livecheck_harness::live::LiveExitCode::CONFIG)),
        "{stderr}"
    );
    assert!(stderr.contains("error: no brokers configured"), "{stderr}");
}

#[test]
fn a_bad_setting_is_a_configuration_error_and_a_busy_port_a_setup_error() {
    let output = user_binary(&["--brokers", "127.0.0.1:1", "--case-probability", "x=2"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(i32::from(livecheck_harness::live::LiveExitCode::CONFIG)),
        "{stderr}"
    );

    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("address").port().to_string();
    let output = user_binary(&[
        "--brokers",
        "127.0.0.1:1",
        "--http-host",
        "127.0.0.1",
        "--http-port",
        &port,
        "--for",
        "5s",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(i32::from(livecheck_harness::live::LiveExitCode::SETUP)),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("error: cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[test]
fn help_of_a_user_binary_lists_the_flags() {
    let output = user_binary(&["--help"]);
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        help.contains("--brokers") && help.contains("--for"),
        "{help}"
    );
}
