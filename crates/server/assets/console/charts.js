// Charts drawn as SVG elements (no library, no inline style): vertical bars (stacked by
// series), lines with points, and horizontal bars. Every mark carries its figures as data-*
// attributes (data-start, data-series, data-value) and a <title> tooltip.

const NS = 'http://www.w3.org/2000/svg';
const W = 520;
const H = 200;
const PAD = { left: 44, right: 12, top: 10, bottom: 26 };

function el(name, attrs = {}, parent) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (parent) parent.appendChild(node);
  return node;
}

function title(node, text) {
  el('title', {}, node).textContent = text;
}

function frame(id, height = H) {
  const svg = el('svg', {
    class: 'chart', viewBox: `0 0 ${W} ${height}`, role: 'img', 'data-chart': id,
    preserveAspectRatio: 'xMidYMid meet',
  });
  return svg;
}

/** A round upper bound for the axis, and its ticks (whole numbers for counts). */
function scale(max, counts = false) {
  if (!(max > 0)) return { top: 1, ticks: [0, 1] };
  const rough = max / 4;
  const mag = 10 ** Math.floor(Math.log10(rough));
  let step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= rough) || rough;
  if (counts) step = Math.max(1, Math.round(step));
  const top = Math.ceil(max / step) * step;
  const ticks = [];
  for (let v = 0; v <= top + step / 2; v += step) ticks.push(Number(v.toFixed(6)));
  return { top, ticks };
}

function axes(svg, labels, s, format) {
  const plotH = H - PAD.top - PAD.bottom;
  for (const tick of s.ticks) {
    const y = PAD.top + plotH - (tick / s.top) * plotH;
    el('line', { class: 'grid-line', x1: PAD.left, x2: W - PAD.right, y1: y, y2: y }, svg);
    const text = el('text', { x: PAD.left - 6, y: y + 3, 'text-anchor': 'end' }, svg);
    text.textContent = format(tick);
  }
  el('line', { class: 'axis', x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom }, svg);
  const step = (W - PAD.left - PAD.right) / Math.max(labels.length, 1);
  const every = Math.max(1, Math.ceil(labels.length / 10));
  labels.forEach((label, i) => {
    if (i % every !== 0 && i !== labels.length - 1) return;
    const x = PAD.left + step * (i + 0.5);
    const text = el('text', { x, y: H - PAD.bottom + 14, 'text-anchor': 'middle' }, svg);
    text.textContent = label.text;
  });
  return step;
}

/**
 * Bars per bucket, the series stacked. `labels`: [{start, text}]; `series`: [{name, cls,
 * values}] with one value per label.
 */
export function barChart({ id, labels, series, format = String }) {
  const svg = frame(id);
  const sums = labels.map((_, i) => series.reduce((acc, s) => acc + (s.values[i] || 0), 0));
  const s = scale(Math.max(0, ...sums), true);
  const step = axes(svg, labels, s, format);
  const plotH = H - PAD.top - PAD.bottom;
  const width = Math.max(2, step * 0.7);
  labels.forEach((label, i) => {
    let base = 0;
    for (const one of series) {
      const value = one.values[i] || 0;
      if (value <= 0) continue;
      const y0 = PAD.top + plotH - ((base + value) / s.top) * plotH;
      const h = (value / s.top) * plotH;
      const rect = el('rect', {
        class: `bar ${one.cls}`, x: PAD.left + step * i + (step - width) / 2, y: y0,
        width, height: Math.max(h, 1), 'data-start': label.start, 'data-series': one.name,
        'data-value': value,
      }, svg);
      title(rect, `${label.text} · ${one.name}: ${format(value)}`);
      base += value;
    }
  });
  return svg;
}

/** Lines with a point per bucket that has a value (`null`: none). */
export function lineChart({ id, labels, series, format = String, max }) {
  const svg = frame(id);
  const all = series.flatMap((one) => one.values.filter((v) => v !== null && v !== undefined));
  const s = scale(max ?? Math.max(0, ...all));
  const step = axes(svg, labels, s, format);
  const plotH = H - PAD.top - PAD.bottom;
  for (const one of series) {
    let d = '';
    let pen = false;
    const points = [];
    labels.forEach((label, i) => {
      const value = one.values[i];
      if (value === null || value === undefined) { pen = false; return; }
      const x = PAD.left + step * (i + 0.5);
      const y = PAD.top + plotH - (value / s.top) * plotH;
      d += `${pen ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)} `;
      pen = true;
      points.push({ x, y, value, label });
    });
    if (d) el('path', { class: `line ${one.cls}`, d: d.trim() }, svg);
    for (const p of points) {
      const dot = el('circle', {
        class: `point ${one.cls}`, cx: p.x, cy: p.y, r: 3, 'data-start': p.label.start,
        'data-series': one.name, 'data-value': p.value,
      }, svg);
      title(dot, `${p.label.text} · ${one.name}: ${format(p.value)}`);
    }
  }
  return svg;
}

/** One horizontal bar per item: [{label, value}], largest first. */
export function hbarChart({ id, items, format = String }) {
  const sorted = [...items].sort((a, b) => b.value - a.value).slice(0, 12);
  const row = 22;
  const height = Math.max(1, sorted.length) * row + 10;
  const svg = frame(id, height);
  const left = 150;
  const max = Math.max(1, ...sorted.map((i) => i.value));
  sorted.forEach((item, i) => {
    const y = 5 + i * row;
    const label = el('text', { x: left - 8, y: y + 14, 'text-anchor': 'end' }, svg);
    label.textContent = item.label;
    const width = Math.max(1, (item.value / max) * (W - left - 60));
    const rect = el('rect', {
      class: `bar s${i % 8}`, x: left, y: y + 3, width, height: row - 8,
      'data-series': item.label, 'data-value': item.value,
    }, svg);
    title(rect, `${item.label}: ${format(item.value)}`);
    const value = el('text', { class: 'value-label', x: left + width + 6, y: y + 14 }, svg);
    value.textContent = format(item.value);
  });
  return svg;
}

/** A legend: a swatch and a name per series. */
export function legend(series) {
  const box = document.createElement('div');
  box.className = 'legend';
  for (const one of series) {
    const item = document.createElement('span');
    const swatch = document.createElement('span');
    swatch.className = `swatch ${one.cls}`;
    item.append(swatch, document.createTextNode(one.name));
    box.appendChild(item);
  }
  return box;
}
