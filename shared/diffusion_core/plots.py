"""Small line charts drawn with Pillow (no plotting library needed)."""

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


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

    def to_px(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x0) / (x1 - x0) * (width - left - right)
        py = height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)
        return px, py

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        _, py = to_px(x0, y)
        draw.line([left - 4, py, left, py], fill="black")
        draw.text((5, py - 7), f"{y:.2f}", fill="black", font=font)
        x = x0 + (x1 - x0) * i / 4
        px, _ = to_px(x, y0)
        draw.text((px - 15, height - bottom + 6), f"{x:g}", fill="black", font=font)
    draw.text((left + 110, 10), title, fill="black", font=font)
    draw.text(((width - right) / 2, height - 22), x_label, fill="black", font=font)
    draw.text((5, top - 30), y_label, fill="black", font=font)
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
