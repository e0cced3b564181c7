"""Render a report in headless Chromium: a screenshot, and a check that every image loaded.

Chromium's --dump-dom prints the DOM after load; a copy of the page gets a small script that records,
on `load`, how many images decoded (naturalWidth > 0) and which sections exist, as attributes of <body>.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

_PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-images-ok', imgs.filter(i => i.complete && i.naturalWidth > 0).length);
  document.body.setAttribute('data-sections',
    Array.from(document.querySelectorAll('section[data-section]')).map(s => s.dataset.section).join(','));
});
</script>"""

# Flags as the machine notes say: no sandbox as root, no GPU, and no background network traffic.
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
          "--disable-component-update", "--disable-sync", "--disable-quic", "--hide-scrollbars"]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def check_page(html_path: Path, screenshot: Path | None = None, width: int = 1280, height: int = 6000,
               timeout_s: float = 120) -> dict:
    """Load the page in Chromium; return {'images', 'images_ok', 'sections'} (and write the screenshot)."""
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="synthmix-chromium-") as tmp:
        probe = Path(tmp) / "page.html"
        probe.write_text(Path(html_path).read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"),
                         encoding="utf-8")
        base = [chromium, *_FLAGS, f"--user-data-dir={tmp}/profile", "--virtual-time-budget=10000"]
        dom = subprocess.run([*base, "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                             timeout=timeout_s).stdout
        if screenshot is not None:
            subprocess.run([*base, f"--screenshot={Path(screenshot).resolve()}", f"--window-size={width},{height}",
                            Path(html_path).resolve().as_uri()], capture_output=True, timeout=timeout_s)
    body = re.search(r"<body([^>]*)>", dom)
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1))) if body else {}
    return {"images": int(attrs.get("images", -1)), "images_ok": int(attrs.get("images-ok", -1)),
            "sections": [s for s in attrs.get("sections", "").split(",") if s]}
