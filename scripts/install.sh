#!/usr/bin/env bash
# Set-up behind `make install` (and so `make train` / `make test`): the venv, torch pinned by the constraints file,
# then the project with its extras. pip's output goes to .venv/install.log; a failure prints one line naming the
# step and the log instead of pip's traceback, and exits non-zero.
# Usage: scripts/install.sh <venv> <extras> <pip constraint args...>
set -uo pipefail
venv="$1" extras="$2"
shift 2
log="$venv/install.log"
start=$(date +%s)

step() {  # step <what> <command...>: run quietly, one clear line on failure
  local what="$1"
  shift
  if ! "$@" >>"$log" 2>&1; then
    local net err
    net=$(grep -m1 -iE "could not find a version|no matching distribution|connection (refused|error)|network is unreachable|name resolution|timed out|proxy" "$log")
    err=$(grep -m1 -E "^ERROR:" "$log")
    echo "set-up failed while ${what}: ${net:-${err:-see the log}} (full log: $log)" >&2
    [ -n "$net" ] && echo "  the package index looks unreachable: check network/proxy access to PyPI" >&2
    exit 1
  fi
}

if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$venv"
  : >"$log"
  python_bin="${PYTHON:-python3}"
  step "creating the virtual environment with $python_bin" "$python_bin" -m venv "$venv"
  step "upgrading pip" "$venv/bin/python" -m pip install -q --upgrade pip
fi
echo "set-up: installing torch and the project (.[$extras]); pip's output in $log"
# torch first and alone: pinned by the constraints file, it resolves to the local CPU wheel, not a CUDA build.
step "installing torch" "$venv/bin/python" -m pip install -q "$@" torch
step "installing the project (.[$extras])" "$venv/bin/python" -m pip install -q "$@" -e ".[$extras]"
echo "set-up: done in $(( $(date +%s) - start )) s"
