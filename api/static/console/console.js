// The ezstats console: plain JS over the public API (no build step). Every figure shown comes from one
// API answer, fetched in the browser with the admin token the user gives once (kept in sessionStorage).
"use strict";

const state = { timer: null, charts: {}, tokenKey: "ezstats.adminToken" };
const $ = (id) => document.getElementById(id);
const fmt = new Intl.NumberFormat("en-US");

function params() {
  const period = $("period").value;
  const tz = $("tz").value.trim() || "UTC";
  return { period, tz };
}

function token() { return sessionStorage.getItem(state.tokenKey); }

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// One call to the API; problem+json errors become ApiError with their detail.
async function api(path, query, init) {
  const url = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = "Bearer " + token();
  if (init && init.body) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, { ...(init || {}), headers });
  } catch (e) {
    throw new ApiError(0, "the API cannot be reached (" + e.message + ")");
  }
  if (response.status === 401) {
    askToken("The token was refused; enter the admin token.");
    throw new ApiError(401, "unauthorized");
  }
  const text = await response.text();
  const body = text ? JSON.parse(text) : null;
  if (!response.ok) {
    throw new ApiError(response.status, (body && (body.detail || body.title)) || response.statusText);
  }
  return body;
}

function askToken(message) {
  $("login-error").textContent = message || "";
  if (!$("login").open) $("login").showModal();
}

function setNumber(id, value, unit) {
  const el = $(id);
  el.dataset.value = value === null || value === undefined ? "" : String(value);
  el.textContent = value === null || value === undefined ? "–"
    : (Number.isInteger(value) ? fmt.format(value) : fmt.format(Math.round(value * 10) / 10)) + (unit || "");
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function header(table, names) {
  table.replaceChildren();
  const tr = document.createElement("tr");
  for (const n of names) {
    const th = document.createElement("th");
    th.textContent = n;
    if (["requests", "errors", "error rate", "p95 ms"].includes(n)) th.className = "num";
    tr.appendChild(th);
  }
  table.appendChild(tr);
}

// -- overview --------------------------------------------------------------------------------------

async function loadOverview() {
  const p = params();
  const stats = await api("/admin/stats", p);
  const t = stats.totals;
  setNumber("m-requests", t.requests);
  setNumber("m-errors", t.errors);
  $("m-error_rate").textContent = t.error_rate === null ? "" : (100 * t.error_rate).toFixed(2) + " %";
  setNumber("m-rate_limited", t.rate_limited);
  setNumber("m-total_tokens", t.total_tokens);
  setNumber("m-quota_cost", t.quota_cost);
  setNumber("m-p50", t.latency_ms.p50, " ms");
  setNumber("m-p95", t.latency_ms.p95, " ms");
  setNumber("m-p99", t.latency_ms.p99, " ms");
  $("period-label").textContent = `${stats.period}: ${stats.start} → ${stats.end} (${stats.tz}, percentiles ${stats.percentiles})`;
  $("overview").dataset.start = stats.start;
  $("overview").dataset.end = stats.end;
  $("overview").dataset.tz = stats.tz;
}

async function series(metric, interval) {
  const p = params();
  return api("/admin/stats/series", { ...p, interval, metric });
}

async function loadCharts() {
  const p = params();
  const interval = ["month", "last30d"].includes(p.period) ? "day" : "hour";
  const names = ["requests", "errors", "rate_limited", "latency_p50", "latency_p95", "latency_p99",
                 "total_tokens", "quota_cost"];
  const answers = await Promise.all(names.map((m) => series(m, interval)));
  const by = Object.fromEntries(names.map((m, i) => [m, answers[i].rows]));
  const xs = by.requests.map((r) => Date.parse(r.time) / 1000);
  const col = (m) => by[m].map((r) => r[m]);
  draw("chart-traffic", p.tz, xs, [["requests", "#2e6fdb", col("requests")], ["errors", "#d92d20", col("errors")],
                                   ["rate limited", "#f79009", col("rate_limited")]]);
  draw("chart-latency", p.tz, xs, [["p50", "#12b76a", col("latency_p50")], ["p95", "#f79009", col("latency_p95")],
                                   ["p99", "#d92d20", col("latency_p99")]]);
  draw("chart-tokens", p.tz, xs, [["tokens", "#7a5af8", col("total_tokens")],
                                  ["quota units", "#667085", col("quota_cost")]]);
}

function draw(id, tz, xs, lines) {
  const el = $(id);
  const width = Math.max(el.clientWidth || 400, 300);
  const opts = {
    width, height: 200,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), tz),
    series: [{}, ...lines.map(([label, stroke]) => ({ label, stroke, width: 1.5, spanGaps: false }))],
    axes: [{}, { size: 60 }],
    legend: { live: false },
  };
  const data = [xs, ...lines.map((l) => l[2])];
  if (state.charts[id]) state.charts[id].destroy();
  el.replaceChildren();
  state.charts[id] = new uPlot(opts, data, el);
}

