//! The container environment without a Docker engine fails with a message that says how to
//! get one or how to choose another environment: no silent fallback.

use livecheck_harness::{EnvironmentConfig, EnvironmentError, EnvironmentKind, ImageRef, Service};

#[tokio::test]
async fn a_missing_docker_engine_is_a_clear_error() {
    // This test binary is its own process: emptying PATH here hides `docker` from it only.
    std::env::set_var("PATH", "/nonexistent");
    let config = EnvironmentConfig::new(EnvironmentKind::Container)
        .service(Service::new("app").image(ImageRef::new("example/app", "1")));
    let err = config.start().await.unwrap_err();
    assert!(matches!(err, EnvironmentError::NoDocker(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.starts_with("the container environment needs a Docker engine and none answered (cannot run `docker`"), "{message}");
    assert!(message.contains("LIVECHECK_ENV=embedded"), "{message}");
    // A library error names no script of this repository.
    assert!(!message.contains("ci/"), "{message}");
}
