# Sourced by run.sh and test.sh: create .venv with Python >= 3.11 and install the project.
ensure_venv() {
    local extra="${1:-}"
    local py="${PYTHON:-}"
    if [ -z "$py" ]; then
        for cand in python3.13 python3.12 python3.11 python3; do
            if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
                py="$cand"; break
            fi
        done
    fi
    if [ -z "$py" ]; then
        echo "tickscope: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
        exit 2
    fi
    if [ ! -x .venv/bin/python ]; then
        if ! "$py" -m venv .venv 2>/dev/null; then
            echo "tickscope: installing python3-venv" >&2
            SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
            $SUDO apt-get update -qq
            DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
            rm -rf .venv
            "$py" -m venv .venv
        fi
    fi
    local stamp=".venv/.installed-${extra:-run}"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        .venv/bin/python -m pip install -q --upgrade pip >/dev/null
        if [ -n "$extra" ]; then
            .venv/bin/python -m pip install -q -e ".[$extra]"
        else
            .venv/bin/python -m pip install -q -e .
        fi
        touch "$stamp"
    fi
}
