"""The HTML report: self-contained, and it renders in a real browser (headless Chromium)."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from benchmark import report
from test_report import write_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def page(tmp_path):
    run = write_run(tmp_path, "00000-html", attention=True)
    (run / "dataset_problems.jsonl").write_text('{"dataset": "toy", "split": "train", "file": "/d/7.png", '
                                                '"where": "attributes.csv:9", "kind": "missing", '
                                                '"reason": "no such file", "action": "skipped"}\n')
    return report.generate(run) / "index.html"


def test_page_is_self_contained_with_every_section(page):
    text = page.read_text()
    assert "<script" not in text and not re.search(r"""src=['"](?!data:)""", text)  # nothing to fetch
    assert text.count("data:image/png;base64,") >= 6
    for section in ("Tables", "Figures", "Problems", "Fit provenance", "Config", "Environment"):
        assert f">{section}" in text, section
    assert "<b>0.920 ± 0.014</b>" in text  # good's local success at strength 1, bold
    assert "abc123" in text and "loss_g=0.5" in text and "trained" in text  # fits.jsonl
    assert "attributes.csv:9" in text  # dataset.problems rows
    assert "attr_success ↑" in text and "cf_l1 ↓" in text


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is absent (Debian: apt-get install -y chromium)")
def test_chromium_renders_tables_and_decodes_images(page, tmp_path):
    # a copy with a probe that counts decoded images and tables into the title (the report has no script)
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", """<script>
      window.addEventListener('load', () => {
        const imgs = [...document.images];
        const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
        document.title = `imgs=${imgs.length} decoded=${ok} tables=${document.querySelectorAll('table').length}`;
      });</script></body>"""))
    profile = tmp_path / "profile"
    profile.mkdir()
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000"]
    dom = subprocess.run([*common, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=180)
    title = re.search(r"<title>imgs=(\d+) decoded=(\d+) tables=(\d+)</title>", dom.stdout)
    assert title, dom.stderr[-2000:]
    imgs, decoded, tables = map(int, title.groups())
    assert imgs >= 6 and decoded == imgs and tables >= 5
    shot = tmp_path / "shot.png"
    subprocess.run([*common, "--window-size=1200,1600", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, text=True, timeout=180)
    img = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    assert img.shape[:2] == (1600, 1200)
    assert img.std() > 20  # not a blank page
    dark = (img.mean(axis=2) < 100).mean()
    assert 0.005 < dark < 0.8  # text and figures drawn, not an error page of one colour
