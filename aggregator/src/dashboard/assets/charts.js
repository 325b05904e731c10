// Small hand-drawn SVG charts (sparklines, bars, a stacked bar); the energy
// trend is drawn with the vendored ECharts (app.js `energyChart`).
"use strict";

const Charts = (() => {
  const NS = 'xmlns="http://www.w3.org/2000/svg"';

  function extent(arrays) {
    let lo = Infinity, hi = -Infinity;
    for (const a of arrays) for (const v of a) if (v != null && isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (!isFinite(lo)) return [0, 1];
    if (lo === hi) { const d = Math.abs(lo) * 0.1 || 1; return [lo - d, hi + d]; }
    const pad = (hi - lo) * 0.12;
    return [Math.max(0, lo - pad), hi + pad];
  }

  // Polyline paths, broken where a value is missing.
  function path(values, x, y) {
    let d = "", open = false;
    values.forEach((v, i) => {
      if (v == null) { open = false; return; }
      d += (open ? "L" : "M") + x(i).toFixed(1) + "," + y(v).toFixed(1);
      open = true;
    });
    return d;
  }

  // A small trend line with its trajectory, for table rows and zone cards.
  function spark(values, trajectory, w = 160, h = 40) {
    const [lo, hi] = extent([values, trajectory || []]);
    const n = values.length;
    const x = i => 4 + (n <= 1 ? (w - 8) / 2 : (i * (w - 8)) / (n - 1));
    const y = v => 4 + (h - 8) * (1 - (v - lo) / (hi - lo));
    let s = `<svg ${NS} class="spark" viewBox="0 0 ${w} ${h}" width="${w}" height="${h}">`;
    if (trajectory) s += `<path class="line trajectory dashed" d="${path(trajectory, x, y)}"/>`;
    s += `<path class="line actual" d="${path(values, x, y)}"/>`;
    values.forEach((v, i) => { if (v != null) s += `<circle class="dot actual" cx="${x(i)}" cy="${y(v)}" r="2.5"/>`; });
    return s + "</svg>";
  }

  // A horizontal bar 0..1 with an optional target marker.
  function bar(value, target, cls) {
    const pct = v => Math.max(0, Math.min(1, v)) * 100;
    let s = `<div class="bar ${cls || ""}"><div class="fill" style="width:${value == null ? 0 : pct(value)}%"></div>`;
    if (target != null) s += `<div class="target-line" style="left:${pct(target)}%"></div>`;
    return s + "</div>";
  }

  // Parts [{n, cls, label}] side by side in one bar, widths by count.
  function stack(parts) {
    const total = parts.reduce((a, p) => a + p.n, 0) || 1;
    return `<div class="stack">` + parts.filter(p => p.n > 0).map(p =>
      `<div class="seg ${p.cls}" style="width:${(p.n * 100) / total}%" title="${p.label}: ${p.n}">${p.n}</div>`).join("") + `</div>`;
  }

  return { spark, bar, stack };
})();
