"""Render a ``prism-reward eval`` report in headless Chromium and save a PNG screenshot.

    .venv/bin/python bench/eval_report_screenshot.py REPORT_DIR [--png out.png]

Needs Debian's ``chromium`` (``apt-get install -y chromium``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path


def screenshot(report_dir: str | Path, png: str | Path, size: str = "1280,2000") -> Path:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise RuntimeError("chromium not found: apt-get install -y chromium")
    html = Path(report_dir).resolve() / "report.html"
    if not html.is_file():
        raise FileNotFoundError(f"{html} does not exist (run prism-reward eval first)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                exe,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--screenshot={Path(png).resolve()}",
                f"--window-size={size}",
                html.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return Path(png)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report_dir")
    ap.add_argument("--png", default="report_screenshot.png")
    a = ap.parse_args()
    print(screenshot(a.report_dir, a.png))
