"""The report in headless Chromium: a screenshot, and the DOM's count of loaded images and
tables (written on ``<body>`` by the page's script), the claims table among them."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                "google-chrome"))), None)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install -y chromium)")]


def _chromium(tmp_path, *args: str) -> str:
    command = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
               "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def test_report_renders_in_chromium(report, tmp_path):
    page = report[0].resolve().as_uri()
    shot = tmp_path / "report.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", page)
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 50_000
    dom = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", page)
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    attributes = dict(re.findall(r'data-([a-z-]+)="(\d+)"', body.group(1)))
    # gallery and the three figures of "Imbalance over training" included
    assert attributes["images"] == attributes["images-loaded"] == "10"
    assert 'id="modules-tiny-synthetic-gallery"' in dom
    assert 'id="modules-tiny-synthetic-over-training"' in dom
    assert dom.count('class="speed-table"') == 1
    for stem in ("training-ap", "training-gap", "training-gap-map"):
        assert f'id="modules-tiny-synthetic-{stem}"' in dom
    assert int(attributes["tables"]) >= 7
    assert dom.count('class="study-table"') == 1 and dom.count('class="claims-table"') == 1