// -- top lists -------------------------------------------------------------------------------------

async function loadTop(groupBy) {
  const p = params();
  const stats = await api("/admin/stats", { ...p, group_by: groupBy, limit: 5 });
  const table = $("top-" + groupBy);
  header(table, [groupBy.replace("_", " "), "name", "requests", "errors", "p95 ms"]);
  for (const g of stats.groups) {
    const tr = document.createElement("tr");
    tr.dataset.group = g.group === null ? "" : String(g.group);
    cell(tr, g.group === null ? "(none)" : g.group);
    cell(tr, g.name || "");
    cell(tr, fmt.format(g.requests), "num").dataset.value = g.requests;
    cell(tr, fmt.format(g.errors), "num");
    cell(tr, g.latency_ms.p95 === null ? "" : Math.round(g.latency_ms.p95), "num");
    table.appendChild(tr);
  }
}

// -- alerts ----------------------------------------------------------------------------------------

async function loadAlerts() {
  const [open, acked] = await Promise.all([api("/admin/alerts", { status: "open", limit: 100 }),
                                           api("/admin/alerts", { status: "acknowledged", limit: 100 })]);
  const alerts = [...open.alerts, ...acked.alerts];
  $("alerts-count").textContent = `${open.alerts.length} open, ${acked.alerts.length} acknowledged`;
  const table = $("alerts-table");
  header(table, ["id", "severity", "type", "metric", "scope", "value", "opened", "status", ""]);
  for (const a of alerts) {
    const tr = document.createElement("tr");
    tr.dataset.alertId = a.id;
    cell(tr, a.id);
    cell(tr, a.severity, "sev-" + a.severity);
    cell(tr, a.type);
    cell(tr, a.metric);
    cell(tr, a.scope + (a.scope_id === null ? "" : " " + a.scope_id));
    cell(tr, Math.round(a.value * 1000) / 1000);
    cell(tr, new Date(a.opened_at).toLocaleString("en-GB", { timeZone: params().tz }));
    cell(tr, a.status, "status");
    const actions = cell(tr, "");
    if (a.status === "open") actions.appendChild(button("Ack", () => act(a.id, "ack")));
    actions.appendChild(button("Resolve", () => act(a.id, "resolve")));
    table.appendChild(tr);
  }
}

function button(label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}

async function act(id, action) {
  try {
    await api(`/admin/alerts/${id}/${action}`, {}, { method: "POST", body: JSON.stringify({ by: "console" }) });
    await loadAlerts();
    clearBanner();
  } catch (e) {
    showError(`${action} of alert ${id} failed: ${e.message}`);
  }
}

// -- jobs and credentials --------------------------------------------------------------------------

async function loadJobs() {
  const jobs = await api("/admin/jobs");
  const table = $("jobs-table");
  header(table, ["job", "schedule", "last run", "outcome", "message", "next run"]);
  for (const j of jobs) {
    const tr = document.createElement("tr");
    tr.dataset.job = j.name;
    cell(tr, j.name).title = j.description;
    cell(tr, j.schedule);
    const last = j.last_run;
    cell(tr, last ? new Date(last.started_at).toLocaleString("en-GB", { timeZone: params().tz }) : "never");
    cell(tr, last ? last.outcome : "", last ? last.outcome : "");
    cell(tr, last ? (last.error || last.message || "") : "");
    cell(tr, new Date(j.next_run_at).toLocaleString("en-GB", { timeZone: params().tz }));
    table.appendChild(tr);
  }
}

