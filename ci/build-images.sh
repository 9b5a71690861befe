#!/usr/bin/env bash
# Build the two local images the container tests use, without any registry:
#
#   livecheck/tansu:0.6.0          the tansu broker (Rust crate `tansu` 0.6.0 built by cargo install, cached)
#   livecheck/example-app:local    the workspace's release `example-app` binary
#
# Each image is a bare root file system: the binary, the shared libraries `ldd`
# lists (with the dynamic loader at its absolute path), /tmp and a minimal /etc,
# fed to `docker import`. An image is rebuilt only when its
# `livecheck.binary-sha256` label differs from the binary's sha256.
#
# Then smoke-check both images (`--help`) and check that a tansu container
# actually serves Kafka requests.
#
# Environment:
#   LIVECHECK_CACHE    cache folder (default: $HOME/.cache/livecheck)
#   CARGO_TARGET_DIR   honoured when locating target/release/example-app
set -euo pipefail

CI_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$CI_DIR")
CACHE=${LIVECHECK_CACHE:-$HOME/.cache/livecheck}

TANSU_VERSION=0.6.0
TANSU_IMAGE=livecheck/tansu:$TANSU_VERSION
TANSU_BIN=$CACHE/tansu/bin/tansu
APP_IMAGE=livecheck/example-app:local
SHA_LABEL=livecheck.binary-sha256
TANSU_READY_PATTERN='ready in'
READY_TIMEOUT=${LIVECHECK_READY_TIMEOUT:-30}

# shellcheck source=ci/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

# --- cleanup of temporary folders and the smoke container -------------------
TMP_DIRS=()
SMOKE_CONTAINER=""
cleanup() {
    local d
    for d in "${TMP_DIRS[@]+"${TMP_DIRS[@]}"}"; do rm -rf -- "$d"; done
    if [[ -n $SMOKE_CONTAINER ]]; then
        docker rm -f "$SMOKE_CONTAINER" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- timing -------------------------------------------------------------------
declare -A STEP_SECONDS=()
STEP_ORDER=()
timed() { # timed LABEL CMD...: run CMD, record how long it took under LABEL
    local label=$1 start=$SECONDS
    shift
    "$@"
    STEP_SECONDS[$label]=$((SECONDS - start))
    STEP_ORDER+=("$label")
}

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
    die "Docker engine not reachable: run ci/docker-up.sh first."
fi

# import_binary_image IMAGE BINARY
#   Build IMAGE from BINARY plus the shared libraries it needs; ENTRYPOINT is
#   /usr/local/bin/<name of BINARY>. Skipped when IMAGE already carries the
#   binary's sha256 in its livecheck.binary-sha256 label.
import_binary_image() {
    local image=$1 binary=$2
    local name sha current old_id rootfs ldd_out lib
    [[ -f $binary && -x $binary ]] || die "import_binary_image: $binary is not an executable file."
    name=$(basename "$binary")
    sha=$(sha256sum "$binary" | cut -d' ' -f1)

    current=$(docker image inspect --format "{{ index .Config.Labels \"$SHA_LABEL\" }}" "$image" 2>/dev/null || true)
    if [[ $current == "$sha" ]]; then
        log "$image is up to date (binary sha256 ${sha:0:12}…): skipping the build."
        return 0
    fi
    old_id=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
    log "Building $image from $binary (sha256 ${sha:0:12}…)..."

    rootfs=$(mktemp -d "${TMPDIR:-/tmp}/livecheck-rootfs.XXXXXX")
    TMP_DIRS+=("$rootfs")
    chmod 0755 "$rootfs"
    mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp"
    chmod 1777 "$rootfs/tmp"
    cp -L "$binary" "$rootfs/usr/local/bin/$name"
    chmod 0755 "$rootfs/usr/local/bin/$name"
    # Name resolution with glibc's built-in files/dns modules (Docker mounts
    # /etc/hosts and /etc/resolv.conf into the container).
    printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"

    # Shared libraries, and the dynamic loader, at the absolute paths ldd reports.
    if ldd_out=$(ldd "$binary" 2>&1); then
        if grep -q 'not found' <<<"$ldd_out"; then
            die "$binary needs libraries that are missing on this machine:"$'\n'"$(grep 'not found' <<<"$ldd_out")"$'\n'"Install them (apt-get) and rerun."
        fi
        while IFS= read -r lib; do
            [[ -n $lib ]] || continue
            mkdir -p "$rootfs$(dirname "$lib")"
            cp -L "$lib" "$rootfs$lib" # -L: copy the file a symlink (e.g. /lib64/ld-linux…) points to
        done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3; next } $1 ~ /^\// { print $1 }' <<<"$ldd_out")
    elif grep -qE 'not a dynamic executable|statically linked' <<<"$ldd_out"; then
        log "$name is statically linked: no libraries to copy."
    else
        die "ldd $binary failed: $ldd_out"
    fi

    tar -C "$rootfs" --numeric-owner --owner=0 --group=0 -c . \
        | docker import \
            --change "ENTRYPOINT [\"/usr/local/bin/$name\"]" \
            --change "LABEL $SHA_LABEL=$sha" \
            --message "livecheck: $name (sha256 $sha)" \
            - "$image" >/dev/null \
        || die "docker import of $image failed (see above). Check free disk space (df -h /var/lib/docker) and rerun."

    # The previous image of this tag is now dangling: drop it (ignore failures,
    # e.g. when a container still uses it).
    if [[ -n $old_id && $old_id != "$(docker image inspect --format '{{.Id}}' "$image")" ]]; then
        docker rmi "$old_id" >/dev/null 2>&1 || true
    fi
    log "Built $image ($(image_size "$image"))."
}

