#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info`.
#
# - Engine already answers: nothing to do.
# - `docker` / `dockerd` missing: install Debian's docker.io package.
# - Otherwise start `dockerd` in the background (log: /tmp/livecheck-dockerd.log)
#   and wait up to 60 s for it to answer.
#
# Idempotent: safe to run any number of times.
set -euo pipefail

DOCKERD_LOG=${LIVECHECK_DOCKERD_LOG:-/tmp/livecheck-dockerd.log}
WAIT_SECONDS=${LIVECHECK_DOCKERD_WAIT:-60}

# shellcheck source=ci/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

engine_answers() { docker info >/dev/null 2>&1; }


if command -v docker >/dev/null 2>&1 && engine_answers; then
    log "Docker engine already running (server $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')); nothing to do."
    exit 0
fi

if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then
    log "docker/dockerd not found: installing the Debian package docker.io (apt-get)..."
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update \
        || die "apt-get update failed: check the Debian package sources (/etc/apt/sources.list*) and retry."
    as_root apt-get install -y docker.io \
        || die "apt-get install docker.io failed: see the apt output above, fix it, then rerun $0."
    command -v dockerd >/dev/null 2>&1 || die "docker.io installed but dockerd is still not on PATH ($PATH)."
fi

if pgrep -x dockerd >/dev/null 2>&1; then
    # A daemon is already starting (e.g. a concurrent run of this script): just wait for it.
    log "dockerd is already running but not answering yet; waiting for it..."
else
    log "Starting dockerd in the background (log: $DOCKERD_LOG)..."
    # setsid + nohup: the daemon outlives this script and its terminal.
    as_root setsid nohup dockerd >"$DOCKERD_LOG" 2>&1 </dev/null &
fi

for ((i = 1; i <= WAIT_SECONDS; i++)); do
    if engine_answers; then
        log "Docker engine is up after ${i}s (server $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))."
        exit 0
    fi
    sleep 1
done

log "Last lines of $DOCKERD_LOG:"
tail -n 40 "$DOCKERD_LOG" >&2 2>/dev/null || log "(no log at $DOCKERD_LOG)"
if docker info 2>&1 | grep -qi 'permission denied'; then
    die "dockerd runs but this user may not use its socket: run as root or add the user to the 'docker' group."
fi
die "Docker engine did not answer 'docker info' within ${WAIT_SECONDS}s. Read the log above / $DOCKERD_LOG, fix the cause (stop a stale dockerd, free /var/run/docker.sock), then rerun $0."
