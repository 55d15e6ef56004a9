"""What the browser test reads off the page: pixels that a chart really drew, and the
geometry that says whether the layout holds (one column, nothing clipped, no sideways
scroll). Functions, not expressions: the page's CSP forbids eval, which Playwright uses
for strings."""

from __future__ import annotations

import shutil

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
POINTS = "([id, n]) => Number(document.getElementById(id).dataset.points) >= n"
GRID_RGB = (44, 50, 53)  # charts.js GRID: #2c3235

_COLOUR_PIXELS = """([id, rgb, tol]) => {
    const c = document.querySelector(`#${id} canvas`), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4)
        if (d[i + 3] > 200 && Math.abs(d[i] - rgb[0]) <= tol && Math.abs(d[i + 1] - rgb[1]) <= tol && Math.abs(d[i + 2] - rgb[2]) <= tol) n++;
    return n; }"""

# Rows of the canvas that are mostly grid colour, adjacent rows counted once: the
# horizontal grid lines.
_GRID_ROWS = """([id, rgb]) => {
    const c = document.querySelector(`#${id} canvas`), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let lines = 0, previous = false;
    for (let y = 0; y < c.height; y++) {
        let n = 0;
        for (let x = 0; x < c.width; x++) {
            const i = 4 * (y * c.width + x);
            if (d[i + 3] > 200 && Math.abs(d[i] - rgb[0]) <= 6 && Math.abs(d[i + 1] - rgb[1]) <= 6 && Math.abs(d[i + 2] - rgb[2]) <= 6) n++;
        }
        const line = n > 0.4 * c.width;
        if (line && !previous) lines++;
        previous = line;
    }
    return lines; }"""

_LAYOUT = """() => {
    const box = el => el.getBoundingClientRect();
    const panels = [...document.querySelectorAll('main > section.charts > .panel, main > .compare-panel, main > section.lower > .panel')];
    return {
        scrollWidth: document.documentElement.scrollWidth,
        panelLefts: [...new Set(panels.map(p => Math.round(box(p).left)))],
        panelWidths: panels.map(p => Math.round(box(p).width)),
        mainWidth: Math.round(document.querySelector('main').clientWidth),
        clippedStats: [...document.querySelectorAll('.stat .value')].filter(v => v.scrollWidth > v.clientWidth + 1).map(v => v.textContent),
        statsBottom: Math.round(box(document.querySelector('.stats')).bottom),
        topbarHeight: Math.round(box(document.querySelector('.topbar')).height),
        compareLefts: [...new Set(['.compare-runs', '.compare-chart'].map(sel => Math.round(box(document.querySelector(sel)).left)))],
    }; }"""


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def colour_pixels(page, chart_id: str, rgb: tuple[int, int, int], tol: int = 30) -> int:
    """Pixels of `rgb` on the chart's canvas: a line of that colour was really drawn."""
    return page.evaluate(_COLOUR_PIXELS, [chart_id, list(rgb), tol])


def horizontal_grid_lines(page, chart_id: str) -> int:
    return page.evaluate(_GRID_ROWS, [chart_id, list(GRID_RGB)])


def layout(page) -> dict:
    return page.evaluate(_LAYOUT)
