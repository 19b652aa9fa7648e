/*
 * actstore dashboard: formatting, colours and DOM helpers (no state), used
 * by app.js through window.ASDash. Loaded before app.js.
 */
'use strict';
window.ASDash = (function () {
  const STORE_COLORS = ['#5cc8ff', '#ffb454', '#c792ea', '#5ee4a1', '#ff6b6b', '#f7d154'];
  const PALETTE = ['#5cc8ff', '#ffb454', '#5ee4a1', '#c792ea', '#ff6b6b', '#f7d154',
                   '#4dd0c8', '#ff8fb1', '#9aa5ff', '#b5e08a', '#e0a07a', '#8fb8d8'];
  const C = { muted: '#8a94a6', line: '#262c36', grid: '#1f252e', bg: '#171b22', text: '#dfe5ee' };

  /* ---- formatting ------------------------------------------------------ */

  const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  function fmtBytes(v) {
    if (v == null || !isFinite(v)) return '–';
    const neg = v < 0;
    let x = Math.abs(v), u = 0;
    while (x >= 1024 && u < UNITS.length - 1) { x /= 1024; u++; }
    const s = u === 0 ? String(Math.round(x))
      : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
    return (neg ? '−' : '') + s + ' ' + UNITS[u];
  }
  function fmtRatio(raw, stored) {
    if (!(raw > 0)) return '–';
    if (!(stored > 0)) return '∞';
    const r = raw / stored;
    return (r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2)) + '×';
  }
  function fmtInt(n) { return n == null ? '–' : Math.round(n).toLocaleString('en-US'); }
  function fmtPct(x) { return (x > 0 ? '+' : x < 0 ? '−' : '±') + Math.abs(x * 100).toFixed(1) + '%'; }
  function fmtDur(s) {
    s = Math.max(0, Math.floor(s));
    const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, sec = s % 60;
    if (h) return h + 'h ' + String(m).padStart(2, '0') + 'm';
    if (m) return m + 'm ' + String(sec).padStart(2, '0') + 's';
    return sec + ' s';
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }
  /* an opaque colour between c and the panel background (stacked fills) */
  function mix(hex, a) {
    const p = h => [1, 3, 5].map(i => parseInt(h.substr(i, 2), 16));
    const x = p(hex), y = p(C.bg);
    return 'rgb(' + x.map((v, i) => Math.round(v * a + y[i] * (1 - a))).join(',') + ')';
  }
  function storeColor(i) { return STORE_COLORS[i % STORE_COLORS.length]; }
  /* "vit B: softmax=soa:5; default=keep" -> "vit B" for legends */
  function shortLabel(l) {
    const c = l.indexOf(':');
    const s = c > 0 && c <= 16 ? l.slice(0, c) : l;
    return s.length > 18 ? s.slice(0, 17) + '…' : s;
  }
  /* The store each store is compared with: the first one whose label
   * starts with the same word ("vit A" for "vit B"), else the first. */
  function baselineOf(labels, i) {
    const w = l => (l.split(/[\s:]/)[0] || '');
    for (let j = 0; j < labels.length; j++)
      if (j !== i && w(labels[j]) === w(labels[i]) && w(labels[i]).length > 1) return j < i ? j : i;
    return 0;
  }

  function setText(id, text, cls) {
    const e = document.getElementById(id);
    if (!e) return;
    if (e.textContent !== text) e.textContent = text;
    if (cls !== undefined) e.className = cls;
  }

  function barCell(raw, stored, max) {
    const td = el('td', 'barcell');
    const bar = el('div', 'bar');
    const b = el('b'); b.style.width = (max > 0 ? 100 * raw / max : 0).toFixed(2) + '%';
    const i = el('i'); i.style.width = (max > 0 ? 100 * stored / max : 0).toFixed(2) + '%';
    bar.append(b, i);
    td.appendChild(bar);
    return td;
  }

  function row(cells) {
    const tr = el('tr');
    for (const c of cells) {
      if (c instanceof HTMLElement) { tr.appendChild(c); continue; }
      const [text, cls, title] = Array.isArray(c) ? c : [c];
      const td = el('td', cls, text);
      if (title) td.title = title;
      tr.appendChild(td);
    }
    return tr;
  }

  function head(tbl, names) {
    const tr = el('tr');
    for (const n of names) {
      const [text, cls] = Array.isArray(n) ? n : [n];
      tr.appendChild(el('th', cls, text));
    }
    const th = el('thead'); th.appendChild(tr);
    tbl.appendChild(th);
  }

  function clear(id) { const e = document.getElementById(id); e.textContent = ''; return e; }
  function fmtX(v) { return v == null || !isFinite(v) ? '–' : (v >= 10 ? v.toFixed(1) : v.toFixed(2)) + '×'; }

  return { STORE_COLORS, PALETTE, C, fmtBytes, fmtRatio, fmtInt, fmtPct, fmtDur, el, mix,
           storeColor, shortLabel, baselineOf, setText, barCell, row, head, clear, fmtX };
})();
