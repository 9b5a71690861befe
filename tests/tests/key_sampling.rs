//! Two services in separate processes agree, for the same business key, on whether its
//! requests become tests: `sample-keys` run twice as child processes decides as the
//! in-process `Trigger::samples_key` does.

use std::io::Write as _;
use std::process::{Command, Stdio};

use livecheck_core::Trigger;

const CASE: &str = "orders.place_order";

/// `(sampled, key)` per key, as a `sample-keys` process decides them (keys on stdin).
fn sample_keys_process(case: &str, probability: f64, keys: &[String]) -> Vec<(bool, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sample-keys"))
        .args(["--case", case, "--probability", &probability.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sample-keys");
    let mut stdin = child.stdin.take().unwrap();
    let input = keys.join("\n");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            let decision = parts.next().unwrap();
            let _draw = parts.next().unwrap();
            let key = parts.next().unwrap_or_default().to_owned();
            assert!(["sampled", "skipped"].contains(&decision), "{line}");
            (decision == "sampled", key)
        })
        .collect()
}

#[test]
fn two_processes_and_this_one_agree_for_every_key() {
    let keys: Vec<String> = (0..2_000)
        .map(|i| format!("account-{i}"))
        .chain(["user@example.com".to_owned(), "tenant ü".to_owned()])
        .collect();
    for probability in [0.01, 0.25, 0.5] {
        let first = sample_keys_process(CASE, probability, &keys);
        let second = sample_keys_process(CASE, probability, &keys);
        assert_eq!(first, second, "p = {probability}");
        let trigger = Trigger::new(CASE).probability(probability);
        let here: Vec<(bool, String)> = keys
            .iter()
            .map(|k| (trigger.samples_key(k), k.clone()))
            .collect();
        assert_eq!(first, here, "p = {probability}");
        let sampled = here.iter().filter(|(s, _)| *s).count();
        println!(
            "p = {probability}: {sampled} of {} keys sampled, the same in both processes",
            keys.len()
        );
        assert!(
            sampled > 0 && sampled < keys.len(),
            "p = {probability}: {sampled}"
        );
    }
}

#[test]
fn keys_given_as_arguments_print_their_draw() {
    let output = Command::new(env!("CARGO_BIN_EXE_sample-keys"))
        .args([
            "--case",
            CASE,
            "--probability",
            "0.5",
            "account-42",
            "user-1",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    // The pinned draws of livecheck-core's trigger tests (Java's murmur2 of case\0key).
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!(
            "sampled {} account-42\nsampled {} user-1\n",
            883_473_402.0 / 2_147_483_648.0,
            248_461_053.0 / 2_147_483_648.0
        )
    );
}

#[test]
fn a_probability_outside_0_to_1_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_sample-keys"))
        .args(["--case", CASE, "--probability", "1.5", "k"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a number between 0 and 1"), "{stderr}");
}
