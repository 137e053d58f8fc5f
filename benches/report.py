#!/usr/bin/env python3
"""Turns criterion's estimates for `benches/step.rs` into a Markdown table
and an SVG chart of Gelem/s against size per kernel, with the roofline.

    cargo bench --bench step
    python3 benches/report.py [CRITERION_DIR] [SVG_OUT]

Prints the table (paste it into BENCHMARKS.md); writes the chart to
benches/step.svg by default. Uses medians; no third-party packages.
"""
import json
import math
import os
import sys

KERNELS = ["reference", "portable", "avx2+fma", "dispatched", "dispatched+rayon", "roofline", "roofline+rayon"]
COLORS = {
    "reference": "#888888",
    "portable": "#e69f00",
    "avx2+fma": "#56b4e9",
    "dispatched": "#0072b2",
    "dispatched+rayon": "#d55e00",
    "roofline": "#009e73",
    "roofline+rayon": "#cc79a7",
}
BYTES_PER_LANE = 28  # read p, g, m, v; write p, m, v


def load(root):
    results = {}
    for entry in os.listdir(root):
        if not entry.startswith("step_"):
            continue
        size = int(entry[len("step_"):])
        for kernel in KERNELS:
            path = os.path.join(root, entry, kernel, "new", "estimates.json")
            if os.path.exists(path):
                with open(path) as f:
                    median_ns = json.load(f)["median"]["point_estimate"]
                results[(size, kernel)] = size / median_ns  # Gelem/s
    return results


def fmt_size(n):
    return f"{n >> 20}M" if n >= 1 << 20 else f"{n >> 10}K"


def table(results):
    sizes = sorted({s for s, _ in results})
    kernels = [k for k in KERNELS if any((s, k) in results for s in sizes)]
    lines = ["| lanes | " + " | ".join(kernels) + " | dispatched / portable | parallel / parallel roofline |",
             "|---:|" + "---:|" * (len(kernels) + 2)]
    for s in sizes:
        cells = [f"{results[(s, k)]:.3f}" if (s, k) in results else "-" for k in kernels]
        get = lambda k: results.get((s, k), float("nan"))
        lines.append(f"| {fmt_size(s)} | " + " | ".join(cells)
                     + f" | {get('dispatched') / get('portable'):.1f}x"
                     + f" | {get('dispatched+rayon') / get('roofline+rayon'):.2f} |")
    lines.append("")
    lines.append(f"Gelem/s (median); GB/s = Gelem/s x {BYTES_PER_LANE}.")
    return "\n".join(lines)


def svg(results, out):
    sizes = sorted({s for s, _ in results})
    w, h, left, right, top, bottom = 720, 420, 60, 170, 20, 50
    ymax = max(results.values()) * 1.1
    lx = [math.log2(s) for s in sizes]
    x = lambda s: left + (math.log2(s) - lx[0]) / max(lx[-1] - lx[0], 1) * (w - left - right)
    y = lambda v: top + (1 - v / ymax) * (h - top - bottom)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{left}" y="14">ADOPT step throughput (Gelem/s, median) vs buffer size</text>']
    step = 1 if ymax < 8 else 2
    for t in range(0, int(ymax) + 1, step):
        parts.append(f'<line x1="{left}" x2="{w - right}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 8}" y="{y(t) + 4:.1f}" text-anchor="end">{t}</text>')
    for s in sizes:
        parts.append(f'<text x="{x(s):.1f}" y="{h - bottom + 18}" text-anchor="middle">{fmt_size(s)}</text>')
    parts.append(f'<text x="{(left + w - right) / 2}" y="{h - 10}" text-anchor="middle">lanes (f32)</text>')
    for i, k in enumerate(KERNELS):
        pts = [(x(s), y(results[(s, k)])) for s in sizes if (s, k) in results]
        if not pts:
            continue
        dash = ' stroke-dasharray="6,4"' if k.startswith("roofline") else ""
        parts.append(f'<polyline fill="none" stroke="{COLORS[k]}" stroke-width="2"{dash} points="'
                     + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
        for a, b in pts:
            parts.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{COLORS[k]}"/>')
        ly = top + 20 + 18 * i
        parts.append(f'<line x1="{w - right + 10}" x2="{w - right + 35}" y1="{ly}" y2="{ly}" stroke="{COLORS[k]}" stroke-width="2"{dash}/>')
        parts.append(f'<text x="{w - right + 40}" y="{ly + 4}">{k}</text>')
    parts.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(parts) + "\n")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
    out = sys.argv[2] if len(sys.argv) > 2 else "benches/step.svg"
    results = load(root)
    if not results:
        sys.exit(f"no step benchmark results under {root}: run `cargo bench --bench step` first")
    print(table(results))
    svg(results, out)
    print(f"\nchart written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
