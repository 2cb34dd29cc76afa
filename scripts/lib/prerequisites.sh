# Sourced by scripts/run and scripts/test: what both need on a fresh Debian
# machine beyond Rust itself, installed with apt-get (as root, or with sudo).

have() { command -v "$1" >/dev/null 2>&1; }

apt_install() {
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing: $*"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# Rust (rustup) is the one thing a script cannot install for you; a C compiler
# (bundled SQLite, ring) it can.
require_build_tools() {
    if ! have cargo; then
        echo "error: Rust is required (https://rustup.rs), version 1.94 or newer" >&2
        exit 1
    fi
    have cc || apt_install build-essential
}