image_size() {
    local bytes
    bytes=$(docker image inspect --format '{{.Size}}' "$1")
    awk -v b="$bytes" 'BEGIN { printf "%.1f MB", b / 1000000 }'
}

ensure_tansu_binary() {
    if [[ -x $TANSU_BIN ]]; then
        log "tansu binary found: $TANSU_BIN"
        return 0
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (rustup) so tansu can be built."
    log "tansu $TANSU_VERSION not cached at $TANSU_BIN: building it with cargo install."
    log "This is a one-time cost of about 10 minutes; later runs reuse $CACHE/tansu."
    cargo install tansu --version "$TANSU_VERSION" --features dynostore --locked --root "$CACHE/tansu" \
        || die "cargo install tansu $TANSU_VERSION failed (see above). Fix the cause (network to the crate registry, disk space) and rerun."
    [[ -x $TANSU_BIN ]] || die "cargo install finished but $TANSU_BIN is missing."
}

build_example_app_binary() {
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (rustup)."
    log "cargo build --release -p example-app (a no-op when up to date; the first build compiles librdkafka, several minutes)..."
    (cd "$ROOT" && cargo build --release --locked -p example-app --bin example-app) \
        || die "Release build of example-app failed (see the compiler output above): fix it, then rerun."
}

app_binary_path() {
    local target=${CARGO_TARGET_DIR:-target}
    [[ $target == /* ]] || target=$ROOT/$target
    printf '%s/release/example-app' "$target"
}

smoke_help() { # smoke_help IMAGE...
    local image out
    for image in "$@"; do
        if ! out=$(docker run --rm "$image" --help 2>&1); then
            printf '%s\n' "$out" | tail -n 20 >&2
            die "'docker run --rm $image --help' failed (output above): the image is broken. Remove it (docker rmi $image) and rerun."
        fi
        log "$image --help: ok ($(head -n 1 <<<"$out"))"
    done
}

free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
    else
        local p
        for _ in $(seq 50); do
            p=$((20000 + RANDOM % 40000))
            (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
        done
        die "Could not find a free TCP port."
    fi
}

# Send a Kafka ApiVersions (v0) request and expect error_code 0.
kafka_api_versions_ok() { # kafka_api_versions_ok PORT
    if command -v python3 >/dev/null 2>&1; then
        python3 - "$1" <<'PY'
import socket, struct, sys
port = int(sys.argv[1])
client = b"livecheck-ci"
body = struct.pack(">hhih", 18, 0, 42, len(client)) + client
with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
    s.sendall(struct.pack(">i", len(body)) + body)
    data = b""
    while len(data) < 4:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit("connection closed")
        data += chunk
    (size,) = struct.unpack(">i", data[:4])
    while len(data) < 4 + size:
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("connection closed early")
        data += chunk
correlation, error, count = struct.unpack(">ihi", data[4:14])
if correlation != 42 or error != 0:
    sys.exit(f"unexpected ApiVersions answer: correlation={correlation} error={error}")
print(f"ApiVersions ok, {count} APIs")
PY
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") && echo "TCP connect ok (python3 missing: no Kafka request sent)"
    fi
}

smoke_tansu_serves() {
    local port logs answer i
    # Drop leftovers of interrupted earlier runs (only stopped ones: a running one
    # may belong to a concurrent run of this script).
    docker ps -aq --filter label=livecheck.smoke=tansu --filter status=exited --filter status=created \
        | xargs -r docker rm -f >/dev/null 2>&1 || true

    port=$(free_port)
    SMOKE_CONTAINER=livecheck-smoke-$$
    log "Starting $TANSU_IMAGE as $SMOKE_CONTAINER on 127.0.0.1:$port (host network)..."
    # No --rm: keep the logs if it dies early; the EXIT trap removes it.
    docker run -d --network host --name "$SMOKE_CONTAINER" --label livecheck.smoke=tansu \
        "$TANSU_IMAGE" broker \
        --listener-url "tcp://0.0.0.0:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine memory://tansu/ >/dev/null \
        || die "Could not start the tansu smoke container (see above)."

    for ((i = 0; i < READY_TIMEOUT * 5; i++)); do
        logs=$(docker logs "$SMOKE_CONTAINER" 2>&1 || true)
        if grep -q "$TANSU_READY_PATTERN" <<<"$logs"; then
            break
        fi
        if [[ $(docker inspect --format '{{.State.Running}}' "$SMOKE_CONTAINER" 2>/dev/null) != true ]]; then
            printf '%s\n' "$logs" | tail -n 30 >&2
            die "The tansu container exited before it was ready (logs above). Check the image (docker run --rm $TANSU_IMAGE --help) and the broker arguments."
        fi
        sleep 0.2
    done
    if ! grep -q "$TANSU_READY_PATTERN" <<<"$logs"; then
        printf '%s\n' "$logs" | tail -n 30 >&2
        die "tansu printed no '$TANSU_READY_PATTERN' line within ${READY_TIMEOUT}s (logs above)."
    fi
    log "tansu ready: $(grep "$TANSU_READY_PATTERN" <<<"$logs" | head -n 1)"

    answer=$(kafka_api_versions_ok "$port" 2>&1) \
        || die "tansu is 'ready' but does not answer on 127.0.0.1:$port: $answer"
    log "tansu serves on 127.0.0.1:$port: $answer"

    docker rm -f "$SMOKE_CONTAINER" >/dev/null
    SMOKE_CONTAINER=""
}

# --- main -----------------------------------------------------------------------
timed "tansu binary" ensure_tansu_binary
timed "tansu image" import_binary_image "$TANSU_IMAGE" "$TANSU_BIN"
timed "example-app release build" build_example_app_binary
APP_BIN=$(app_binary_path)
[[ -x $APP_BIN ]] || die "Release build succeeded but $APP_BIN is missing (is CARGO_TARGET_DIR set differently?)."
timed "example-app image" import_binary_image "$APP_IMAGE" "$APP_BIN"
timed "smoke --help" smoke_help "$TANSU_IMAGE" "$APP_IMAGE"
timed "tansu serves" smoke_tansu_serves

log "Images:"
for image in "$TANSU_IMAGE" "$APP_IMAGE"; do
    log "  $image  $(image_size "$image")"
done
log "Step times:"
for label in "${STEP_ORDER[@]}"; do
    log "  $label: ${STEP_SECONDS[$label]}s"
done
log "Images ready."
