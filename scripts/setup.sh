#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install everything privaudit needs.
#
# The environment is cached under ${PRIVAUDIT_CACHE:-$HOME/.cache/privaudit}/venv-<hash>, keyed
# by a hash of every dependency file (pyproject.toml and this script), and linked as ./.venv.
# Change a dependency and the hash changes, so a fresh environment is built from nothing: a
# missing install step cannot hide behind an old cache.
set -euo pipefail
cd "$(dirname "$0")/.."

# --with-browser: also install Debian's chromium (the report test loads report.html in it).
if [ "${1:-}" = "--with-browser" ]; then
    if ! command -v chromium >/dev/null 2>&1; then
        echo "setup: installing chromium (headless browser for the report test)" >&2
        if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
        $SUDO apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
    fi
fi

PY=${PYTHON:-python3}
TORCH_SPEC=${PRIVAUDIT_TORCH:-"torch==2.14.1 torchvision==0.29.1"}
CACHE=${PRIVAUDIT_CACHE:-$HOME/.cache/privaudit}
key=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
venv="$CACHE/venv-$key"

if [ ! -f "$venv/.complete" ]; then
    echo "setup: building virtual environment $venv" >&2
    rm -rf "$venv"
    mkdir -p "$CACHE"
    "$PY" -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    # A compatible torch + torchvision pair first (pip finds these on local disk here).
    # shellcheck disable=SC2086
    "$venv/bin/pip" install -q $TORCH_SPEC
    # The package's own dependencies (opacus, diffprivlib, scipy, scikit-learn<1.9, ...) and the
    # test extras; the package itself is (re)installed editable below for each checkout.
    # The Flower extra (privaudit.flower, tests/flower) is installed too, so CI runs its tests.
    "$venv/bin/pip" install -q ".[test,flower]"
    "$venv/bin/pip" uninstall -q -y privaudit
    # facenet-pytorch 2.6.0 pins torch<2.3 and numpy<2 in its metadata; its code works with
    # current torch, so it is installed without its dependency resolution.
    "$venv/bin/pip" install -q --no-deps facenet-pytorch==2.6.0
    touch "$venv/.complete"
fi

# Point the environment at this checkout (fast: no dependency resolution).
"$venv/bin/pip" install -q --no-deps --no-build-isolation -e .
if [ -L .venv ] || [ ! -e .venv ]; then
    ln -sfn "$venv" .venv
else
    echo "setup: ./.venv exists and is not a link; using $venv directly" >&2
fi
"$venv/bin/python" - <<'PY'
import importlib
for name in ("torch", "torchvision", "opacus", "diffprivlib", "sklearn", "scipy", "facenet_pytorch",
             "flwr", "privaudit", "federated_core", "attacks", "accountants", "reports"):
    importlib.import_module(name)
PY
echo "setup: ready ($venv)" >&2
