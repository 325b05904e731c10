// Hand-drawn SVG charts: no chart library, nothing fetched from outside.
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

  // A line chart of monthly series: [{values, cls, dashed, dots}], labels under the x axis.
  function line(opts) {
    const W = opts.width || 1400, H = opts.height || 380;
    const L = 80, R = 40, T = 18, B = 44;
    const n = opts.labels.length;
    const [lo, hi] = extent(opts.series.map(s => s.values));
    const x = i => L + (n <= 1 ? (W - L - R) / 2 : (i * (W - L - R)) / (n - 1));
    const y = v => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
    let s = `<svg ${NS} class="chart" viewBox="0 0 ${W} ${H}" role="img">`;
    const ticks = 4;
    // Enough decimals that neighbouring ticks never read the same.
    const step = (hi - lo) / ticks;
    const digits = Math.min(6, Math.max(0, Math.ceil(-Math.log10(step)) + 1));
    for (let k = 0; k <= ticks; k++) {
      const v = lo + ((hi - lo) * k) / ticks, yy = y(v);
      s += `<line class="grid" x1="${L}" x2="${W - R}" y1="${yy}" y2="${yy}"/>`;
      s += `<text class="tick" x="${L - 10}" y="${yy + 5}" text-anchor="end">${v.toFixed(digits)}</text>`;
    }
    const every = Math.max(1, Math.ceil(n / 12));
    opts.labels.forEach((lab, i) => {
      if (i % every === 0 || i === n - 1) s += `<text class="tick" x="${x(i)}" y="${H - 14}" text-anchor="${i === n - 1 && n > 1 ? "end" : "middle"}">${lab}</text>`;
    });
    for (const ser of opts.series) {
      s += `<path class="line ${ser.cls}${ser.dashed ? " dashed" : ""}" d="${path(ser.values, x, y)}"/>`;
      if (ser.dots) ser.values.forEach((v, i) => {
        if (v != null) s += `<circle class="dot ${ser.cls}" cx="${x(i)}" cy="${y(v)}" r="5"><title>${opts.labels[i]}: ${opts.fmt ? opts.fmt(v) : v}</title></circle>`;
      });
    }
    return s + "</svg>";
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

  return { line, spark, bar, stack };
})();
