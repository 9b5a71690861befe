# Shared by the ci/ scripts: `source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"`.
# shellcheck shell=bash

log() { printf '[ci] %s\n' "$*" >&2; }
die() { printf '[ci] ERROR: %s\n' "$*" >&2; exit 1; }

# Run a command as root (directly, or through sudo when available).
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "'$*' needs root: run as root (or install sudo), or install the packages yourself."
    fi
}
