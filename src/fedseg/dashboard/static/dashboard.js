// fedseg dashboard: draws GET /api/state; redraws when /api/events says the store changed
// (server-sent events), or every 5 s while that stream is down. Read-only: only GETs.
"use strict";

const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const POLL_MS = 5000;
let shown = null;       // version on screen
let busy = false;       // a fetch is in flight
let again = false;      // another change came in meanwhile
let poller = null;      // fallback timer while the event stream is down

function $(id) { return document.getElementById(id); }
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function num(v, digits = 3) { return v === null || v === undefined ? "-" : Number(v).toFixed(digits); }
function int(v) { return v === null || v === undefined ? "-" : String(v); }
function rgba(hex, a) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${a})`;
}

async function refresh() {
  if (busy) { again = true; return; }
  busy = true;
  try {
    const r = await fetch("/api/state", { credentials: "same-origin", cache: "no-store" });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const s = await r.json();
    window.lastState = s;
    render(s);
    shown = s.version;
  } catch (err) {
    $("link").textContent = `cannot read the run (${err.message})`;
  } finally {
    busy = false;
    if (again) { again = false; refresh(); }
  }
}

function render(s) {
  document.title = `fedseg ${s.name} · ${s.state}`;
  $("run").textContent = s.name;
  $("run").title = s.run;
  $("state").textContent = s.state;
  $("state").className = s.state === "done" ? "ok" : (s.state === "failed" || s.state === "crashed") ? "bad" : "warn";
  $("round").textContent = String(s.round);
  $("planned").textContent = s.rounds_planned ? ` of ${s.rounds_planned}` : "";
  const phase = s.phase || (s.synthesis && s.synthesis.phase) || null;
  $("phase-box").hidden = !phase;
  $("phase").textContent = phase || "";
  $("federation").textContent = s.federation_model_round === null ? "" :
    `federation ${s.score.label} of model ${s.federation_model_round}: ` +
    s.score.all_groups.map(g => `${g} ${num(s.federation_scores[g])}`).join("  ");
  const err = s.cause ? `${s.cause.kind}: ${s.cause.message}` : s.error ? `error: ${s.error}` : "";
  $("error").hidden = !err;
  $("error").textContent = err;
  $("privacy").hidden = !s.privacy;
  if (s.privacy) $("privacy").textContent = "privacy: " + (s.privacy.mechanisms.join("; ") || "none") + (s.privacy_spent ? " · " + s.privacy_spent : "");
  renderSites(s);
  renderCharts(s);
  renderAlarms(s);
  renderEvents(s);
  renderCross(s);
  renderContributions(s);
}

const MODALITIES = ["t1", "t1ce", "t2", "flair"];

function modalityText(mods) {  // as status says it: all, the ones it has, or - (not joined)
  if (!mods) return "-";
  return MODALITIES.every(m => mods.includes(m)) ? "all" : mods.join(" ") || "none";
}

function renderSites(s) {
  const groups = s.score.all_groups;
  const synth = s.synthesis !== null;
  const cols = ["site", "now", "state", "round", "train", "val", "loss",
                ...(synth ? ["modalities"] : []), "model",
                ...groups.map(g => `${s.score.label} ${g}`), "alarms"];
  const head = $("sites-head");
  head.replaceChildren(...cols.map(c => el("th", c, ["site", "now", "state", "modalities", "alarms"].includes(c) ? "text" : "")));
  const rows = s.sites.map(x => {
    const has = synth ? s.synthesis.modalities[x.site] : null;
    const tr = el("tr");
    tr.dataset.site = x.site;
    const cells = [
      [x.site, "text"], [x.live || "-", "text"], [x.status, "text"], [int(x.last_round)],
      [int(x.n_train)], [int(x.n_val)], [num(x.train_loss, 4)],
      ...(synth ? [[modalityText(has), "text"]] : []), [int(x.model_round)],
      ...groups.map(g => [x.scores[g] !== undefined ? num(x.scores[g])
                          : has && g !== "mean" && !has.includes(g) ? "absent" : "-"]),
      [[...x.alarms, ...x.observations.map(k => `${k} (observed)`)].join(", ") || "-",
       x.alarms.length ? "text bad" : x.observations.length ? "text warn" : "text"],
    ];
    for (const [v, cls] of cells) tr.appendChild(el("td", v, cls));
    if (x.error) tr.title = x.error;
    return tr;
  });
  $("sites").replaceChildren(...rows);
}

function chartDiv(id) {
  let d = document.getElementById(id);
  if (!d) {
    d = el("div", null, "chart");
    d.id = id;
    $("charts").appendChild(d);
  }
  return d;
}

function renderCharts(s) {
  $("curves-title").textContent = `validation curves: ${s.score.label} per ${s.score.group_word}`;
  if (typeof Plotly === "undefined") {
    $("charts").textContent = "plotly.min.js did not load: charts unavailable";
    return;
  }
  const wanted = new Set(s.score.all_groups.map(g => `chart-${g}`));
  for (const d of Array.from($("charts").children)) if (!wanted.has(d.id)) d.remove();
  for (const g of s.score.all_groups) {
    const c = s.curves[g] || { sites: {}, federation: [] };
    const traces = [];
    Object.keys(c.sites).sort().forEach((site, i) => {
      const pts = c.sites[site];
      const color = COLORS[i % COLORS.length];
      const x = pts.map(p => p.model_round);
      traces.push({ x, y: pts.map(p => p.lo), mode: "lines", line: { width: 0 }, hoverinfo: "skip", showlegend: false, legendgroup: site });
      traces.push({ x, y: pts.map(p => p.hi), mode: "lines", line: { width: 0 }, fill: "tonexty", fillcolor: rgba(color, 0.15), hoverinfo: "skip", showlegend: false, legendgroup: site });
      traces.push({ x, y: pts.map(p => p.mean), mode: "lines+markers", name: site, legendgroup: site, line: { color },
                    customdata: pts.map(p => p.n), hovertemplate: `${site} model %{x}: %{y:.3f} (n=%{customdata})<extra></extra>` });
    });
    if (c.federation.length) {
      const f = c.federation;
      traces.push({ x: f.map(p => p.model_round), y: f.map(p => p.mean), mode: "lines", name: "federation", line: { color: "#000", dash: "dash" },
                    hovertemplate: "federation model %{x}: %{y:.3f}<extra></extra>" });
    }
    const layout = {
      title: { text: `${s.score.label} ${g}`, font: { size: 14 } },
      margin: { l: 45, r: 10, t: 35, b: 20 },
      xaxis: { title: { text: "model round" }, dtick: 1 },
      yaxis: { rangemode: "tozero" },
      legend: { orientation: "h", y: -0.3 },
      uirevision: g,
    };
    Plotly.react(chartDiv(`chart-${g}`), traces, layout, { displaylogo: false, responsive: true });
  }
}

function alarmItem(a) {
  const li = el("li");
  const rounds = a.first === a.last ? `round ${a.first}` : `rounds ${a.first}-${a.last}`;
  li.appendChild(el("b", a.site));
  li.appendChild(document.createTextNode(" "));
  li.appendChild(el("span", a.kind, a.level === "observation" ? "warn" : "bad"));
  li.appendChild(document.createTextNode(` (${rounds}): ${a.message}`));
  const ev = a.evidence;
  if (ev) {
    if (ev.text && ev.text !== a.message) li.appendChild(el("div", ev.text, "evidence"));
    const facts = [`${ev.region}: ${ev.statistic} ${num(ev.value, 2)}`];
    if (ev.p !== null && ev.p !== undefined) facts.push(`p ${Number(ev.p).toPrecision(2)}`);
    if (ev.effect !== null && ev.effect !== undefined) facts.push(`effect ${num(ev.effect)}`);
    if (ev.margin !== null && ev.margin !== undefined) facts.push(`margin ${num(ev.margin)}`);
    if (ev.n_cases) facts.push(`${ev.n_cases} cases`);
    if (ev.evaluators && ev.evaluators.length) facts.push(`at ${ev.evaluators.join(", ")}`);
    if (ev.model_rounds && ev.model_rounds.length) facts.push(`models of rounds ${ev.model_rounds.join(", ")}`);
    li.appendChild(el("div", facts.join(" · "), "evidence"));
  }
  li.dataset.site = a.site;
  li.dataset.kind = a.kind;
  return li;
}

function renderAlarms(s) {
  const alarms = s.alarms;
  const obs = s.observations;
  $("alarms").replaceChildren(...(alarms.length ? alarms.map(alarmItem) : [el("li", "no alarms", "muted")]));
  $("observations-box").hidden = !obs.length;
  $("observations").replaceChildren(...obs.map(alarmItem));
}

let crossRegion = null;  // the region the user chose, kept across redraws

function renderCross(s) {
  const box = $("cross-box");
  box.hidden = !s.cross;
  if (!s.cross || typeof Plotly === "undefined") return;
  const regions = Object.keys(s.cross.regions);
  if (!regions.includes(crossRegion)) crossRegion = s.cross.default;
  const sel = $("cross-region");
  if (sel.dataset.options !== regions.join(",")) {
    sel.replaceChildren(...regions.map(r => { const o = el("option", r); o.value = r; return o; }));
    sel.dataset.options = regions.join(",");
    sel.onchange = () => { crossRegion = sel.value; renderCross(window.lastState); };
  }
  sel.value = crossRegion;
  const m = s.cross.regions[crossRegion];
  const lim = Math.max(0.05, ...m.z.flat().filter(v => v !== null).map(Math.abs));
  const text = m.z.map((row, i) => row.map((v, j) => v === null ? "" : `${num(v)} (n=${m.n[i][j]})`));
  const trace = {
    type: "heatmap", z: m.z, x: m.evaluators, y: m.models, text, texttemplate: "%{z:.2f}",
    hovertemplate: "model of %{y} at %{x}: %{text}<extra></extra>",
    colorscale: "RdBu", reversescale: true, zmin: -lim, zmax: lim, zmid: 0, colorbar: { title: { text: "Δ Dice" } },
  };
  const layout = {
    margin: { l: 90, r: 10, t: 10, b: 60 },
    xaxis: { title: { text: "validated at (evaluator)" }, type: "category" },
    yaxis: { title: { text: "local model of" }, type: "category", autorange: "reversed" },
  };
  $("cross-chart").style.height = `${Math.max(260, 36 * m.models.length + 110)}px`;
  Plotly.react($("cross-chart"), [trace], layout, { displaylogo: false, responsive: true });
}

function renderContributions(s) {
  const rows = s.contributions;
  $("contrib-box").hidden = !rows;
  if (!rows) return;
  const regions = s.score.all_groups;
  const cols = ["site", "verdict", "effect", "95 % interval", "worst region", ...regions.map(g => `effect ${g}`), "cases"];
  $("contrib-head").replaceChildren(...cols.map(c => el("th", c, ["site", "verdict", "worst region"].includes(c) ? "text" : "")));
  $("contrib").replaceChildren(...rows.map(c => {
    const tr = el("tr");
    tr.dataset.site = c.site;
    const verdict = c.verdict === "harmful" ? "text bad" : c.verdict === "helps" ? "text ok" : "text";
    for (const [v, cls] of [[c.site, "text"], [c.verdict, verdict], [num(c.effect, 4)],
                            [`${num(c.low, 4)} … ${num(c.high, 4)}`], [c.region, "text"],
                            ...regions.map(g => [num(c.per_region[g], 4)]), [int(c.n_cases)]]) {
      tr.appendChild(el("td", v, cls));
    }
    return tr;
  }));
}

function renderEvents(s) {
  const items = s.last_events.slice().reverse().map(e => {
    const t = new Date(e.time * 1000).toLocaleTimeString();
    return el("li", `${t} ${e.level} ${e.message}`, e.level);
  });
  $("events").replaceChildren(...(items.length ? items : [el("li", "no events", "muted")]));
}

function startPolling() {
  if (poller === null) poller = setInterval(refresh, POLL_MS);
}
function stopPolling() {
  if (poller !== null) { clearInterval(poller); poller = null; }
}

function connect() {
  if (!window.EventSource) { $("link").textContent = "polling every 5 s"; startPolling(); return; }
  const es = new EventSource("/api/events");
  es.addEventListener("state", e => {
    stopPolling();
    $("link").textContent = "live";
    const v = JSON.parse(e.data).version;
    if (v !== shown) refresh();
  });
  es.onerror = () => {
    $("link").textContent = "live updates interrupted: polling every 5 s";
    startPolling();
  };
}

if (new URLSearchParams(location.search).has("token")) {
  history.replaceState(null, "", location.pathname);  // the cookie carries it from here on
}
refresh();
connect();
