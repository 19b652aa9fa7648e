/*
 * actstore dashboard. Loads the service's timeline once, then follows the
 * event stream (one frame per tick: the newest timeline point, new step /
 * phase marks and each store's current tables). Everything is drawn from
 * that local copy: uPlot for the time series, plain DOM for bars and tables.
 *
 * For tests and scripts the page exposes what it received on the DOM:
 *   body[data-frames]   event-stream frames received
 *   body[data-points]   timeline points held
 *   body[data-state]    loading | live | reconnecting | polling | error
 *   .chart[data-points] points plotted, .chart[data-nonzero] series with data
 */
'use strict';
(function () {
  const MAX_POINTS = 3000;               /* ~5 min at 10 Hz (the service's ring) */
  const TABLE_MS = 500;                  /* tables and cards: 2 updates a second */
  const PHASE_BACKWARD = 2, PHASE_EVAL = 4;
  const { STORE_COLORS, PALETTE, C, fmtBytes, fmtRatio, fmtInt, fmtPct, fmtDur, el, mix,
          storeColor, shortLabel, baselineOf, setText, barCell, row, head, clear, fmtX } = window.ASDash;

  /* ---- state --------------------------------------------------------------- */

  const S = {
    seq: 0,            /* seq of the newest point held */
    t: [],             /* unix seconds per point */
    stores: [],        /* {label, cols:{live,...}, tags:{name:[]}, kinds:{name:[]}} */
    marks: [],         /* {t, store, type, step, phase} */
    now: [],           /* each store's current tables (snapshot / frame "now") */
    plans: [],         /* each store's auto plan (api/v1/plan) */
    hdr: null,
    frames: 0,
    resyncing: false,
    pending: [],       /* frames that arrived while a resync was loading */
    layoutKey: '',
    charts: [],
    dirty: false,
    tablesAt: 0,
    showAll: {},       /* store index -> show every layer (polls the snapshot) */
    fullLayers: {},
  };
  const GROUPS = ['tags', 'kinds', 'kinds_peak'];
  const COLS = ['live', 'peak', 'resident', 'saved_raw', 'saved_stored', 'saved_raw_peak',
                'saved_stored_peak', 'step', 'phase'];

  function resetTimeline(labels) {
    S.seq = 0; S.t = []; S.marks = [];
    S.stores = labels.map(l => ({ label: l, cols: Object.fromEntries(COLS.map(c => [c, []])),
                                  tags: {}, kinds: {}, kinds_peak: {},
                                  hist: { layers: {}, policies: {} } }));
  }

  /* Append a timeline document (full or increment). Points are numbered
   * seq - n + 1 .. seq; only those newer than what we hold are taken. A gap
   * (points missed while disconnected) triggers a resync from our seq. */
  function merge(doc) {
    const n = doc.t ? doc.t.length : 0;
    const labels = (doc.stores || []).map(s => s.label);
    if (labels.join('\u0001') !== S.stores.map(s => s.label).join('\u0001')) resetTimeline(labels);
    if (S.seq && doc.seq < S.seq) {      /* the service restarted: start over */
      resetTimeline(labels);
      held.clear();
      return false;
    }
    if (!n) return true;
    const first = doc.seq - n + 1;
    if (S.seq && first > S.seq + 1) return false;        /* gap */
    const from = Math.max(0, S.seq + 1 - first);
    if (from >= n) return true;
    for (let j = from; j < n; j++) S.t.push(doc.t[j]);
    doc.stores.forEach((ds, i) => {
      const st = S.stores[i];
      for (const c of COLS) {
        const src = ds[c] || [];
        for (let j = from; j < n; j++) st.cols[c].push(src[j] == null ? null : src[j]);
      }
      for (const grp of GROUPS) {
        const src = ds[grp] || {};
        for (const name of Object.keys(src)) {
          if (!st[grp][name]) st[grp][name] = new Array(S.t.length - (n - from)).fill(0);
          const a = st[grp][name];
          for (let j = from; j < n; j++) a.push(src[name][j] || 0);
        }
        for (const name of Object.keys(st[grp]))       /* a name missing here */
          while (st[grp][name].length < S.t.length) st[grp][name].push(0);
      }
    });
    for (const m of doc.marks || []) if (m.seq > S.seq) S.marks.push(m);
    S.seq = doc.seq;
    trim();
    document.body.dataset.points = S.t.length;
    return true;
  }

  function trim() {
    const extra = S.t.length - MAX_POINTS;
    if (extra <= 0) return;
    S.t.splice(0, extra);
    for (const st of S.stores) {
      for (const c of COLS) st.cols[c].splice(0, extra);
      for (const h of ['layers', 'policies']) for (const k in st.hist[h]) st.hist[h][k].splice(0, extra);
      for (const grp of GROUPS) for (const k in st[grp]) st[grp][k].splice(0, extra);
    }
    const t0 = S.t[0];
    let k = 0;
    while (k < S.marks.length && S.marks[k].t < t0) k++;
    if (k) S.marks.splice(0, k);
  }

  /* ---- charts ----------------------------------------------------------------- */

  /* Background: backward (and eval) spans of store si shaded; foreground:
   * step boundaries as thin lines, labelled when there is room. */
  function drawPhases(u, si) {
    const st = S.stores[si];
    if (!st || !S.t.length) return;
    const ph = st.cols.phase, ctx = u.ctx, bb = u.bbox;
    ctx.save();
    const span = (a, b, style) => {
      const x0 = Math.max(bb.left, u.valToPos(S.t[a], 'x', true));
      const x1 = Math.min(bb.left + bb.width, u.valToPos(S.t[Math.min(b, S.t.length - 1)], 'x', true));
      if (x1 > x0) { ctx.fillStyle = style; ctx.fillRect(x0, bb.top, x1 - x0, bb.height); }
    };
    let run = -1, runPhase = -1;
    for (let j = 0; j <= ph.length; j++) {
      const p = j < ph.length ? ph[j] : -1;
      if (p !== runPhase) {
        if (run >= 0 && runPhase === PHASE_BACKWARD) span(run, j, 'rgba(255,180,84,0.08)');
        if (run >= 0 && runPhase === PHASE_EVAL) span(run, j, 'rgba(94,228,161,0.07)');
        run = j; runPhase = p;
      }
    }
    ctx.restore();
  }

  function drawSteps(u, si) {
    const marks = S.marks.filter(m => m.type === 'step' && (si < 0 || m.store === si));
    if (!marks.length) return;
    const ctx = u.ctx, bb = u.bbox, dpr = window.devicePixelRatio || 1;
    const xs = [];
    for (const m of marks) {
      const x = u.valToPos(m.t, 'x', true);
      if (x >= bb.left && x <= bb.left + bb.width) xs.push([x, m.step]);
    }
    if (!xs.length) return;
    /* lines at least 4 px apart, labels at least 70 px apart: dense steps
     * (a fast model) thin out instead of smearing */
    ctx.save();
    ctx.strokeStyle = 'rgba(223,229,238,0.16)';
    ctx.lineWidth = dpr;
    ctx.fillStyle = C.muted;
    ctx.font = (10 * dpr) + 'px system-ui, sans-serif';
    ctx.beginPath();
    let lastLine = -1e9, lastLabel = -1e9;
    const labels = [];
    for (const [x, step] of xs) {
      if (x - lastLine < 4 * dpr) continue;
      lastLine = x;
      ctx.moveTo(Math.round(x) + 0.5, bb.top);
      ctx.lineTo(Math.round(x) + 0.5, bb.top + bb.height);
      if (x - lastLabel >= 70 * dpr && x + 40 * dpr < bb.left + bb.width) {
        lastLabel = x;
        labels.push([x, step]);
      }
    }
    ctx.stroke();
    for (const [x, step] of labels) ctx.fillText('step ' + step, x + 3 * dpr, bb.top + 11 * dpr);
    ctx.restore();
  }

  /* def: {el, title, series:[{label, color, dash, fill, get:()=>array, value}], stacked,
   *       phaseStore, stepStore, key} */
  function makeChart(def) {
    const host = def.el;
    const width = Math.max(200, host.clientWidth || 400);
    const series = [{ label: 'time', value: (u, v) => v == null ? 'now' : new Date(v * 1000).toLocaleTimeString() }];
    def.series.forEach((s, k) => {
      series.push({
        label: s.label,
        stroke: s.color,
        width: s.width || 1.6,
        dash: s.dash,
        fill: s.fill,
        points: { show: false },
        value: (u, v, si, idx) => {
          if (idx == null) {                 /* cursor off the chart: the newest value */
            idx = u.data[0].length - 1;
            if (idx < 0) return '–';
            v = u.data[si][idx];
          }
          const raw = def.stacked ? def.rawAt(k, idx) : v;
          return (def.fmt || fmtBytes)(raw);
        },
      });
    });
    const opts = {
      width, height: def.height || 230,
      cursor: { drag: { x: true, y: false, setScale: true }, points: { size: 6 } },
      select: { show: true },
      legend: { live: true },
      scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, def.fmt ? Math.max(hi * 1.1, 1.1) :
                                                                         hi > 0 ? hi * 1.08 : 1024] } },
      axes: [
        /* wall-clock seconds, never fractions: at most a label per second */
        { stroke: C.muted, grid: { stroke: C.grid, width: 1 }, ticks: { stroke: C.line, width: 1 },
          space: 70, incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600],
          values: (u, vals) => vals.map(v => new Date(v * 1000).toLocaleTimeString([],
            { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false })) },
        { stroke: C.muted, grid: { stroke: C.grid, width: 1 }, ticks: { stroke: C.line, width: 1 },
          size: 74, values: (u, vals) => vals.map(def.fmt || fmtBytes) },
      ],
      series,
      hooks: {
        drawClear: [u => { if (def.phaseStore != null) drawPhases(u, def.phaseStore); }],
        draw: [u => drawSteps(u, def.stepStore != null ? def.stepStore : -1)],
      },
    };
    const ch = { def, u: new uPlot(opts, data(def), host), zoomed: false };
    ch.u.over.addEventListener('dblclick', () => { ch.zoomed = false; });
    ch.u.over.addEventListener('mouseup', () => { ch.zoomed = ch.u.select.width > 0 || ch.zoomed; });
    return ch;
  }

  function data(def) {
    const cols = def.series.map(s => s.get());
    if (def.stacked) {           /* series k holds the sum of k..end (drawn largest first) */
      const n = S.t.length, acc = new Array(n).fill(0);
      for (let k = cols.length - 1; k >= 0; k--) {
        const c = cols[k];
        for (let j = 0; j < n; j++) acc[j] += c[j] || 0;
        cols[k] = acc.slice();
      }
    }
    return [S.t.slice()].concat(cols);
  }

  function updateChart(ch) {
    const d = data(ch.def);
    ch.u.setData(d, !ch.zoomed);
    let nonzero = 0;
    for (let k = 1; k < d.length; k++) if (d[k].some(v => v > 0)) nonzero++;
    ch.def.el.dataset.points = d[0].length;
    ch.def.el.dataset.nonzero = nonzero;
  }

  /* ---- layout: cards, arms ---------------------------------------------------- */

  function buildLayout() {
    const key = S.stores.map(s => s.label).join('\u0001');
    const kindKey = (S.kindsPeak ? 'peak;' : 'now;') + S.stores.map((s, i) =>
      activeNames(S.kindsPeak ? s.kinds_peak : s.kinds).join(',') + '|' + activeNames(s.tags).join(',') +
      '|' + topLayers(i, 5).join(',') + '|' + ratioPolicies(i).join(',')).join(';');
    if (key === S.layoutKey && kindKey === S.kindKey) return;
    const fresh = key !== S.layoutKey;
    S.layoutKey = key; S.kindKey = kindKey;
    for (const ch of S.charts) ch.u.destroy();
    S.charts = [];
    const cards = document.getElementById('cards'), arms = document.getElementById('arms');
    if (fresh) {
      cards.textContent = ''; arms.textContent = '';
      S.stores.forEach((st, i) => {
        cards.appendChild(buildCard(st, i));
        arms.appendChild(buildArm(st, i));
      });
      if (S.stores.length > 1) cards.appendChild(buildCompare());
      cards.style.setProperty('--ncards', Math.min(S.stores.length, 3));
    }
    const multi = S.stores.length > 1, many = S.stores.length > 2;
    const pre = st => multi ? shortLabel(st.label) + ' ' : '';
    /* A chart of two or three series per store: the first solid (filled
     * when alone), then [label, dash, width, get] ones; with more than two
     * stores, two series each keep the legend readable. */
    const storeChart = (id, label, alpha, get, rest) => S.charts.push(makeChart({
      el: clear(id), phaseStore: 0, stepStore: 0,
      series: S.stores.flatMap((st, i) => [
        { label: pre(st) + label, color: storeColor(i), width: 2,
          fill: multi ? undefined : 'rgba(92,200,255,' + alpha + ')', get: () => get(st) },
      ].concat(rest.slice(0, many ? 1 : 2).map(([l, dash, width, g]) =>
        ({ label: pre(st) + l, color: storeColor(i), dash, width, get: () => g(st) })))),
    }));
    storeChart('chart-live', 'live', '0.10', st => st.cols.live, [
      ['step peak', [1, 3], 1.4, st => heldSeries(st, st.cols.peak)],
      ['resident', [6, 4], 1.2, st => st.cols.resident]]);
    storeChart('chart-saved', 'stored', '0.12', st => st.cols.saved_stored, [
      ['raw (keep)', [6, 4], 1.2, st => st.cols.saved_raw],
      ['stored step peak', [1, 3], 1.4, st => heldSeries(st, st.cols.saved_stored_peak)]]);
    S.stores.forEach((st, i) => {
      for (const panelGrp of ['kinds', 'tags']) {
        /* the kinds panel shows stored bytes now, or each step's peak */
        const grp = panelGrp === 'kinds' && S.kindsPeak ? 'kinds_peak' : panelGrp;
        const host = clear('chart-' + panelGrp + '-' + i);
        const names = activeNames(st[grp]);
        const empty = document.getElementById('empty-' + panelGrp + '-' + i);
        empty.hidden = names.length > 0;
        host.hidden = !names.length;         /* an arm that has not started stays compact */
        if (!names.length) { host.dataset.points = 0; host.dataset.nonzero = 0; continue; }
        const def = {
          el: host, stacked: true, phaseStore: i, stepStore: i, height: 200,
          series: names.map((n, k) => ({ label: n.replace(/_/g, ' '), color: PALETTE[k % PALETTE.length],
                                         fill: mix(PALETTE[k % PALETTE.length], 0.45), width: 1,
                                         get: () => grp === 'kinds_peak' ? heldSeries(st, st[grp][n]) : st[grp][n] })),
        };
        def.rawAt = (k, idx) => (grp === 'kinds_peak' ? heldSeries(st, st[grp][names[k]]) : st[grp][names[k]])[idx];
        S.charts.push(makeChart(def));
      }
      /* top layers (stored step peak) and policy ratios over time */
      const lay = topLayers(i, 5), pols = ratioPolicies(i);
      const lh = clear('chart-lhist-' + i), ph = clear('chart-phist-' + i);
      lh.hidden = !lay.length;
      ph.hidden = !pols.length;
      lh.dataset.points = ph.dataset.points = 0;
      lh.dataset.nonzero = ph.dataset.nonzero = 0;
      if (lay.length)
        S.charts.push(makeChart({
          el: lh, phaseStore: i, stepStore: i, height: 170,
          series: lay.map((n, k) => ({ label: n, color: PALETTE[k % PALETTE.length], width: 1.6,
                                       get: () => st.hist.layers[n] || [] })),
        }));
      if (pols.length)
        S.charts.push(makeChart({
          el: ph, stepStore: i, height: 150, fmt: fmtX,
          series: pols.map((n, k) => ({ label: n, color: PALETTE[(k + 2) % PALETTE.length], width: 1.8,
                                        get: () => st.hist.policies[n] || [] })),
        }));
    });
  }

  /* A per-step peak series as drawn: the store resets peaks when a step
   * begins, so a tick early in a step reads near 0. Each point shows the
   * larger of its value and the previous step's last value, which turns
   * the saw-tooth of fast steps into the plateau people read. */
  function heldSeries(st, a) {
    const steps = st.cols.step, t = S.t, out = new Array(a.length);
    let cur = null, prevFinal = 0;
    for (let j = 0; j < a.length; j++) {
      if (steps[j] !== cur) {
        prevFinal = j > 0 && cur !== null ? (a[j - 1] || 0) : 0;
        cur = steps[j];
      }
      if (a[j] == null) { out[j] = null; continue; }
      /* steps shorter than a tick: also the other steps sampled in the
       * last second (each seen once, at a random point of the step) */
      let m = Math.max(a[j], prevFinal);
      for (let k = j - 1; k >= 0 && k >= j - 50 && t[j] - t[k] <= 1.0; k--)
        if (steps[k] !== steps[j] && a[k] > m) m = a[k];
      out[j] = m;
    }
    return out;
  }


  function activeNames(group) {
    /* the service's order (kinds and tags by id): stable colours */
    return Object.keys(group).filter(n => group[n].some(v => v > 0));
  }

  function kpi(parent, id, label) {
    const k = el('div', 'kpi');
    k.appendChild(el('div', 'l', label));
    const v = el('div', 'v', '–'); v.id = id;
    const s = el('div', 's', ''); s.id = id + '-sub';
    k.append(v, s);
    parent.appendChild(k);
  }

  function buildCard(st, i) {
    const c = el('div', 'card');
    c.style.setProperty('--c', storeColor(i));
    const h = el('h3');
    const sw = el('span', 'swatch'); sw.style.background = storeColor(i);
    const name = el('span', 'name', 'store ' + st.label);
    name.title = st.label;
    h.append(sw, name);
    const badge = el('span', 'badge small'); badge.id = 'card-step-' + i;
    h.appendChild(badge);
    c.appendChild(h);
    const spec = el('div', 'spec'); spec.id = 'card-spec-' + i;
    c.appendChild(spec);
    const k = el('div', 'kpis');
    kpi(k, 'k-live-' + i, 'live now');
    kpi(k, 'k-stored-' + i, 'saved stored');
    kpi(k, 'k-ratio-' + i, 'saving');
    kpi(k, 'k-res-' + i, 'resident');
    c.appendChild(k);
    return c;
  }

  function buildCompare() {
    const c = el('div', 'card compare');
    c.appendChild(el('h3', null, 'A/B: each store against its baseline (step peaks)'));
    const t = el('table'); t.id = 'compare';
    c.appendChild(t);
    return c;
  }

  function panel(title, hint) {
    const p = el('div', 'panel');
    const h = el('h2', null, title);
    if (hint) h.appendChild(el('span', 'hint', hint));
    p.appendChild(h);
    return p;
  }

  function buildArm(st, i) {
    const a = el('div', 'arm');
    a.style.setProperty('--c', storeColor(i));
    const t = el('div', 'title');
    const sw = el('span', 'swatch'); sw.style.background = storeColor(i);
    t.append(sw, el('span', null, 'store ' + st.label));
    a.appendChild(t);
    for (const [grp, title, hint] of [['kinds', 'Saved by kind', 'stored bytes, stacked'],
                                       ['tags', 'Arena by tag', 'live bytes, stacked']]) {
      const p = panel(title, hint);
      if (grp === 'kinds') {
        /* fast steps alias at the tick rate: the step peak reads steadily */
        const tog = el('a', 'toggle kinds-mode', S.kindsPeak ? 'show now' : 'show step peaks');
        tog.href = '#';
        tog.title = 'now: stored bytes at each tick · step peaks: the largest stored bytes of the step so far';
        tog.addEventListener('click', ev => {
          ev.preventDefault();
          S.kindsPeak = !S.kindsPeak;
          for (const t of document.querySelectorAll('.kinds-mode'))
            t.textContent = S.kindsPeak ? 'show now' : 'show step peaks';
          for (const h of document.querySelectorAll('.kinds-hint'))
            h.textContent = S.kindsPeak ? 'stored bytes, step peak per kind, stacked' : 'stored bytes, stacked';
          schedule();
        });
        p.querySelector('h2').appendChild(tog);
        p.querySelector('.hint').classList.add('kinds-hint');
      }
      const ch = el('div', 'chart small'); ch.id = 'chart-' + grp + '-' + i;
      ch.dataset.points = 0; ch.dataset.nonzero = 0;
      const e = el('div', 'empty', grp === 'kinds' ? 'nothing saved yet' : 'no allocations yet');
      e.id = 'empty-' + grp + '-' + i;
      p.append(ch, e);
      a.appendChild(p);
    }
    const pp = panel('Policies', 'peak bytes: raw (grey) vs stored (colour), compression ratio');
    const phc = el('div', 'chart tiny'); phc.id = 'chart-phist-' + i;
    phc.title = 'raw / stored at each step peak, per policy (recorded since this page was opened)';
    const pol = el('div', 'bars'); pol.id = 'pol-' + i;
    pp.append(phc, pol);
    a.appendChild(pp);
    const lp = panel('Layers', 'largest first, by peak raw bytes this step');
    const tog = el('a', 'toggle', 'show all'); tog.href = '#'; tog.id = 'layers-all-' + i;
    tog.addEventListener('click', ev => {
      ev.preventDefault();
      S.showAll[i] = !S.showAll[i];
      tog.textContent = S.showAll[i] ? 'top 20' : 'show all';
      if (S.showAll[i]) pollFull(); else delete S.fullLayers[i];
      renderTables(true);
    });
    lp.querySelector('h2').appendChild(tog);
    const lhc = el('div', 'chart tiny'); lhc.id = 'chart-lhist-' + i;
    lhc.title = 'stored step peak of the five largest layers (recorded since this page was opened)';
    const tbl = el('table', 'layers'); tbl.id = 'layers-' + i;
    lp.append(lhc, tbl);
    const note = el('div', 'muted'); note.id = 'layers-note-' + i;
    lp.appendChild(note);
    a.appendChild(lp);
    /* auto's plan (api/v1/plan): shown once the store has a planner */
    const pp2 = panel('Plan (auto)', 'per layer and kind: the policy auto chose, bytes per step, measured error');
    pp2.id = 'plan-panel-' + i;
    pp2.style.display = 'none';
    const psum = el('div', 'muted'); psum.id = 'plan-sum-' + i;
    const ptbl = el('table', 'layers plan'); ptbl.id = 'plan-' + i;
    pp2.append(psum, ptbl);
    a.appendChild(pp2);
    return a;
  }

  function renderPlan(i) {
    const panelEl = document.getElementById('plan-panel-' + i);
    const p = (S.plans[i] || {}).plan;
    if (!panelEl) return;
    if (!p || !p.active) { panelEl.style.display = 'none'; return; }
    panelEl.style.display = '';
    const ratio = p.planned_bytes ? (p.keep_bytes / p.planned_bytes).toFixed(1) + 'x less' : '–';
    setText('plan-sum-' + i, 'budget ' + (p.budget_bytes ? fmtBytes(p.budget_bytes) : 'none') +
            ' · keep ' + fmtBytes(p.keep_bytes) + ' · planned ' + fmtBytes(p.planned_bytes) +
            ' (' + ratio + ') · smallest reachable ' + fmtBytes(p.min_bytes) +
            ' · step ' + fmtInt(p.step) + ' · ' + fmtInt(p.probes) + ' probe steps' +
            (p.feasible ? '' : ' · DOES NOT FIT'));
    const tbl = clear('plan-' + i);
    head(tbl, ['layer', 'kind', 'policy', ['raw', 'num'], ['stored', 'num'],
               ['rel. error', 'num'], ['cosine', 'num']]);
    const body = el('tbody');
    for (const e of p.layers || [])
      body.appendChild(row([e.layer, e.kind, e.policy, [fmtBytes(e.raw_bytes), 'num'],
                            [fmtBytes(e.stored_bytes), 'num'],
                            [Number(e.rel_error).toExponential(1), 'num'],
                            [Number(e.cosine).toFixed(4), 'num']]));
    tbl.appendChild(body);
  }

  let planTimer = null;
  function pollPlan() {
    const run = async () => {
      try {
        const doc = await getJSON('api/v1/plan');
        S.plans = doc.stores || [];
        S.plans.forEach((_, i) => renderPlan(i));
      } catch (e) { /* keep the last plan */ }
    };
    run();
    if (!planTimer) planTimer = setInterval(run, 2000);
  }

  /* ---- tables and cards (throttled) -------------------------------------------- */

  function peakOr(c, k) { return c[k + '_peak_bytes'] || c[k + '_bytes'] || 0; }

  /* Peaks are per step: the store resets them when a step begins, so right
   * after a boundary most of them read 0. Tables and cards show the larger
   * of this step's peak so far and the previous step's final peak, which
   * reads steadily at any frame rate. */
  /* Fast steps (many per frame) are each seen once, often early in their
   * forward pass: the figure is then the largest final value of the steps
   * seen in the last HOLD_S seconds, and always includes the last finished
   * step (slow steps). */
  const held = new Map(), HOLD_S = 2;
  function holdPeak(key, step, c) {
    const raw = peakOr(c, 'raw'), stored = peakOr(c, 'stored');
    const now = performance.now() / 1000;
    let h = held.get(key);
    if (!h) { h = { step, raw, stored, done: [] }; held.set(key, h); }
    if (step !== h.step) {
      h.done.push({ t: now, raw: h.raw, stored: h.stored });
      h.step = step; h.raw = raw; h.stored = stored;
    } else if (raw >= h.raw) {
      h.raw = raw; h.stored = stored;
    }
    while (h.done.length > 1 && (now - h.done[0].t > HOLD_S || h.done.length > 64)) h.done.shift();
    let best = h;
    for (const d of h.done) if (d.raw > best.raw) best = d;
    return { raw: best.raw, stored: best.stored };
  }
  /* called on every frame so no step's final peak is missed */
  function observePeaks(stores) {
    stores.forEach((s, i) => {
      if (s.available === false) return;
      if (s.saved) holdPeak(i + '/total', s.step, s.saved);
      for (const p of s.policies || []) holdPeak(i + '/p/' + p.name, s.step, p);
      for (const l of s.layers || []) holdPeak(i + '/l/' + l.name, s.step, l);
      if (s.arena) holdPeak(i + '/arena', s.step, { raw_peak_bytes: s.arena.peak_bytes, stored_peak_bytes: s.arena.peak_bytes });
    });
  }

  /* Training speed from the step marks of the last 10 s (exact times). */
  function stepRate(i) {
    const ms = S.marks.filter(m => m.type === 'step' && m.store === i);
    if (ms.length < 2) return '';
    const last = ms[ms.length - 1];
    let k = ms.length - 1;
    while (k > 0 && last.t - ms[k - 1].t <= 10) k--;
    const first = ms[k], dt = last.t - first.t, n = last.step - first.step;
    if (!(dt > 0) || n <= 0) return '';
    const r = n / dt;
    return ' · ' + (r >= 10 ? r.toFixed(0) : r >= 1 ? r.toFixed(1) : r.toFixed(2)) + ' steps/s';
  }

  function renderStore(s, i) {
    const arena = s.arena || {}, saved = s.saved || {};
    setText('card-step-' + i, s.available === false ? 'unavailable' :
            'step ' + fmtInt(s.step) + ' · ' + (s.phase || '–') + stepRate(i),
            'badge small phase ' + (s.phase || ''));
    const specText = s.spec && !(s.label || '').includes(s.spec.replace(/;\s*$/, '')) ? s.spec : '';
    setText('card-spec-' + i, specText || (s.saved ? '' : 'arena only'));
    const sp = document.getElementById('card-spec-' + i);
    if (sp) sp.title = s.spec || '';
    const ap = holdPeak(i + '/arena', s.step, { raw_peak_bytes: arena.peak_bytes, stored_peak_bytes: arena.peak_bytes });
    setText('k-live-' + i, fmtBytes(arena.live_bytes));
    setText('k-live-' + i + '-sub', 'step peak ' + fmtBytes(ap.raw) +
            (arena.budget_bytes ? ' · budget ' + fmtBytes(arena.budget_bytes) : ''));
    const tp = holdPeak(i + '/total', s.step, saved);
    const rawP = tp.raw, stoP = tp.stored;
    setText('k-stored-' + i, fmtBytes(saved.stored_bytes));
    setText('k-stored-' + i + '-sub', 'of ' + fmtBytes(saved.raw_bytes) + ' raw · ' +
            fmtInt(saved.live_handles) + ' handles');
    setText('k-ratio-' + i, fmtRatio(rawP, stoP), 'v' + (rawP > stoP * 1.05 ? ' good' : ''));
    setText('k-ratio-' + i + '-sub', rawP ? 'step peak ' + fmtBytes(stoP) + ' of ' + fmtBytes(rawP) +
            ' (−' + fmtBytes(Math.max(0, rawP - stoP)) + ')' : 'nothing saved yet');
    setText('k-res-' + i, fmtBytes(arena.resident_bytes));
    setText('k-res-' + i + '-sub', 'mapped ' + fmtBytes(arena.mapped_bytes) + ' · retained ' +
            fmtBytes(arena.retained_bytes));

    /* policies: bars of peak raw vs stored, the ratio */
    const pol = document.getElementById('pol-' + i);
    if (pol) {
      pol.textContent = '';
      const ps = (s.policies || []).filter(p => p.saves || p.raw_peak_bytes)
        .map(p => Object.assign({ pk: holdPeak(i + '/p/' + p.name, s.step, p) }, p));
      if (!ps.length) pol.appendChild(el('div', 'empty', 'no saves yet'));
      const tbl = el('table');
      if (ps.length) head(tbl, ['policy', '', ['raw peak', 'num'], ['stored peak', 'num'],
                                ['ratio', 'num'], ['saves', 'num'], ['fallbacks', 'num']]);
      const max = Math.max(1, ...ps.map(p => p.pk.raw));
      const body = el('tbody');
      for (const p of ps.sort((a, b) => b.pk.raw - a.pk.raw || a.name.localeCompare(b.name)))
        body.appendChild(row([[p.name, 'pol'], barCell(p.pk.raw, p.pk.stored, max),
                              [fmtBytes(p.pk.raw), 'num'], [fmtBytes(p.pk.stored), 'num'],
                              [fmtRatio(p.pk.raw, p.pk.stored), 'num ratio'],
                              [fmtInt(p.saves), 'num'], [fmtInt(p.fallbacks), 'num' + (p.fallbacks ? ' fb' : '')]]));
      tbl.appendChild(body);
      if (ps.length) pol.appendChild(tbl);
    }

    /* layers */
    const tbl = document.getElementById('layers-' + i);
    if (tbl) {
      const layers = ((S.showAll[i] && S.fullLayers[i]) || s.layers || [])
        .map(l => Object.assign({ pk: holdPeak(i + '/l/' + l.name, s.step, l) }, l))
        .sort((a, b) => b.pk.raw - a.pk.raw || a.name.localeCompare(b.name, 'en', { numeric: true }));
      tbl.textContent = '';
      if (layers.length) {
        head(tbl, ['layer', 'policy', '', ['raw peak', 'num'], ['stored peak', 'num'], ['ratio', 'num'],
                   ['saves', 'num'], ['fallbacks', 'num'], ['meta', 'num']]);
        const max = Math.max(1, ...layers.map(l => l.pk.raw));
        const body = el('tbody');
        for (const l of layers)
          body.appendChild(row([[l.name, 'name', l.name], [l.policy || '–', 'pol'],
                                barCell(l.pk.raw, l.pk.stored, max),
                                [fmtBytes(l.pk.raw), 'num'], [fmtBytes(l.pk.stored), 'num'],
                                [fmtRatio(l.pk.raw, l.pk.stored), 'num ratio'],
                                [fmtInt(l.saves), 'num'],
                                [fmtInt(l.fallbacks), 'num' + (l.fallbacks ? ' fb' : ''),
                                 l.last_fallback ? 'last fallback: ' + l.last_fallback : ''],
                                [fmtInt(l.meta_mismatches || 0), 'num' + (l.meta_mismatches ? ' fb' : ''),
                                 l.last_meta_mismatch ? 'metadata mismatch: ' + l.last_meta_mismatch : '']]));
        tbl.appendChild(body);
      }
      const total = s.layers_total || 0;
      setText('layers-note-' + i, !layers.length ? (s.saved ? 'no layer has saved anything yet' : '') :
              layers.length < total ? 'showing ' + layers.length + ' of ' + total + ' layers' :
              total + ' layers');
    }
  }

  function renderCompare() {
    const t = document.getElementById('compare');
    if (!t || S.now.length < 2) return;
    const fig = (s, i) => ({
      live: holdPeak(i + '/arena', s.step, { raw_peak_bytes: (s.arena || {}).peak_bytes }).raw,
      stored: holdPeak(i + '/total', s.step, s.saved || {}).stored,
      resident: (s.arena || {}).resident_bytes || 0,
    });
    const labels = S.now.map(s => s.label || '');
    const figs = S.now.map(fig);
    t.textContent = '';
    head(t, ['store', 'against', ['step peak live', 'num'], ['vs', 'num'], ['saved step peak', 'num'],
             ['vs', 'num'], ['resident', 'num'], ['vs', 'num']]);
    const body = el('tbody');
    S.now.forEach((s, i) => {
      const f = figs[i], b = baselineOf(labels, i), fb = figs[b];
      /* nothing to compare yet (an arm that has not started): a dash */
      const rel = (x, y) => (b === i || !y || !x) ? ['–', 'num muted'] :
        [fmtPct(x / y - 1), 'num ' + (x < y ? 'good' : x > y ? 'bad' : '')];
      const name = el('td', 'name'); const sw = el('span', 'swatch'); sw.style.background = storeColor(i);
      name.append(sw, document.createTextNode(' ' + s.label));
      name.title = s.label;
      body.appendChild(row([name, [b === i ? 'baseline' : shortLabel(labels[b]), 'muted'],
                            [fmtBytes(f.live), 'num'], rel(f.live, fb.live),
                            [fmtBytes(f.stored), 'num'], rel(f.stored, fb.stored),
                            [fmtBytes(f.resident), 'num'], rel(f.resident, fb.resident)]));
    });
    t.appendChild(body);
  }

  function renderTables(force) {
    const now = Date.now();
    if (!force && now - S.tablesAt < TABLE_MS) return;
    S.tablesAt = now;
    S.now.forEach(renderStore);
    renderCompare();
    const s0 = S.now[0];
    if (s0) {
      /* the tab title carries the figure people glance at */
      const t = 'actstore · ' + fmtBytes((s0.arena || {}).live_bytes) + ' live · step ' + fmtInt(s0.step);
      if (document.title !== t) document.title = t;
      setText('step', 'step ' + fmtInt(s0.step));
      setText('phase', s0.phase || '–', 'badge phase ' + (s0.phase || ''));
    }
    if (S.hdr) {
      setText('uptime', 'up ' + fmtDur(S.hdr.uptime_s || 0));
      if (S.hdr.job)
        setText('fleet', S.hdr.job + ' · rank ' + S.hdr.rank + ' · ' + S.hdr.host);
      const sv = S.hdr.service || {};
      setText('svc', 'actstore ' + (S.hdr.version || '') + ' · ' + fmtInt(sv.sse_clients) +
              ' live client' + (sv.sse_clients === 1 ? '' : 's') + ' · service memory ' +
              fmtBytes(sv.memory_bytes) + ' · ' + (S.hdr.tick_hz || 10) + ' Hz');
    }
  }

  /* ---- drawing loop ------------------------------------------------------------ */

  function schedule() {
    if (S.dirty) return;
    S.dirty = true;
    requestAnimationFrame(() => {
      S.dirty = false;
      buildLayout();
      for (const ch of S.charts) updateChart(ch);
      renderTables(false);
    });
  }

  window.addEventListener('resize', () => {
    for (const ch of S.charts) {
      const w = Math.max(200, ch.def.el.clientWidth);
      ch.u.setSize({ width: w, height: ch.def.height || 230 });
    }
  });

  /* ---- network ------------------------------------------------------------------- */

  function setConn(state, text) {
    document.body.dataset.state = state;
    const d = document.getElementById('conn');
    d.className = 'dot ' + (state === 'live' ? 'on' : state === 'polling' ? 'warn' : 'off');
    setText('conn-text', text);
  }

  async function getJSON(path) {
    const r = await fetch(path, { cache: 'no-store' });
    if (!r.ok) throw new Error(path + ': HTTP ' + r.status);
    return r.json();
  }

  async function resync() {
    if (S.resyncing) return;
    S.resyncing = true;
    try {
      const doc = await getJSON('api/v1/timeline' + (S.seq ? '?since=' + S.seq : ''));
      S.hdr = doc;
      if (!merge(doc)) {            /* older than the ring: start over */
        resetTimeline((doc.stores || []).map(s => s.label));
        merge(await getJSON('api/v1/timeline'));
      }
      schedule();
    } catch (e) {
      setConn('error', 'cannot load the timeline (' + e.message + ')');
    } finally {
      S.resyncing = false;
    }
    /* Each frame carries one point: a frame skipped while the timeline
     * loaded would leave a gap behind the next one, and on a slow
     * connection every frame would start another resync (points arriving
     * only through resyncs, the per-layer history never recorded). Those
     * the resynced timeline holds already are dropped (merge would take an
     * older seq for a restarted service). */
    while (S.pending.length && !S.resyncing) {
      const d = S.pending.shift();
      if (d.seq > S.seq) applyFrame(d);
    }
  }

  /* Per-layer and per-policy series are not in the service's ring: the
   * page records them from each frame (held step peaks), aligned with the
   * timeline points; points from before the page was opened are empty. */
  function recordHistory(fresh) {
    S.now.forEach((s, i) => {
      const st = S.stores[i];
      if (!st || s.available === false) return;
      const n = S.t.length;
      const put = (group, key, v) => {
        let a = st.hist[group][key];
        if (!a) a = st.hist[group][key] = [];
        while (a.length < n) a.push(null);
        if (fresh && n) a[n - 1] = v;
      };
      for (const l of s.layers || []) put('layers', l.name, holdPeak(i + '/l/' + l.name, s.step, l).stored);
      for (const p of s.policies || []) {
        const h = holdPeak(i + '/p/' + p.name, s.step, p);
        if (h.raw > 0 && h.stored > 0) put('policies', p.name, h.raw / h.stored);
      }
      for (const g of ['layers', 'policies'])
        for (const k in st.hist[g]) while (st.hist[g][k].length < n) st.hist[g][k].push(null);
    });
  }

  /* The five layers with the largest held raw peak now (stable order). */
  function topLayers(i, n) {
    const s = S.now[i];
    if (!s || !s.layers) return [];
    return s.layers.map(l => [l.name, holdPeak(i + '/l/' + l.name, s.step, l).raw])
      .filter(x => x[1] > 0).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
      .slice(0, n).map(x => x[0]).sort();
  }
  function ratioPolicies(i) {
    const st = S.stores[i];
    return st ? Object.keys(st.hist.policies).filter(k => st.hist.policies[k].some(v => v != null)).sort() : [];
  }

  /* Merge one frame's point and record the page's history at it. */
  function applyFrame(d) {
    S.hdr = d;
    if (d.now) S.now = d.now;
    const before = S.t.length;
    if (!merge(d)) resync();
    recordHistory(S.t.length > before || S.t.length === MAX_POINTS);
  }

  function onFrame(ev) {
    let d;
    try { d = JSON.parse(ev.data); } catch (e) { return; }
    S.frames++;
    document.body.dataset.frames = S.frames;
    if (d.now) observePeaks(d.now);
    if (S.resyncing) {             /* applied in order once the resync is in (bounded) */
      S.pending.push(d);
      if (S.pending.length > MAX_POINTS) S.pending.shift();
    } else {
      applyFrame(d);
    }
    setConn('live', 'live');
    schedule();
  }

  let es = null, pollTimer = null, failures = 0;
  function connect() {
    if (!window.EventSource) { startPolling(); return; }
    es = new EventSource('api/v1/events');
    es.onmessage = ev => { failures = 0; onFrame(ev); };
    es.onopen = () => setConn('live', 'live');
    es.onerror = () => {
      failures++;
      setConn('reconnecting', 'reconnecting…');
      if (failures >= 5 && es.readyState === EventSource.CLOSED) { es.close(); startPolling(); }
    };
  }

  /* Fallback when the event stream is not available: poll once a second. */
  function startPolling() {
    if (pollTimer) return;
    setConn('polling', 'polling (no event stream)');
    pollTimer = setInterval(async () => {
      try {
        await resync();
        const snap = await getJSON('api/v1/snapshot');
        S.now = snap.stores || [];
        schedule();
      } catch (e) { setConn('error', 'service unreachable'); }
    }, 1000);
  }

  let fullTimer = null;
  function pollFull() {
    const run = async () => {
      if (!Object.values(S.showAll).some(Boolean)) { clearInterval(fullTimer); fullTimer = null; return; }
      try {
        const snap = await getJSON('api/v1/snapshot');
        (snap.stores || []).forEach((s, i) => { if (S.showAll[i]) S.fullLayers[i] = s.layers || []; });
        renderTables(true);
      } catch (e) { /* keep the last list */ }
    };
    run();
    if (!fullTimer) fullTimer = setInterval(run, 2000);
  }

  async function start() {
    try {
      const [tl, snap] = await Promise.all([getJSON('api/v1/timeline'), getJSON('api/v1/snapshot')]);
      S.hdr = snap;
      S.now = snap.stores || [];
      merge(tl);
      schedule();
      renderTables(true);
    } catch (e) {
      setConn('error', 'cannot reach the service (' + e.message + ')');
    }
    connect();
    pollPlan();
  }

  if (typeof uPlot === 'undefined') {
    document.body.dataset.state = 'error';
    document.getElementById('conn-text').textContent = 'uPlot failed to load';
    return;
  }
  start();
})();
