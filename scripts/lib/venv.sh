# Sourced by scripts that need a Python tool from PyPI: `ensure_venv DIR REQ...`
# makes (or reuses) a virtualenv in DIR (under target/, so `cargo clean` and
# .gitignore cover it) holding exactly the requirements REQ..., reinstalled when
# they change. Needs python3 with venv and ensurepip (scripts/test installs them).
ensure_venv() {
    local venv=$1
    shift
    local want="$*"
    local stamp="$venv/.requirements"
    if [ ! -x "$venv/bin/python" ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
        printf '%s' "$want" >"$stamp"
    fi
}
