# Sourced by scripts/demo and scripts/test: find a Python 3.12+, build .venv, install requirements.
# shellcheck shell=bash
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CHATMEMORY_VENV:-$ROOT/.venv}"
# CHATMEMORY_DJANGO=5.2.19 installs that Django instead of the pinned one (CI uses
# it, with CHATMEMORY_VENV, to test the oldest supported release).
DJANGO_OVERRIDE="${CHATMEMORY_DJANGO:-}"

# A name on PATH may be a pyenv shim that fails unless that version is selected,
# so every candidate is run before it is chosen.
find_python() {
  local candidates=()
  [[ -n "${PYTHON:-}" ]] && candidates+=("$PYTHON")
  candidates+=(python3.13 python3.12 python3 python)
  local root
  for root in "${PYENV_ROOT:-$HOME/.pyenv}/versions" /usr/local/bin /usr/bin; do
    [[ -d "$root" ]] || continue
    candidates+=("$root"/3.1[2-9]*/bin/python3 "$root"/python3.1[2-9])
  done
  local c
  for c in "${candidates[@]}"; do
    [[ -e "$c" ]] || command -v "$c" >/dev/null 2>&1 || continue
    if "$c" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
      "$c" -c 'import sys; print(sys.executable)'
      return 0
    fi
  done
  return 1
}

ensure_venv() {
  if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
    :
  else
    local py
    if ! py="$(find_python)"; then
      echo "chatmemory needs Python 3.12 or newer (Django 6.1 does), and none was found." >&2
      echo "Tried \$PYTHON, python3.13, python3.12, python3, and pyenv/system installs." >&2
      echo "Install one (e.g. 'pyenv install 3.12') or point PYTHON at it: PYTHON=/path/to/python3.12 $0" >&2
      exit 1
    fi
    echo "Creating ${VENV#"$ROOT"/} with $py"
    rm -rf "$VENV"
    "$py" -m venv "$VENV"
  fi
  # Reinstall only when requirements.txt or pyproject.toml changed since the last install.
  local stamp="$VENV/.installed"
  local want
  want="$( (cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml"; echo "$DJANGO_OVERRIDE") | sha256sum | cut -d' ' -f1)"
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "Installing requirements into ${VENV#"$ROOT"/}"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    local requirements="$ROOT/requirements.txt"
    if [[ -n "$DJANGO_OVERRIDE" ]]; then
      requirements="$VENV/requirements-django-$DJANGO_OVERRIDE.txt"
      { grep -v '^Django==' "$ROOT/requirements.txt"; echo "Django==$DJANGO_OVERRIDE"; } >"$requirements"
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e "$ROOT"
    echo "$want" >"$stamp"
  fi
  export PATH="$VENV/bin:$PATH"
}

require_redis_server() {
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "redis-server is not installed. On Debian/Ubuntu: sudo apt-get install -y redis-server" >&2
    echo "(or give a running server with REDIS_URL=redis://host:port)" >&2
    exit 1
  fi
}
