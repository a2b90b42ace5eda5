#!/usr/bin/env bash
# LeRobot interoperability, checked against the real library: builds a second virtual environment,
# .venv-lerobot, with lerobot==0.4.4 and runs tests/episodes/test_lerobot_compat.py in it.
# lerobot 0.4.x pins torch < 2.11, which clashes with the torch of our `learn` extra, so it cannot
# live in .venv. Our package goes in without its dependencies (the `episodes` tests need only
# numpy, av, pyarrow, pandas, tqdm and pillow, installed here alongside lerobot).
# The first run downloads lerobot and torch (a few minutes, ~8 GB); later runs reuse the venv while
# its stamp (this script and pyproject.toml) matches.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
venv=.venv-lerobot
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
stamp="$venv/.prism-installed-$(cat pyproject.toml scripts/lerobot_compat.sh | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "[lerobot-compat] building $venv with lerobot==0.4.4 (first run: a few minutes)"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q "lerobot==0.4.4" "av>=12" "pyarrow>=14" "pandas>=2.0" "tqdm>=4.66" \
    "pillow>=10" "pytest>=8" "pytest-timeout>=2.2"
  "$venv/bin/python" -m pip install -q --no-deps -e .
  rm -f "$venv"/.prism-installed-*
  touch "$stamp"
fi
echo "[lerobot-compat] lerobot $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("lerobot"))') in $venv"
# -p no:cacheprovider: the main run owns .pytest_cache.
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/episodes/test_lerobot_compat.py "$@"
