"""Checks that a written figure or table is what it claims to be, cheaply: the PNG is
an image of the layout's resolution with something drawn on it, the PDF one page of
the same size, the Markdown table a titled table whose header is the CSV's columns."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

SAVEFIG_DPI = 200  # figures/layout.py: savefig.dpi
PDF_POINTS_PER_INCH = 72


def pdf_page_sizes(path: Path) -> list[tuple[float, float]]:
    """Width and height (points) of each page of a PDF as matplotlib writes it
    (uncompressed page dictionaries, one MediaBox each)."""
    data = path.read_bytes()
    assert data.startswith(b"%PDF-"), f"{path}: not a PDF"
    assert data.rstrip().endswith(b"%%EOF"), f"{path}: truncated PDF"
    pages = re.findall(rb"/Type\s*/Page\b(?!s).*?/MediaBox\s*\[([^\]]*)\]", data, re.S)
    sizes = []
    for box in pages:
        x0, y0, x1, y1 = (float(v) for v in box.split())
        sizes.append((x1 - x0, y1 - y0))
    return sizes


def assert_figure(figures: Path, stem: str, width_in: float | None = None) -> None:
    """``stem``.png and ``stem``.pdf under ``figures``: a PNG at the layout's dpi that is
    not blank, a one-page PDF of the same size in inches, and (``width_in``: the
    figsize width the figure module asks for) a width near it: ``bbox_inches="tight"``
    trims the margins and widens the figure by a legend placed outside the axes."""
    png, pdf = figures / f"{stem}.png", figures / f"{stem}.pdf"
    with Image.open(png) as image:
        assert image.format == "PNG", png
        dpi = image.info.get("dpi", (0, 0))
        assert np.allclose(dpi, SAVEFIG_DPI, atol=0.5), (png, dpi)
        width_px, height_px = image.size
        assert image.getcolors(maxcolors=1) is None, f"{png}: one colour only"
        pixels = np.asarray(image.convert("RGB"))
    drawn = np.any(pixels != pixels[0, 0], axis=-1).mean()  # not the corner's colour
    assert drawn > 0.005, f"{png}: almost blank ({drawn:.4f} of the pixels drawn)"
    sizes = pdf_page_sizes(pdf)
    assert len(sizes) == 1, (pdf, sizes)
    width, height = width_px / SAVEFIG_DPI, height_px / SAVEFIG_DPI  # inches
    # The same tight bounding box in both files: the heights agree to a pixel or two,
    # the widths to the text extents of the two renderers (a legend outside the axes).
    assert abs(height - sizes[0][1] / PDF_POINTS_PER_INCH) < 0.02, (stem, height, sizes)
    assert abs(width - sizes[0][0] / PDF_POINTS_PER_INCH) < 0.15, (stem, width, sizes)
    if width_in is not None:
        assert 0.7 * width_in <= width <= 1.4 * width_in, (stem, width, width_in)


def assert_markdown_table(path: Path, columns: list[str] | None = None, n_rows: int | None = None):
    """A Markdown table as ``analysis.report.study_tables.markdown`` writes it: '# title', a
    blank line, a header row (``columns``, if given), the rule, and ``n_rows`` body rows (if
    given)."""
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# ") and len(lines[0]) > 2, (path, lines[:1])
    assert lines[1] == "", path
    header = [c.strip() for c in lines[2].strip().strip("|").split("|")]
    assert all(header), (path, lines[2])
    if columns is not None:
        assert header == list(columns), (path, header)
    assert re.fullmatch(r"\|(---\|)+", lines[3]) and lines[3].count("|") == len(header) + 1, path
    body = []
    for line in lines[4:]:
        if not line.startswith("|"):
            break
        body.append(line)
    assert all(line.count("|") >= len(header) + 1 for line in body), path
    if n_rows is not None:
        assert len(body) == n_rows, (path, len(body), n_rows)
