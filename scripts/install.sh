#!/usr/bin/env bash
# Installs everything prism-rl needs on a fresh Debian/Ubuntu machine with Python >= 3.10:
#   - Mesa EGL (apt: libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0) for headless MuJoCo rendering,
#   - a virtual environment in .venv with prism-rl and its extras (learn, bags, dev),
#   - the ROS 2 wheels (extra `ros`) where the registry has them for this Python (cp311); without
#     them the ROS tests skip and say why.
# Safe to re-run: it does nothing when pyproject.toml has not changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_pkgs=(libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0)
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "[install] apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=".venv/.prism-installed-$(cat pyproject.toml scripts/install.sh | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "[install] pip install -e .[dev] (first run downloads torch: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  if ! .venv/bin/python -m pip install -q -e ".[ros]"; then
    echo "[install] ROS 2 wheels not available for this Python: ROS tests will be skipped"
  fi
  rm -f .venv/.prism-installed-*
  touch "$stamp"
fi
echo "[install] ready: $(.venv/bin/python -c 'import sys; print(sys.version.split()[0])') in .venv"
