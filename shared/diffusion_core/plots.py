"""Small line charts drawn with Pillow (no plotting library needed)."""

from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def _axes(
    draw: ImageDraw.ImageDraw,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    size: tuple[int, int],
    margins: tuple[int, int, int, int],
    bounds: tuple[float, float, float, float],
    labels: tuple[str, str, str],
    x_format: str,
) -> Callable[[float, float], tuple[float, float]]:
    """Draw the frame, five ticks on each axis, the title (top right) and the axis labels; return
    the data -> pixel mapping."""
    (width, height), (left, right, top, bottom), (x0, x1, y0, y1) = size, margins, bounds
    title, x_label, y_label = labels

    def to_px(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x0) / (x1 - x0) * (width - left - right)
        py = height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)
        return px, py

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for i in range(5):
        y, x = y0 + (y1 - y0) * i / 4, x0 + (x1 - x0) * i / 4
        _, py = to_px(x0, y)
        draw.line([left - 4, py, left, py], fill="black")
        draw.text((5, py - 7), f"{y:.2f}", fill="black", font=font)
        px, _ = to_px(x, y0)
        draw.text((px - 15, height - bottom + 6), format(x, x_format), fill="black", font=font)
    draw.text((width - right - font.getlength(title), 10), title, fill="black", font=font)
    draw.text(((width - right) / 2, height - 22), x_label, fill="black", font=font)
    draw.text((5, top - 30), y_label, fill="black", font=font)
    return to_px


def line_chart(
    series: dict[str, list[tuple[float, float]]],
    path: str | Path,
    title: str,
    x_label: str,
    y_label: str,
    size: tuple[int, int] = (900, 540),
) -> Path:
    """One line per series; axes scaled to the data; legend on the right. Returns the PNG path."""
    width, height = size
    left, right, top, bottom = 70, 170, 40, 50
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    points = [p for values in series.values() for p in values]
    if not points:
        points = [(0.0, 0.0), (1.0, 1.0)]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    margins, bounds = (left, right, top, bottom), (x0, x1, y0, y1)
    to_px = _axes(draw, font, size, margins, bounds, (title, x_label, y_label), "g")
    for i, (name, values) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        if len(values) > 1:
            draw.line([to_px(x, y) for x, y in values], fill=color, width=2)
        elif values:
            px, py = to_px(*values[0])
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=color)
        draw.line([width - right + 10, top + 10 + 20 * i, width - right + 30, top + 10 + 20 * i], fill=color, width=3)
        draw.text((width - right + 36, top + 3 + 20 * i), name, fill="black", font=font)
    out = Path(path)
    image.save(out)
    return out


def scatter_chart(
    points: dict[str, tuple[float, float]],
    front: list[str],
    path: str | Path,
    title: str,
    x_label: str,
    y_label: str,
    size: tuple[int, int] = (900, 540),
) -> Path:
    """One labelled dot per point; the points named in `front` joined by a line (sorted by x)."""
    width, height = size
    left, right, top, bottom = 70, 250, 40, 50
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    xs, ys = [p[0] for p in points.values()] or [0.0], [p[1] for p in points.values()] or [0.0]
    pad_x, pad_y = (max(xs) - min(xs)) * 0.08 or 1.0, (max(ys) - min(ys)) * 0.08 or 1.0
    x0, x1, y0, y1 = min(xs) - pad_x, max(xs) + pad_x, min(ys) - pad_y, max(ys) + pad_y
    margins, bounds = (left, right, top, bottom), (x0, x1, y0, y1)
    to_px = _axes(draw, font, size, margins, bounds, (title, x_label, y_label), ".0f")
    line = sorted((points[name] for name in front), key=lambda p: p[0])
    if len(line) > 1:
        draw.line([to_px(x, y) for x, y in line], fill="#7f7f7f", width=2)
    for i, (name, (x, y)) in enumerate(points.items()):
        color = PALETTE[i % len(PALETTE)]
        px, py = to_px(x, y)
        draw.ellipse([px - 5, py - 5, px + 5, py + 5], fill=color, outline="black" if name in front else color)
        draw.ellipse([width - right + 10, top + 6 + 20 * i, width - right + 20, top + 16 + 20 * i], fill=color)
        draw.text((width - right + 26, top + 3 + 20 * i), name, fill="black", font=font)
    out = Path(path)
    image.save(out)
    return out
