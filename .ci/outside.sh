#!/usr/bin/env bash
# The book runs where readers run it: chapters 1-6 outside the repository, with only the wheel's [book] extra.
#   bash .ci/outside.sh                 # chapters 01-06
#   bash .ci/outside.sh 03_loss 05      # some chapters (file names or their number prefixes)
#   KEEP=1 bash .ci/outside.sh          # keep the temp folder (its path is printed)
# 1. build the wheel from this checkout (.venv/bin/pip wheel --no-deps);
# 2. a fresh venv in a temp folder: torch==2.13.0, then "<wheel>[book]" ipykernel nbclient (no nbdev, no repo on sys.path);
# 3. copy nbs/ to a temp folder outside the repository (no settings.ini above it) and execute each chapter there with
#    nbclient and a kernel from that venv, as a reader would (no IN_TEST; .ci/outside_run.py); fail on any error,
#    naming the cell.
# Needs only python3 with venv (PYTHON=... to choose another) and this repo's .venv (to build the wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
t0=$(date +%s)
say() { printf '\n=== %s (%ss)\n' "$*" "$(( $(date +%s) - t0 ))"; }
fail() { echo "OUTSIDE FAILED: $*" >&2; exit 1; }
# pip, with the local-index notices of this machine ("Location ... is ignored") left out of the log
quiet_pip() { "$@" >"$tmp/pip.log" 2>&1 && rc=0 || rc=$?; grep -v 'is ignored: it is neither a file nor a directory' "$tmp/pip.log" || true; return $rc; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/neuralwiki-outside.XXXXXX")
if [ -n "${KEEP:-}" ]; then echo "keeping $tmp"; else trap 'rm -rf "$tmp"' EXIT; fi
case "$tmp" in "$ROOT"/*) fail "the temp folder $tmp is inside the repository";; esac

say "the wheel"
.venv/bin/pip wheel -q --no-deps -w "$tmp/dist" . >"$tmp/wheel.log" 2>&1 || { cat "$tmp/wheel.log"; fail "building the wheel failed"; }
wheel=$(ls "$tmp"/dist/neuralwiki-*.whl)
echo "$wheel"

say "a fresh venv: torch, then the wheel's [book] extra and a kernel"
$PY -m venv "$tmp/venv"
V="$tmp/venv/bin"
quiet_pip "$V/pip" install -q torch==2.13.0
quiet_pip "$V/pip" install -q "$wheel[book]" ipykernel nbclient
"$V/pip" list 2>/dev/null | grep -iE '^(neuralwiki|torch|matplotlib|ipywidgets|tqdm|scikit-learn|fastcore|genanki|ipykernel|nbclient) ' | tr -s ' ' | paste -sd, -
if "$V/pip" show -q nbdev >/dev/null 2>&1; then fail "nbdev got installed in the reader's venv: something in [book] pulls it in"; fi

say "chapters 1-6, copied outside the repository"
mkdir -p "$tmp/reader" "$tmp/home"
cp -r nbs "$tmp/reader/nbs"
rm -rf "$tmp/reader/nbs/.ipynb_checkpoints"
selected=("$@")
env -i PATH="$V:/usr/local/bin:/usr/bin:/bin" HOME="$tmp/home" LANG=C.UTF-8 TMPDIR="$tmp" \
    JUPYTER_CONFIG_DIR="$tmp/home/jupyter-config" JUPYTER_DATA_DIR="$tmp/home/jupyter-data" \
    JUPYTER_RUNTIME_DIR="$tmp/home/jupyter-runtime" IPYTHONDIR="$tmp/home/ipython" MPLCONFIGDIR="$tmp/home/mpl" \
    NW_REPO="$ROOT" NW_SELECTED="${selected[*]:-}" \
    "$V/python" "$ROOT/.ci/outside_run.py" "$tmp/reader/nbs"
say "done: chapters ran outside the repository with only the wheel's extras"
