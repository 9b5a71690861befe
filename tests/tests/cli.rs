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
