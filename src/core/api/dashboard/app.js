// berth dashboard: one EventSource, a local mirror of compact rows, and DOM updates batched
// into one animation frame. Rows are created once and patched in place; nothing is rebuilt per
// event, so a thousand tasks stay smooth.
(() => {
  'use strict';
  const $ = (s, r = document) => r.querySelector(s);
  const CATS = ['clusters', 'instances', 'services', 'tasks', 'policies', 'sync'];
  const KEY = { clusters: 'name', instances: 'id', services: 'name', tasks: 'id', policies: 'name', sync: 'name' };
  const WINDOW_MS = 10 * 60 * 1000;

  const S = { controllers: [], metrics: null, history: [], svcHistory: {}, events: [] };
  CATS.forEach(c => { S[c] = new Map(); });
  const dirty = { full: true, controllers: true, metrics: true, events: [] };
  CATS.forEach(c => { dirty[c] = new Set(); });
  const perf = window.__berth = { firstRender: null, renders: 0, batches: 0, lastRender: 0, errors: [] };
  window.addEventListener('error', e => perf.errors.push(String(e.message)));

  // ---- formatting ----------------------------------------------------------------------------
  const esc = s => String(s ?? '').replace(/[&<>"]/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]));
  const short = id => (id || '').slice(0, 8);
  function bytes(n) {
    if (n == null || isNaN(n)) return '–';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0; n = Number(n);
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (n >= 100 || i === 0 ? n.toFixed(0) : n.toFixed(1)) + ' ' + u[i];
  }
  const pct = v => (v == null || isNaN(v)) ? '–' : (v >= 100 ? v.toFixed(0) : v.toFixed(1)) + '%';
  const pad = n => (n < 10 ? '0' : '') + n;
  function clock(t) {
    if (!t) return '–';
    const d = new Date(t);
    if (isNaN(d)) return '–';
    const hms = pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
    const now = new Date();
    return d.toDateString() === now.toDateString() ? hms : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
  }
  function ago(t) {
    if (!t) return '–';
    const s = Math.max(0, (Date.now() - new Date(t).getTime()) / 1000);
    if (s < 60) return Math.round(s) + 's ago';
    if (s < 3600) return Math.round(s / 60) + 'm ago';
    return Math.round(s / 3600) + 'h ago';
  }
  const pill = (s, extra) => s ? `<span class="pill ${esc(s)}"${extra || ''}>${esc(s)}</span>` : '';

  // Set text/HTML only when it changed (no layout work for unchanged cells).
  function setText(td, v) { v = String(v); if (td._v !== v) { td._v = v; td.textContent = v; } }
  function setHTML(td, v) { if (td._h !== v) { td._h = v; td.innerHTML = v; } }

  // ---- a keyed, sorted table body patched in place ------------------------------------------
  class Rows {
    constructor(tbody, cols, sortKey, build, update) {
      this.tbody = tbody; this.cols = cols; this.sortKey = sortKey;
      this.build = build; this.update = update; this.rows = new Map(); this.order = [];
    }
    find(k) { // binary search in this.order (array of [sortKey, id])
      let lo = 0, hi = this.order.length;
      while (lo < hi) { const m = (lo + hi) >> 1; if (this.order[m][0] < k) lo = m + 1; else hi = m; }
      return lo;
    }
    remove(id) {
      const tr = this.rows.get(id); if (!tr) return;
      const i = this.find(tr._k);
      if (this.order[i] && this.order[i][1] === id) this.order.splice(i, 1);
      else this.order = this.order.filter(o => o[1] !== id);
      tr.remove(); this.rows.delete(id);
    }
    put(id, row) {
      if (!row) return this.remove(id);
      const k = this.sortKey(row) + '\u0000' + id;
      let tr = this.rows.get(id);
      if (tr && tr._k !== k) { this.remove(id); tr = null; }
      if (!tr) {
        tr = document.createElement('tr');
        tr._c = [];
        for (let i = 0; i < this.cols; i++) tr.appendChild(tr._c[i] = document.createElement('td'));
        tr._k = k;
        this.build && this.build(tr, id, row);
        const i = this.find(k);
        const next = this.order[i] ? this.rows.get(this.order[i][1]) : null;
        this.order.splice(i, 0, [k, id]);
        this.tbody.insertBefore(tr, next);
        this.rows.set(id, tr);
      }
      this.update(tr, row, id);
      return tr;
    }
    clear() { this.tbody.textContent = ''; this.rows.clear(); this.order = []; }
    // Everything at once (a snapshot): sort once, build off-document, attach once.
    bulk(entries) {
      this.clear();
      const items = entries.map(([id, row]) => [this.sortKey(row) + '\u0000' + id, id, row]);
      items.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
      const frag = document.createDocumentFragment();
      for (const [k, id, row] of items) {
        const tr = document.createElement('tr');
        tr._c = [];
        for (let i = 0; i < this.cols; i++) tr.appendChild(tr._c[i] = document.createElement('td'));
        tr._k = k;
        this.build && this.build(tr, id, row);
        this.update(tr, row, id);
        this.order.push([k, id]);
        this.rows.set(id, tr);
        frag.appendChild(tr);
      }
      this.tbody.appendChild(frag);
    }
  }

  // ---- services -----------------------------------------------------------------------------
  const services = new Rows($('#services tbody'), 7, r => r.name || '', (tr, id) => {
    tr.dataset.service = id;
    tr._c[4].className = 'num'; tr._c[5].className = 'num'; tr._c[6].className = 'ev';
    tr._spark = document.createElement('canvas'); tr._spark.className = 'spark';
    tr._cpu = document.createElement('span'); tr._cpu.className = 'bar-label';
    tr._c[4].append(tr._spark, tr._cpu);
  }, (tr, r, id) => {
    setHTML(tr._c[0], `<span class="name">${esc(r.name)}</span> <span class="muted">${esc(r.cl)}</span>` +
      (r.deleting ? ' ' + pill('DRAINING') : ''));
    const primary = (r.deps || []).find(d => d.st === 'PRIMARY');
    setHTML(tr._c[1], `<span class="mono">${esc(primary ? primary.td : r.td)}</span>`);
    const want = r.desired || 0, run = r.running || 0, pend = r.pending || 0;
    const w = want ? Math.min(100, run / want * 100) : (run ? 100 : 0);
    setHTML(tr._c[2], `<div class="count"><span class="running">${run}</span><span class="of"> / </span>` +
      `<span class="desired">${want}</span>${pend ? `<span class="pending">+${pend} pending</span>` : ''}</div>` +
      `<div class="progress"><i style="width:${w.toFixed(0)}%"></i></div>`);
    setHTML(tr._c[3], (r.deps || []).map(d =>
      `<span class="dep" title="${esc(d.td)} · ${d.r}/${d.d} running${d.f ? ', ' + d.f + ' failed' : ''}${d.rr ? ' · ' + esc(d.rr) : ''}">` +
      `${pill(d.ro === 'COMPLETED' && d.st === 'PRIMARY' ? 'COMPLETED' : d.ro)} <span class="muted">${esc(d.st.toLowerCase())} ${d.r}/${d.d}</span></span>`).join('') || '–');
    const ev = (r.ev || [])[0];
    setText(tr._c[6], ev ? ev.m : '–');
    tr._c[6].title = ev ? clock(ev.t) + ' ' + ev.m : '';
    tr.dataset.running = run;
    tr.dataset.desired = want;
  });

  function serviceUsage(tr, id) {
    const m = S.metrics && S.metrics.svc && S.metrics.svc[id];
    setText(tr._cpu, m ? pct(m[0]) : '–');
    setText(tr._c[5], m ? `${pct(m[1])} · ${bytes(m[3])}` : '–');
    spark(tr._spark, S.svcHistory[id] || []);
  }

  // ---- tasks --------------------------------------------------------------------------------
  const filterBox = $('#task-filter'), showStopped = $('#show-stopped');
  function taskVisible(r) {
    if (!showStopped.checked && r.ls === 'STOPPED') return false;
    const q = filterBox.value.trim().toLowerCase();
    if (!q) return true;
    return [r.id, r.svc, r.td, r.ls, r.h, r.inst].some(v => v && String(v).toLowerCase().includes(q));
  }
  // A pill patched in place (no HTML parsing per update).
  function setPill(el, v) {
    v = v || '';
    if (el._v === v) return;
    el._v = v; el.className = v ? 'pill ' + v : 'muted'; el.textContent = v || '–';
  }
  const tasks = new Rows($('#tasks tbody'), 10,
    r => (r.ls === 'STOPPED' ? '1' : '0') + (r.svc || '~' + (r.td || '')),
    (tr, id) => {
      tr.dataset.task = id;
      tr._c[0].className = 'mono'; tr._c[2].className = 'mono';
      tr._c[6].className = 'num'; tr._c[7].className = 'num'; tr._c[8].className = 'mono';
      tr._c[0].textContent = short(id); tr._c[0].title = id;
      tr._st = document.createElement('span'); tr._stop = document.createElement('span');
      tr._stop.className = 'muted'; tr._c[3].append(tr._st, tr._stop);
      tr._hl = document.createElement('span'); tr._c[4].append(tr._hl);
    }, (tr, r) => {
      setText(tr._c[1], r.svc || 'run-task');
      setText(tr._c[2], r.td || '–');
      setPill(tr._st, r.ls);
      setText(tr._stop, r.ds === 'STOPPED' && r.ls !== 'STOPPED' ? ' → stop' : '');
      const why = r.sr || '';
      if (tr._why !== why) { tr._why = why; tr._c[3].title = why; }
      setPill(tr._hl, r.h && r.h !== 'UNKNOWN' ? r.h : '');
      setText(tr._c[5], r.inst || '–');
      setText(tr._c[8], r.p || '–');
      if (tr._at !== r.at) { tr._at = r.at; setText(tr._c[9], clock(r.at)); }
      const ls = r.ls || '';
      if (tr._ls !== ls) { tr._ls = ls; tr.dataset.status = ls; }
      const vis = taskVisible(r);
      if (tr.hidden === vis) tr.hidden = !vis;
      taskUsage(tr, r.id);
    });
  function taskUsage(tr, id) {
    const u = S.metrics && S.metrics.task && S.metrics.task[id];
    setText(tr._c[6], u ? pct(u[0]) : '–');
    setText(tr._c[7], u ? bytes(u[1]) : '–');
  }
  function refilter() {
    for (const [id, tr] of tasks.rows) { const r = S.tasks.get(id); if (r) tr.hidden = !taskVisible(r); }
    counts();
  }
  filterBox.addEventListener('input', refilter);
  showStopped.addEventListener('change', refilter);

  // ---- instances ----------------------------------------------------------------------------
  function bar(used, total, cls) {
    const p = total ? Math.min(100, used / total * 100) : 0;
    return `<span class="bar ${cls || ''} ${p > 85 ? 'hot' : ''}"><i style="width:${p.toFixed(1)}%"></i></span>`;
  }
  const instances = new Rows($('#instances tbody'), 5, r => r.id || '', (tr, id) => {
    tr.dataset.instance = id; tr._c[4].className = 'num';
  }, (tr, r, id) => {
    setHTML(tr._c[0], `<span class="name">${esc(r.id)}</span> <span class="muted">${esc(r.cl)}</span>`);
    setHTML(tr._c[1], `<span class="agent-dot ${r.up ? 'up' : ''}"></span>${r.up ? 'connected' : 'disconnected'}` +
      (r.status && r.status !== 'ACTIVE' ? ' ' + pill(r.status) : ''));
    const [creg, crem] = r.cpu || [0, 0], [mreg, mrem] = r.mem || [0, 0];
    const use = S.metrics && S.metrics.inst && S.metrics.inst[id];
    setHTML(tr._c[2], bar(creg - crem, creg) + `<span class="bar-label">${creg - crem} / ${creg} units</span>` +
      `<span class="use">${use ? use[2].toFixed(2) + ' cores in use' : '&nbsp;'}</span>`);
    setHTML(tr._c[3], bar(mreg - mrem, mreg, 'mem') + `<span class="bar-label">${mreg - mrem} / ${mreg} MiB</span>` +
      `<span class="use">${use ? bytes(use[3]) + ' in use' : '&nbsp;'}</span>`);
    setText(tr._c[4], r.run ?? 0);
  });

  const policies = new Rows($('#policies tbody'), 5, r => r.name || '', (tr) => {
    tr._c[2].className = 'num'; tr._c[3].className = 'num'; tr._c[4].className = 'ev';
  }, (tr, r) => {
    setHTML(tr._c[0], `<span class="name">${esc(r.name)}</span>`);
    setText(tr._c[1], r.svc || '–');
    setText(tr._c[2], `${r.metric} ${r.cur == null ? '–' : pct(r.cur)} / ${pct(r.target)}`);
    setText(tr._c[3], `${r.desired ?? '–'} (${r.min}–${r.max})`);
    setText(tr._c[4], r.msg || '–');
  });

  // ---- small widgets ------------------------------------------------------------------------
  function renderClusters() {
    const box = $('#clusters');
    const cl = S.metrics && S.metrics.cl || {};
    const per = {};
    for (const t of S.tasks.values()) {
      const c = per[t.cl || 'default'] || (per[t.cl || 'default'] = { run: 0, pend: 0 });
      if (t.ls === 'RUNNING') c.run++; else if (t.ls !== 'STOPPED') c.pend++;
    }
    const inst = {};
    for (const i of S.instances.values()) { const c = inst[i.cl] || (inst[i.cl] = { n: 0, up: 0 }); c.n++; if (i.up) c.up++; }
    const names = [...S.clusters.keys()].sort();
    box.innerHTML = names.map(n => {
      const m = cl[n], p = per[n] || { run: 0, pend: 0 }, i = inst[n] || { n: 0, up: 0 };
      return `<div class="cluster" data-cluster="${esc(n)}"><span class="cname">${esc(n)}</span>` +
        `${pill((S.clusters.get(n) || {}).status || 'ACTIVE')}<div class="meta">` +
        `<span><b>${p.run}</b> running${p.pend ? ', ' + p.pend + ' pending' : ''}</span>` +
        `<span>${i.up}/${i.n} instances</span>` +
        `<span>CPU ${m ? pct(m[0]) : '–'}</span><span>mem ${m ? pct(m[1]) : '–'}</span></div></div>`;
    }).join('') || '<div class="muted">no clusters</div>';
    const sync = [...S.sync.values()];
    $('#sync').innerHTML = sync.map(s =>
      `<span title="${esc(s.src || '')}">GitOps <b>${esc(s.name)}</b></span>: ` +
      `${s.state ? pill(s.state === 'Synced' ? 'COMPLETED' : 'IN_PROGRESS').replace(/>[A-Z_]+</, '>' + esc(s.state) + '<') : ''} ` +
      `${s.commit ? `<span class="sha mono">${esc(String(s.commit).slice(0, 12))}</span>${s.dirty ? '<span class="muted">+dirty</span>' : ''}` : ''} ` +
      `${s.at ? '<span>' + ago(s.at) + '</span>' : ''}${s.msg ? ` <span class="err">${esc(s.msg)}</span>` : ''}`
    ).join('<br>');
  }

  function renderControllers() {
    const lead = (S.controllers || []).find(c => 'leader' in c);
    const el = $('#leader');
    if (el) {
      el.textContent = !lead ? 'reconcile status'
        : lead.leader ? `leader ${lead.leader} · term ${lead.term}${lead.active ? ' (this process)' : ''}`
        : 'no leader elected';
    }
    const tb = $('#controllers tbody');
    tb.innerHTML = (S.controllers || []).map(c =>
      `<tr data-controller="${esc(c.name)}"><td class="name">${esc(c.name)}</td>` +
      `<td class="num">${c.queueDepth}</td><td class="num">${c.inFlight}</td>` +
      `<td class="num">${c.reconcilesTotal}</td><td class="num ${c.errorsTotal ? 'err' : ''}"` +
      ` title="${esc(c.lastError || '')}">${c.errorsTotal}</td>` +
      `<td>${c.lastReconcileAt ? ago(c.lastReconcileAt) + ` <span class="muted">${c.lastReconcileMs.toFixed(1)} ms</span>` : '–'}</td></tr>`
    ).join('') || '<tr><td class="muted" colspan="6">no controllers in this process</td></tr>';
  }

  const evList = $('#events');
  function addEvent(e, fresh) {
    const li = document.createElement('li');
    if (fresh) li.className = 'new';
    const who = e.service || (e.kind === 'task' ? 'run-task' : e.name);
    li.innerHTML = `<span class="t">${esc(clock(e.t).split(' ').pop())}</span>` +
      `<span><span class="who">${esc(who)}</span>${esc(e.message)}</span>`;
    li.title = clock(e.t);
    evList.insertBefore(li, evList.firstChild);
    while (evList.childElementCount > 120) evList.lastChild.remove();
  }

  function counts() {
    let run = 0, pend = 0, stopped = 0, shown = 0;
    for (const t of S.tasks.values()) {
      if (t.ls === 'RUNNING') run++; else if (t.ls === 'STOPPED') stopped++; else pend++;
    }
    for (const tr of tasks.rows.values()) if (!tr.hidden) shown++;
    let up = 0; for (const i of S.instances.values()) if (i.up) up++;
    const m = S.metrics && S.metrics.point;
    $('#summary').innerHTML =
      `<span><b>${S.services.size}</b>services</span><span><b>${run}</b>tasks running</span>` +
      (pend ? `<span><b>${pend}</b>pending</span>` : '') +
      `<span><b>${up}/${S.instances.size}</b>instances</span>` +
      (m ? `<span><b>${m[1].toFixed(2)}</b>cores</span><span><b>${bytes(m[2])}</b>memory</span>` : '');
    $('#task-count').textContent = `${shown} shown · ${run} running · ${pend} pending · ${stopped} stopped`;
    $('#svc-count').textContent = S.services.size ? S.services.size + ' services' : '';
    $('#inst-count').textContent = S.instances.size ? S.instances.size + ' instances' : '';
    $('#services-empty').hidden = S.services.size > 0;
    $('#policies-card').hidden = S.policies.size === 0;
  }

  // ---- charts (canvas) ----------------------------------------------------------------------
  // Canvas sizes come from a ResizeObserver (or fixed sizes): reading clientWidth while the
  // tables are being patched would force a synchronous layout of the whole page.
  const sizes = new WeakMap();
  const ro = typeof ResizeObserver === 'function' ? new ResizeObserver(es => {
    for (const e of es) sizes.set(e.target, [e.contentRect.width, e.contentRect.height]);
    dirty.metrics = true; schedule();
  }) : null;
  function sizeCanvas(c, fixed) {
    const dpr = window.devicePixelRatio || 1;
    let wh = fixed || sizes.get(c);
    if (!wh) { wh = [c.clientWidth || 300, c.clientHeight || Number(c.getAttribute('height')) || 100]; sizes.set(c, wh); if (ro) ro.observe(c); }
    const [w, h] = wh;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
    }
    const g = c.getContext('2d'); g.setTransform(dpr, 0, 0, dpr, 0, 0);
    return [g, w, h];
  }
  function chart(c, pts, idx, color, fmt) {
    const [g, w, h] = sizeCanvas(c);
    g.clearRect(0, 0, w, h);
    const now = Date.now(), t0 = now - WINDOW_MS;
    const data = pts.filter(p => p[0] >= t0);
    let max = 0; for (const p of data) max = Math.max(max, p[idx]);
    max = max > 0 ? max * 1.15 : 1;
    const padL = 4, padB = 16, padT = 6;
    const X = t => padL + (t - t0) / WINDOW_MS * (w - padL - 4);
    const Y = v => padT + (1 - v / max) * (h - padT - padB);
    g.strokeStyle = 'rgba(139,155,184,.15)'; g.lineWidth = 1;
    for (let i = 0; i <= 3; i++) { const y = padT + i * (h - padT - padB) / 3; g.beginPath(); g.moveTo(0, y + .5); g.lineTo(w, y + .5); g.stroke(); }
    g.fillStyle = '#8b9bb8'; g.font = '10px system-ui, sans-serif';
    g.fillText(fmt(max), padL + 2, padT + 10);
    g.fillText('-10m', padL, h - 3); g.fillText('now', w - 24, h - 3);
    if (data.length < 1) { g.fillText('waiting for samples…', w / 2 - 50, h / 2); return; }
    const grad = g.createLinearGradient(0, padT, 0, h - padB);
    grad.addColorStop(0, color + '66'); grad.addColorStop(1, color + '05');
    g.beginPath(); g.moveTo(X(data[0][0]), Y(0));
    for (const p of data) g.lineTo(X(p[0]), Y(p[idx]));
    g.lineTo(X(data[data.length - 1][0]), Y(0)); g.closePath(); g.fillStyle = grad; g.fill();
    g.beginPath();
    data.forEach((p, i) => i ? g.lineTo(X(p[0]), Y(p[idx])) : g.moveTo(X(p[0]), Y(p[idx])));
    g.strokeStyle = color; g.lineWidth = 1.8; g.stroke();
  }
  function spark(c, pts) {
    const [g, w, h] = sizeCanvas(c, [80, 22]);
    g.clearRect(0, 0, w, h);
    if (pts.length < 2) return;
    const data = pts.slice(-60);
    let max = 100; for (const p of data) max = Math.max(max, p[1]);
    const t0 = data[0][0], t1 = data[data.length - 1][0] || t0 + 1;
    const X = t => (t - t0) / Math.max(1, t1 - t0) * (w - 2) + 1, Y = v => h - 2 - v / max * (h - 4);
    g.beginPath(); data.forEach((p, i) => i ? g.lineTo(X(p[0]), Y(p[1])) : g.moveTo(X(p[0]), Y(p[1])));
    g.strokeStyle = '#2dd4bf'; g.lineWidth = 1.4; g.stroke();
  }
  // Measure the charts before any table exists.
  sizeCanvas($('#chart-cpu')); sizeCanvas($('#chart-mem'));
  function renderCharts() {
    chart($('#chart-cpu'), S.history, 1, '#2dd4bf', v => v.toFixed(2) + ' cores');
    chart($('#chart-mem'), S.history, 2, '#818cf8', v => bytes(v));
    const p = S.history[S.history.length - 1];
    setText($('#cpu-now'), p ? p[1].toFixed(2) + ' cores' : '–');
    setText($('#mem-now'), p ? bytes(p[2]) : '–');
  }

  // ---- one frame: apply what changed --------------------------------------------------------
  let scheduled = false;
  function schedule() {
    if (scheduled) return;
    scheduled = true;
    const run = () => { if (scheduled) { scheduled = false; render(); } };
    requestAnimationFrame(run);
    setTimeout(run, 60); // hidden tabs get no animation frames
  }
  const VIEWS = { services, tasks, instances, policies };
  function render() {
    const t0 = performance.now();
    if (dirty.full) {
      for (const [cat, view] of Object.entries(VIEWS)) view.bulk([...S[cat]]);
      dirty.full = false;
      dirty.metrics = true; dirty.controllers = true;
      evList.textContent = '';
      S.events.forEach(e => addEvent(e, false));
    } else {
      for (const [cat, view] of Object.entries(VIEWS)) {
        for (const id of dirty[cat]) view.put(id, S[cat].get(id));
      }
    }
    for (const e of dirty.events) addEvent(e, true);
    dirty.events = [];
    if (dirty.metrics) {
      for (const [id, tr] of services.rows) serviceUsage(tr, id);
      const tu = (S.metrics && S.metrics.task) || {};
      for (const [id, tr] of tasks.rows) if (tu[id] || tr._c[6]._v !== '–') taskUsage(tr, id);
      for (const [id, tr] of instances.rows) instances.update(tr, S.instances.get(id), id);
      renderCharts();
    } else {
      for (const id of dirty.services) { const tr = services.rows.get(id); if (tr) serviceUsage(tr, id); }
    }
    if (dirty.controllers) renderControllers();
    renderClusters();
    counts();
    dirty.metrics = false; dirty.controllers = false;
    CATS.forEach(c => dirty[c].clear());
    perf.renders++;
    perf.lastRender = performance.now() - t0;
    if (perf.firstRender == null) {
      perf.firstRender = performance.now();
      document.body.dataset.ready = '1';
    }
  }

  // ---- the feed -----------------------------------------------------------------------------
  function loadSnapshot(s) {
    if (s.version) $('#version').textContent = 'v' + s.version;
    CATS.forEach(c => {
      S[c].clear();
      for (const r of s[c] || []) S[c].set(r[KEY[c]], r);
    });
    S.controllers = s.controllers || [];
    S.metrics = s.metrics || null;
    S.history = s.history || [];
    S.svcHistory = s.svcHistory || {};
    S.events = s.events || [];
    dirty.full = true;
    schedule();
  }
  const conn = $('#conn');
  function setConn(cls, label) { conn.className = 'conn ' + cls; conn.querySelector('.label').textContent = label; }
  const token = new URLSearchParams(location.search).get('token');
  const es = new EventSource('/ui/api/events' + (token ? '?token=' + encodeURIComponent(token) : ''));
  es.addEventListener('snapshot', e => { loadSnapshot(JSON.parse(e.data)); setConn('live', 'live'); });
  es.addEventListener('batch', e => {
    const b = JSON.parse(e.data);
    perf.batches++;
    for (const [cat, id, row] of b.d) {
      if (!S[cat]) continue;
      if (row == null) S[cat].delete(id); else S[cat].set(id, row);
      dirty[cat].add(id);
    }
    schedule();
  });
  es.addEventListener('metrics', e => {
    const m = JSON.parse(e.data);
    S.metrics = m;
    if (m.point) { S.history.push(m.point); const cut = Date.now() - WINDOW_MS - 60000; while (S.history.length && S.history[0][0] < cut) S.history.shift(); }
    for (const [svc, p] of Object.entries(m.svcPoints || {})) {
      const h = S.svcHistory[svc] || (S.svcHistory[svc] = []);
      h.push(p); if (h.length > 180) h.shift();
    }
    dirty.metrics = true; schedule();
  });
  es.addEventListener('controllers', e => { S.controllers = JSON.parse(e.data); dirty.controllers = true; schedule(); });
  es.addEventListener('event', e => { const ev = JSON.parse(e.data); S.events.push(ev); if (S.events.length > 200) S.events.shift(); dirty.events.push(ev); schedule(); });
  es.onopen = () => setConn('live', 'live');
  es.onerror = () => setConn('down', 'reconnecting…');
  window.addEventListener('resize', () => { dirty.metrics = true; schedule(); });
  // Ages ("3s ago") in the controller table and the charts' time axis move on their own.
  setInterval(() => { dirty.controllers = true; dirty.metrics = true; schedule(); }, 5000);
})();