// The provider keys' OAuth credentials (GET /admin/credentials): secrets are masked by the API itself.
async function loadCredentials() {
  const body = await api("/admin/credentials");
  const items = body.credentials || [];
  $("credentials").hidden = false;
  const table = $("credentials-table");
  header(table, ["provider key", "type", "account", "status", "expires", "last refresh", "next attempt",
                 "failures", "reason"]);
  const when = (t) => (t ? new Date(t).toLocaleString("en-GB", { timeZone: params().tz }) : "");
  for (const c of items) {
    const tr = document.createElement("tr");
    tr.dataset.providerKey = c.provider_key_id;
    cell(tr, c.provider_key_id);
    cell(tr, c.provider_type);
    cell(tr, c.email || c.account_id || "");
    cell(tr, c.status, c.status);
    cell(tr, when(c.expires_at));
    cell(tr, when(c.last_refresh_at));
    cell(tr, when(c.next_attempt_at));
    cell(tr, c.failures);
    cell(tr, c.reason || "");
    table.appendChild(tr);
  }
  if (!items.length) {
    const tr = document.createElement("tr");
    cell(tr, "no OAuth credentials imported (ezstats credentials import FILE)").colSpan = 9;
    table.appendChild(tr);
  }
}

// -- refresh ---------------------------------------------------------------------------------------

const sections = {
  overview: loadOverview, overview_charts: loadCharts, tops: () => Promise.all(
    ["model", "master", "key", "provider_key"].map(loadTop)), alerts: loadAlerts, jobs: loadJobs,
  credentials: loadCredentials,
};

async function refresh() {
  if (token() === null) { askToken(); return; }
  const names = Object.keys(sections);
  const results = await Promise.allSettled(names.map((n) => sections[n]()));
  const failed = [];
  results.forEach((r, i) => {
    const id = names[i].split("_")[0];
    const el = $(id);
    if (r.status === "rejected") {
      if (r.reason && r.reason.status === 401) return;
      failed.push(`${names[i]}: ${r.reason && r.reason.message}`);
      if (el) el.classList.add("stale");
    } else if (el && !results.some((o, j) => j !== i && names[j].split("_")[0] === id && o.status === "rejected")) {
      el.classList.remove("stale");
    }
  });
  const when = new Date().toLocaleTimeString("en-GB", { timeZone: params().tz });
  if (failed.length) {
    showError(`The API answered with errors; the dimmed figures are from the last good refresh. ${failed.join("; ")}`);
    $("status").textContent = `refresh at ${when} (${params().tz}) failed in part`;
  } else {
    clearBanner();
    $("status").textContent = `updated ${when} (${params().tz})`;
  }
  document.body.dataset.refreshed = String(Date.now());
}

function showError(message) { $("banner").hidden = false; $("banner").textContent = message; }
function clearBanner() { $("banner").hidden = true; $("banner").textContent = ""; }

function schedule() {
  if (state.timer) clearInterval(state.timer);
  const seconds = Number($("refresh").value);
  if (seconds > 0) state.timer = setInterval(refresh, seconds * 1000);
}

function init() {
  const query = new URLSearchParams(window.location.search);
  $("period").value = query.get("period") || "today";
  $("tz").value = query.get("tz") || Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  if (query.get("refresh") !== null) $("refresh").value = query.get("refresh");
  $("controls").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams({ period: $("period").value, tz: $("tz").value, refresh: $("refresh").value });
    history.replaceState(null, "", "?" + q.toString());
    schedule();
    refresh();
  });
  $("login-form").addEventListener("submit", () => {
    sessionStorage.setItem(state.tokenKey, $("token").value);
    $("token").value = "";
    refresh();
  });
  $("signout").addEventListener("click", () => { sessionStorage.removeItem(state.tokenKey); askToken(); });
  schedule();
  refresh();  // asks for the token first when this tab has none (an API without EZ_ADMIN_TOKEN takes it empty)
}

init();
