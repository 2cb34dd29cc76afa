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

# Whether something listens on 127.0.0.1:PORT (or any address, when ss is here).
port_in_use() {
    if have ss; then
        [ -n "$(ss -Hltn "sport = :$1")" ]
    else
        timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
    fi
}

# PostgreSQL's server programs, for the servers the tests start of their own
# (test_support::Postgres runs initdb and postgres from
# /usr/lib/postgresql/<major>/bin, off the PATH; it uses no cluster of the
# package's). Debian's package creates and starts a cluster "main" on port 5432:
# harmless on a fresh machine, but where a PostgreSQL already listens there
# that second cluster would fight it for the port (and its failed start could
# fail the install). Then the package is told to create none, by a drop-in that
# stays for later major versions' packages.
install_postgresql() {
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && return
    if port_in_use 5432; then
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        echo "port 5432 is taken: Debian's postgresql package will create no cluster"
        $sudo mkdir -p /etc/postgresql-common/createcluster.d
        printf '%s\n' \
            "# Written by scripts/test: a PostgreSQL already listened on port 5432." \
            "create_main_cluster = false" |
            $sudo tee /etc/postgresql-common/createcluster.d/no-main-cluster.conf >/dev/null
    fi
    apt_install postgresql
}
