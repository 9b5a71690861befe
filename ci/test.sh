#!/usr/bin/env bash
# The project's test command: formatting, lints, and every test of the
# workspace, with the container environment (local images, Docker engine).
#
# Usage:
#   ci/test.sh [--env-only] [CARGO TEST ARGS...]
#
#   --env-only   prepare the environment only (tools, Docker engine, images,
#                browser, promtool) and stop before fmt/clippy/tests.
#   Other arguments are passed to `cargo test --workspace --locked`, e.g.
#   `ci/test.sh -- --nocapture`.
#
# Environment:
#   LIVECHECK_RUN_ID   label value of this run's containers (default: ci-<time>-<pid>);
#                      containers labelled livecheck.run-id=<it> are removed at exit.
#   LIVECHECK_CACHE    see ci/build-images.sh
set -euo pipefail

CI_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$CI_DIR")
START=$SECONDS

# shellcheck source=ci/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

ENV_ONLY=false
if [[ ${1-} == --env-only ]]; then
    ENV_ONLY=true
    shift
fi

export LIVECHECK_ENV=container
export LIVECHECK_RUN_ID=${LIVECHECK_RUN_ID:-ci-$(date +%s)-$$}

declare -A STEP_SECONDS=()
STEP_ORDER=()
timed() { # timed LABEL CMD...: run CMD, record its duration, return its exit code
    local label=$1 start=$SECONDS rc=0
    shift
    log "== $label"
    "$@" || rc=$?
    STEP_SECONDS[$label]=$((SECONDS - start))
    STEP_ORDER+=("$label")
    return "$rc"
}

summary() {
    local label
    for label in "${STEP_ORDER[@]+"${STEP_ORDER[@]}"}"; do
        log "  $label: ${STEP_SECONDS[$label]}s"
    done
    log "Total time: $((SECONDS - START))s"
}

cleanup() {
    local rc=$?
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        local ids
        ids=$(docker ps -aq --filter "label=livecheck.run-id=$LIVECHECK_RUN_ID" 2>/dev/null || true)
        if [[ -n $ids ]]; then
            log "Removing containers left by run $LIVECHECK_RUN_ID: $(echo "$ids" | tr '\n' ' ')"
            echo "$ids" | xargs -r docker rm -f >/dev/null 2>&1 || true
        fi
    fi
    summary
    if [[ $rc -eq 0 ]]; then
        log "OK"
    else
        log "FAILED (exit code $rc)"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


ensure_rust_tools() {
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust with rustup."
    if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
        command -v rustup >/dev/null 2>&1 \
            || die "rustfmt/clippy missing and rustup not found: install the rustfmt and clippy components."
        log "Installing the rustfmt and clippy components (rustup)..."
        rustup component add rustfmt clippy || die "rustup component add rustfmt clippy failed (see above)."
    fi
    log "$(cargo --version); $(cargo fmt --version); $(cargo clippy --version)"
}

ensure_test_tools() {
    if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver && -x /usr/bin/promtool ]]; then
        log "chromium, chromedriver and promtool present."
        return 0
    fi
    log "Installing Debian packages chromium and chromium-driver (browser tests) and prometheus (promtool lints /metrics)..."
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update \
        || die "apt-get update failed: check the Debian package sources (/etc/apt/sources.list*) and rerun."
    as_root apt-get install -y --no-install-recommends chromium chromium-driver prometheus \
        || die "apt-get install chromium chromium-driver prometheus failed (see above): fix it and rerun."
}

cd "$ROOT"
log "Run id: $LIVECHECK_RUN_ID (LIVECHECK_ENV=$LIVECHECK_ENV)"

timed "rust tools" ensure_rust_tools
if ! $ENV_ONLY; then
    # Cheapest check first: a formatting slip fails in seconds, not after the image builds.
    timed "cargo fmt --check" cargo fmt --all --check \
        || die "Formatting differs: run 'cargo fmt --all' and rerun."
fi
timed "docker engine" "$CI_DIR/docker-up.sh" || die "Docker engine not available (see above)."
timed "images" "$CI_DIR/build-images.sh" || die "Image build failed (see above)."
timed "test tools" ensure_test_tools || die "Browser or promtool setup failed (see above)."

if $ENV_ONLY; then
    log "--env-only: environment ready; skipping clippy and tests."
    exit 0
fi

timed "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings \
    || die "clippy found problems (above): fix them and rerun."
timed "cargo test" cargo test --workspace --locked "$@" \
    || die "Tests failed (above). Rerun one test crate with 'cargo test -p <crate>' after 'ci/docker-up.sh && ci/build-images.sh', with LIVECHECK_ENV=container."
# A production `livecheck` binary links no container machinery: the ledger example's crate
# depends on the harness without its `containers` feature (only its tests enable it).
no_containers_in_live_binary() {
    if cargo tree --locked -p ledger -e normal,build | grep -E "testcontainers|bollard"; then
        log "the ledger's normal dependencies pull in the container machinery (above)"
        return 1
    fi
}
timed "live binary without containers" no_containers_in_live_binary \
    || die "livecheck-harness's containers feature leaks into a live-only build: check the features in Cargo.toml."
# The core's optional OpenTelemetry span export (feature `otel`): linted and tested on its own.
timed "cargo clippy (otel)" cargo clippy -p livecheck-core --all-targets --features otel --locked -- -D warnings \
    || die "clippy found problems with --features otel (above): fix them and rerun."
timed "cargo test (otel)" cargo test -p livecheck-core --features otel --locked --test otel \
    || die "The otel feature's test failed (above): rerun it with 'cargo test -p livecheck-core --features otel --test otel'."
# The same check file under nextest: each trial is its own process; they share this run's
# containers through LIVECHECK_RUN_ID (see README, "How CI runs the checks").
if command -v cargo-nextest >/dev/null 2>&1; then
    timed "cargo nextest (check files)" cargo nextest run --locked -p livecheck-tests --test orders \
        || die "The check file failed under nextest (above)."
else
    log "cargo-nextest not installed: skipping the nextest pass of the check files."
fi
