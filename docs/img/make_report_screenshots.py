"""Screenshot a demo report in headless Chromium for docs/report.md.

    python docs/img/make_report_screenshots.py REPORT.html OUT.png [--only heliostats,field-maps]
        [--hash 'hs:status=fit%20failed'] [--size 1400x1800] [--colors 96]

``--only`` keeps the named sections (their ids: the heading in lower case, dashes for
spaces) and hides the others; ``--hash`` opens the table on a view. The PNG is reduced to
a palette of ``--colors`` colours to stay small. The images in docs/img/ were made with:

    heliostat demo --out demo50
    python docs/img/make_report_screenshots.py demo50/report.html docs/img/report-50.png \\
        --size 1400x1700
    heliostat demo --heliostats 1000 --days 2 --out demo1000
    python docs/img/make_report_screenshots.py demo1000/report.html \\
        docs/img/report-1000.png --size 1400x1700
    python docs/img/make_report_screenshots.py demo1000/report.html \\
        docs/img/report-1000-table.png --only heliostats \\
        --hash 'hs:status=fit%20failed&sort=after_mrad&dir=-1&size=25' --size 1400x1800
    python docs/img/make_report_screenshots.py demo1000/report.html \\
        docs/img/report-1000-maps.png --only field-maps --size 1400x1100 --colors 128
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report")
    ap.add_argument("out")
    ap.add_argument("--only", default="")
    ap.add_argument("--hash", default="")
    ap.add_argument("--size", default="1400x1800")
    ap.add_argument("--colors", type=int, default=96)
    a = ap.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium not found (apt-get install chromium)", file=sys.stderr)
        return 2
    page = Path(a.report).read_text(encoding="utf-8")
    if a.only:
        keep = "".join(f":not(#{s.strip()})" for s in a.only.split(","))
        page = page.replace("</head>", f"<style>section{keep}{{display:none}}</style></head>", 1)
    width, height = a.size.split("x")
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "report.html"
        html.write_text(page, encoding="utf-8")
        png = Path(tmp) / "shot.png"
        url = f"file://{html}" + (f"#{a.hash}" if a.hash else "")
        cmd = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--virtual-time-budget=5000", f"--window-size={width},{height}",
            f"--screenshot={png}", url,
        ]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, timeout=180)
        from PIL import Image

        img = Image.open(png).convert("RGB")
        # drop the blank band a scrolled or shortened page leaves at the top and bottom
        rows = [y for y in range(img.height) if img.crop((0, y, img.width, y + 1)).getextrema()
                != ((255, 255), (255, 255), (255, 255))]  # fmt: skip
        if rows:
            img = img.crop((0, max(rows[0] - 16, 0), img.width, min(rows[-1] + 16, img.height)))
        img.quantize(colors=a.colors, method=Image.Quantize.MEDIANCUT).save(a.out, optimize=True)
    print(f"{a.out}: {Path(a.out).stat().st_size / 1e3:.0f} kB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
