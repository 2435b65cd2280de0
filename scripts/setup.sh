#!/usr/bin/env bash
# Set up .venv with the CPU build of PyTorch and digitnet installed in editable mode.
#   scripts/setup.sh          runtime: train, evaluate, predict, serve, export
#   scripts/setup.sh --test   also the test tools, and Chromium, fonts, Fashion-MNIST and hey (apt, as root)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="serve,export"
if [[ "${1:-}" == "--test" ]]; then extras="serve,export,test"; fi

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
# Pin the CPU wheel first: an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/pip install --quiet --disable-pip-version-check "torch==2.13.0"
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[${extras}]"

if [[ "${1:-}" == "--test" ]]; then
    need=()
    [[ -x /usr/bin/chromium ]] || need+=(chromium)
    [[ -d /usr/share/datasets/fashion-mnist ]] || need+=(dataset-fashion-mnist)
    fc-list 2>/dev/null | grep -qi "humor" || need+=(fonts-dkg-handwriting fonts-humor-sans fonts-comic-neue)
    command -v hey >/dev/null || need+=(hey)  # the load test's load generator
    if ((${#need[@]})); then
        if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
        else
            echo "setup: optional system packages missing (${need[*]}); tests that need them are skipped" >&2
        fi
    fi
fi
echo "setup: ready (.venv, extras: ${extras})"
