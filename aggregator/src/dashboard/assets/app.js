// zonesync dashboard: reads the aggregator's JSON API and draws it.
// Plain JavaScript, no build step; labels in i18n.js, charts in charts.js.
"use strict";

const S = {
  lang: "zh",
  tab: "overview",
  zone: null,
  period: null,
  zones: [],
  // `/api/v1/cities`: the cities served and their zones; role "zone" (a zone
  // aggregator) or "center" (a federation center, which has only the city
  // and province tables).
  cities: [],
  role: "zone",
  city: null,
  // A read token is kept on this screen (localStorage) so a wall PC that
  // reboots shows data again without anyone typing it; the write token
  // (acknowledging alerts) stays for the session only.
  readToken: localStorage.getItem("zonesync.readToken") || sessionStorage.getItem("zonesync.readToken") || "",
  live: null, // last event's fingerprint
  renders: 0,
  // What to run once a view's HTML is in the page (charts to draw).
  after: [],
};

const $ = sel => document.querySelector(sel);
const t = key => (I18N[S.lang] && I18N[S.lang][key]) ?? I18N.zh[key] ?? key;
const esc = s => String(s ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const nm = o => (S.lang === "en" ? o.name_en || o.name_zh : o.name_zh || o.name_en) || "";

// The month now in China Standard Time, YYYY-MM.
function currentMonth() {
  const d = new Date(Date.now() + 8 * 3600 * 1000);
  return d.toISOString().slice(0, 7);
}

// The last month that has ended in China Standard Time, YYYY-MM: the default,
// since a month still running ranks every enterprise on a few days of data.
function lastCompleteMonth() {
  let [y, m] = currentMonth().split("-").map(Number);
  if (--m === 0) { m = 12; y--; }
  return `${y}-${String(m).padStart(2, "0")}`;
}

// "进行中 · 第6天/共31天" for the month running, else "".
function progressNote(period) {
  if (period !== currentMonth()) return "";
  const [y, m] = period.split("-").map(Number);
  const day = Number(new Date(Date.now() + 8 * 3600 * 1000).toISOString().slice(8, 10));
  const of = new Date(Date.UTC(y, m, 0)).getUTCDate();
  return S.lang === "en" ? `in progress · day ${day} of ${of}` : `进行中 · 第${day}天/共${of}天`;
}

// Same rules as the CSV report (report.rs `human`), so page and export agree.
const COUNTS = ["enterprise", "zone", "item", "person"];
function human(v, unit) {
  if (v == null || !isFinite(v)) return "—";
  if (COUNTS.includes(unit) && Number.isInteger(v)) return v.toLocaleString("en-US");
  if (unit === "share") return (v * 100).toFixed(1) + "%";
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString("en-US");
  if (Math.abs(v) >= 1) return v.toFixed(2);
  return v.toFixed(4);
}
const pct = v => (v == null ? "—" : (v * 100).toFixed(1) + "%");
const signedPct = v => (v == null ? "—" : (v > 0 ? "+" : "") + (v * 100).toFixed(1) + "%");
const unitWord = u => (u === "share" ? "" : t("unit_" + u) === "unit_" + u ? u : t("unit_" + u));

// Up to `d` decimals, trailing zeros dropped, thousands grouped: 2800 → "2,800", 1.35 → "1.35".
const exact = (v, d) => Number(v.toFixed(d)).toLocaleString("en-US", { maximumFractionDigits: d });

// A figure with the unit an official writes: money of 1 亿元 and more in 亿元,
// of 1 万亿元 and more in 万亿元 (3 万亿元, 2,800 亿元, not 300,000,000 万元).
// `asWritten` keeps a target's digits as the plan has them (≥ 1.35 %, not 1.4 %).
function amount(v, unit, asWritten) {
  if (v == null || !isFinite(v)) return ["—", unitWord(unit)];
  if (unit === "10k_yuan" && Math.abs(v) >= 1e8) return [exact(v / 1e8, 2), t("unit_wanyi")];
  if (unit === "10k_yuan" && Math.abs(v) >= 1e4) return [exact(v / 1e4, 2), t("unit_yi")];
  if (asWritten && unit === "share") return [exact(v * 100, 4) + "%", ""];
  if (asWritten) return [exact(v, 4), unitWord(unit)];
  return [human(v, unit), unitWord(unit)];
}

function targetText(g) {
  if (g.comparator === "rising" || g.comparator === "report") return t("cmp_" + g.comparator);
  if (g.target == null) return "—";
  const cmp = { ">=": "≥", ">": ">", "<=": "≤", "<": "<" }[g.comparator] || g.comparator;
  const [n, u] = amount(g.target, g.unit, true);
  return `${cmp} ${n}${u ? " " + u : ""}`;
}

const statusBadge = s => `<span class="badge ${esc(s)}" data-status="${esc(s)}">${esc(t(s))}</span>`;

function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (isNaN(d)) return esc(iso);
  return d.toLocaleString(S.lang === "en" ? "en-GB" : "zh-CN", { hour12: false, timeZone: "Asia/Shanghai" });
}

// The last `n` months, newest first (and the selected one, if older).
function monthsBack(n) {
  let [y, m] = currentMonth().split("-").map(Number);
  const out = [];
  for (let k = 0; k < n; k++) {
    out.push(`${y}-${String(m).padStart(2, "0")}`);
    if (--m === 0) { m = 12; y--; }
  }
  if (S.period && !out.includes(S.period)) out.push(S.period);
  return out;
}

// ---------------------------------------------------------------- API access

class NeedToken extends Error {}

function authHeaders(token) {
  return token ? { Authorization: "Bearer " + token } : {};
}

async function api(path) {
  const r = await fetch(path, { headers: authHeaders(S.readToken) });
  if (r.status === 401) {
    $("#token-bar").hidden = false;
    throw new NeedToken(path);
  }
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return r.json();
}

const q = () => `period=${encodeURIComponent(S.period)}`;

// ---------------------------------------------------------------- views

function zoneHeader(z) {
  return `<div class="zone-head"><h2>${esc(nm(z))}</h2><div class="counts">
    <span>${t("enterprises")} <b>${z.enterprises}</b></span>
    <span>${t("in_scope")} <b>${z.in_scope}</b></span>
    <span>${t("reporting")} <b>${z.reporting}</b></span>
    <span>${t("agents")} <b>${z.agents}</b></span></div></div>`;
}

function statusChips(goals) {
  const n = s => goals.filter(g => g.status === s).length;
  return `<div class="chips">` + ["met", "not_met", "no_data"].map(s =>
    `<div class="chip ${s}" data-count="${s}"><b>${n(s)}</b><span>${t(s)}</span></div>`).join("") + `</div>`;
}

// What the figure leaves out or infers, said beside it: months missing on a side, members counted by a proxy.
function caveats(g) {
  const out = [];
  if (g.partial_months > 0) out.push(t("partial_months").replace("{n}", g.partial_months));
  if (g.numerator_from_proxy > 0) out.push(t("by_proxy").replace("{n}", g.numerator_from_proxy));
  return out.length ? ` <span class="muted caveats">${esc(out.join("; "))}</span>` : "";
}

function completenessText(g) {
  return `<span class="completeness-label">${t("completeness")}</span> <b class="completeness">${pct(g.completeness)}</b>
    <span class="muted">(${g.reported}/${g.in_scope})</span>${caveats(g)}`;
}

function scopeTag(g) {
  return g.scope && g.scope !== "zone" ? `<span class="scope">${t("scope_" + g.scope)}</span>` : "";
}

// What span a figure covers, in words: the API's `period` of a row
// ("2026-01..2026-11", "2026-11", "2026-Q4", "2026", "A vs B") as
// "2026年1—11月累计", "2026年11月", "2026年第4季度", "2026年", "A（对比B）".
function spanLabel(p) {
  if (!p) return "";
  const vs = String(p).split(" vs ");
  if (vs.length === 2) return S.lang === "en" ? `${spanLabel(vs[0])} vs ${spanLabel(vs[1])}` : `${spanLabel(vs[0])}（对比${spanLabel(vs[1])}）`;
  const EN = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  let m;
  if ((m = /^(\d{4})-(\d{2})\.\.(\d{4})-(\d{2})$/.exec(p))) {
    const [y, a, b] = [m[1], Number(m[2]), Number(m[4])];
    if (S.lang === "en") return `${EN[a - 1]}–${EN[b - 1]} ${y}${a === 1 ? " (cumulative)" : ""}`;
    return `${y}年${a}—${b}月${a === 1 ? "累计" : ""}`;
  }
  if ((m = /^(\d{4})-(\d{2})$/.exec(p))) return S.lang === "en" ? `${EN[Number(m[2]) - 1]} ${m[1]}` : `${m[1]}年${Number(m[2])}月`;
  if ((m = /^(\d{4})-Q(\d)$/.exec(p))) return S.lang === "en" ? `Q${m[2]} ${m[1]}` : `${m[1]}年第${m[2]}季度`;
  if ((m = /^(\d{4})$/.exec(p))) return S.lang === "en" ? m[1] : `${m[1]}年`;
  return p;
}

// "同比 +10.0% · 环比 −3.0个百分点" from a row's comparisons (API `compare=true`);
// an earlier figure that is itself incomplete is marked, never hidden.
function cmpText(c) {
  if (!c) return "";
  const one = (e, label) => {
    if (!e) return "";
    const ch = e.change == null ? "—"
      : e.change_is === "points" ? `${e.change > 0 ? "+" : ""}${(e.change * 100).toFixed(1)}${t("points")}`
      : signedPct(e.change);
    const partial = e.completeness != null && e.completeness < 1 ? ` <span class="muted">(${t("completeness")} ${pct(e.completeness)})</span>` : "";
    return `<span class="cmp" title="${esc(spanLabel(e.period))}">${t(label)} ${ch}${partial}</span>`;
  };
  return [one(c.same_period_last_year, "yoy"), one(c.previous_period, "mom")].filter(Boolean).join(" · ");
}

// A change per month in the goal's unit: shares in points ("+1.8个百分点").
function perMonth(v, unit) {
  if (v == null) return "—";
  const sign = v > 0 ? "+" : "";
  // Small rates keep two significant digits: +0.019 points, not +0.0.
  const pts = v * 100, d = Math.abs(pts) >= 0.1 ? 1 : Math.abs(pts) >= 0.01 ? 2 : 3;
  if (unit === "share") return `${sign}${pts.toFixed(d)}${t("points")}`;
  const [n, u] = amount(v, unit);
  return `${sign}${n}${u ? " " + u : ""}`;
}

// "On track?": the pace of the last 12 months (or since data began, said
// so), what is needed from now on to meet the target by its deadline, and
// when today's pace would get there. API `pace=true`.
function paceText(p, unit) {
  if (!p) return "";
  const month = m => (m ? spanLabel(m) : "");
  const base = p.since === "data_began" ? t("pace_since_began").replace("{m}", month(p.from && p.from[0])) : t("pace_last_year");
  const rate = p.per_month == null ? "" : `${base} ${perMonth(p.per_month, unit)}/${t("pace_month")}`;
  const need = p.needed_per_month == null ? "" : t("pace_needs").replace("{d}", month(p.deadline)).replace("{r}", perMonth(p.needed_per_month, unit));
  const when = p.reaches ? t("pace_reaches").replace("{m}", month(p.reaches)) : t("pace_never");
  switch (p.verdict) {
    case "met": return t("pace_met");
    case "missed": return t("pace_missed").replace("{d}", month(p.deadline));
    case "no_pace": return [t("pace_none"), need].filter(Boolean).join("；");
    default: return [rate, need, when].filter(Boolean).join("；");
  }
}

const paceLine = (p, unit) => (p ? `<div class="pace ${esc(p.verdict)}" data-verdict="${esc(p.verdict)}">${esc(paceText(p, unit))}</div>` : "");

// A goal's tooltip: the plan, the clause, and how the figure is made, in
// the page's language.
const tip = g => [g.source, g.clause, S.lang === "en" ? g.definition : g.definition_zh].filter(Boolean).join("\n");

function coverageGoal(zone, g, pace) {
  return `<div class="goal" data-zone="${esc(zone)}" data-goal="${esc(g.id)}">
    <div class="gname" title="${esc(tip(g))}"><span class="gid">${esc(g.id)}</span><span class="goal-name">${esc(nm(g))}</span>${scopeTag(g)}</div>
    <div class="gline">
      ${Charts.bar(g.value, g.target, g.status)}
      <b class="value">${human(g.value, g.unit)}</b>
    </div>
    <div class="span-label muted">${esc(spanLabel(g.period))}</div>
    <div class="gmeta"><span class="target-text">${t("target")} ${esc(targetText(g))}</span>
      ${statusBadge(g.status)}<span class="gcomp">${completenessText(g)}</span></div>
    ${paceLine(pace && pace[g.id], g.unit)}
  </div>`;
}

// A goal as a compact card, for the wall screen: the same figures as the
// table row (value, span, 同比/环比, target, status, completeness).
function kioskGoal(zone, g, cmp) {
  const [n, u] = amount(g.value, g.unit);
  return `<div class="goal kcard" data-zone="${esc(zone)}" data-goal="${esc(g.id)}">
    <div class="gname" title="${esc(tip(g))}"><span class="gid">${esc(g.id)}</span><span class="goal-name">${esc(nm(g))}</span>${scopeTag(g)}</div>
    <div class="kline"><b class="value">${n}</b> <span class="muted">${esc(u)}</span> ${statusBadge(g.status)}</div>
    <div class="subline"><span class="span-label muted">${esc(spanLabel(g.period))}</span><span class="compare muted">${cmpText(cmp && cmp[g.id])}</span></div>
    <div class="gmeta"><span class="target-text">${esc(targetText(g))}</span>
      <span>${t("completeness")} <b class="completeness">${pct(g.completeness)}</b></span></div>
  </div>`;
}

function otherGoalRow(zone, g, cmp, pace) {
  const [n, u] = amount(g.value, g.unit);
  return `<tr class="goal" data-zone="${esc(zone)}" data-goal="${esc(g.id)}">
    <td><span class="gid">${esc(g.id)}</span></td>
    <td class="goal-name" title="${esc(tip(g))}">${esc(nm(g))}${scopeTag(g)}</td>
    <td class="num"><b class="value">${n}</b> <span class="muted">${esc(u)}</span>
      <div class="span-label muted">${esc(spanLabel(g.period))}</div><div class="compare muted">${cmpText(cmp && cmp[g.id])}</div></td>
    <td class="num"><span class="target-text">${esc(targetText(g))}</span>${paceLine(pace && pace[g.id], g.unit)}</td>
    <td>${statusBadge(g.status)}</td>
    <td class="num"><b class="completeness">${pct(g.completeness)}</b> <span class="muted">(${g.reported}/${g.in_scope})</span>${caveats(g)}</td></tr>`;
}

async function viewOverview() {
  // A wall screen (kiosk) shows one zone at a time, rotating; else every zone.
  const shown = S.kiosk ? S.zones.filter(z => z.id === S.zone) : S.zones;
  const tables = await Promise.all(shown.map(z => api(`/api/v1/zones/${z.id}/goals?${q()}&compare=true&pace=true`)));
  return shown.map((z, k) => {
    const goals = tables[k].goals;
    const cov = goals.filter(g => g.kind === "coverage");
    const other = goals.filter(g => g.kind !== "coverage");
    return `<section class="card zone" data-zone="${esc(z.id)}">
      ${zoneHeader(z)}${statusChips(goals)}
      <h3>${t("coverage_goals")}</h3><div class="goals">${cov.map(g => coverageGoal(z.id, g, tables[k].pace)).join("")}</div>
      <h3>${t("other_goals")}</h3>
      ${S.kiosk ? `<div class="kiosk-goals">${other.map(g => kioskGoal(z.id, g, tables[k].comparisons)).join("")}</div>` : `<table class="grid-table"><thead><tr><th></th><th>${t("goal")}</th><th class="num">${t("value")}</th>
        <th class="num">${t("target")}</th><th>${t("status")}</th><th class="num">${t("completeness")}</th></tr></thead>
        <tbody>${other.map(g => otherGoalRow(z.id, g, tables[k].comparisons, tables[k].pace)).join("")}</tbody></table>`}
    </section>`;
  }).join("");
}

// ---------------------------------------------------------------- city and province

// A zone's figure from its part of a city or province row: its own value
// where the server gives it (a zone aggregator), else made from the part's
// sums the way the row is (a center): totals and counts are the numerator,
// shares and ratios numerator ÷ denominator; a trend has none of its own.
function partValue(row, p) {
  if (p.value !== undefined) return p.value;
  if (["total", "count", "zone_count"].includes(row.kind)) return p.numerator;
  if (["coverage", "ratio"].includes(row.kind)) return p.denominator > 0 ? p.numerator / p.denominator : null;
  return null;
}

// Zone parts summed by city, for the province table (a province has up to
// ~180 zones; its table lists cities, each city's own table lists zones).
function partsByCity(parts) {
  const cityOf = {};
  S.cities.forEach(c => c.zones.forEach(z => (cityOf[z] = c.city)));
  const by = new Map();
  for (const p of parts) {
    const c = cityOf[p.zone] || p.zone;
    const a = by.get(c) || { zone: c, label: c, numerator: 0, denominator: 0, in_scope: 0, reported: 0, unknown: 0 };
    a.numerator += p.numerator; a.denominator += p.denominator;
    a.in_scope += p.in_scope; a.reported += p.reported; a.unknown += p.unknown;
    by.set(c, a);
  }
  return [...by.values()];
}

// How a zone stands at a center: fresh, or stale/missing with its data's age.
function standingTag(standing, zone) {
  const st = (standing || []).find(s => s.zone === zone);
  if (!st || st.standing === "fresh") return "";
  const age = st.data_age_s == null ? "" : ` ${ageWords(st.data_age_s)}`;
  return ` <span class="badge standing-${esc(st.standing)}" data-standing="${esc(st.standing)}">${t("standing_" + st.standing)}${esc(age)}</span>`;
}

function ageWords(s) {
  if (s < 3600) return t("age_min").replace("{n}", Math.max(1, Math.round(s / 60)));
  if (s < 172800) return t("age_hours").replace("{n}", Math.round(s / 3600));
  return t("age_days").replace("{n}", Math.round(s / 86400));
}

function partsCell(row, parts, standing, grouped) {
  const list = grouped ? partsByCity(parts || []) : parts || [];
  if (!list.length) return `<span class="muted">—</span>`;
  return `<ul class="parts">` + list.map(p => {
    const v = grouped ? partValue(row, { ...p, value: undefined }) : partValue(row, p);
    const [n, u] = amount(v, row.unit);
    const share = v != null && ["total", "count"].includes(row.kind) && row.numerator > 0
      ? ` <span class="muted">${t("share_of").replace("{p}", pct(p.numerator / row.numerator))}</span>` : "";
    const who = grouped ? p.label : zoneName(p.zone);
    return `<li class="part" data-part="${esc(p.zone)}" data-value="${v == null ? "" : v}"><span class="pzone">${esc(who)}</span>
      <b>${n}</b>${u ? ` <span class="muted">${esc(u)}</span>` : ""}${share}
      <span class="muted">(${p.reported}/${p.in_scope})</span>${grouped ? "" : standingTag(standing, p.zone)}</li>`;
  }).join("") + `</ul>`;
}

function levelRow(level, t_, row, grouped) {
  const [n, u] = amount(row.value, row.unit);
  return `<tr class="goal" data-level="${esc(level)}" data-goal="${esc(row.id)}" data-value="${row.value == null ? "" : row.value}">
    <td><span class="gid">${esc(row.id)}</span></td>
    <td class="goal-name" title="${esc(tip(row))}">${esc(nm(row))}</td>
    <td class="num"><b class="value">${n}</b> <span class="muted">${esc(u)}</span>
      <div class="span-label muted">${esc(spanLabel(row.period))}</div></td>
    <td class="num target-text">${esc(targetText(row))}</td>
    <td>${statusBadge(row.status)}</td>
    <td class="num"><b class="completeness">${pct(row.completeness)}</b> <span class="muted">(${row.reported}/${row.in_scope})</span>${caveats(row)}</td>
    <td>${partsCell(row, t_.parts && t_.parts[row.id], t_.zone_standing, grouped)}</td></tr>`;
}

function levelTable(level, table, scope, grouped) {
  const rows = table.goals.filter(g => g.scope === scope);
  if (!rows.length) return `<div class="muted">${t("no_goals_here")}</div>`;
  return `<table class="grid-table level-table" data-level="${esc(level)}"><thead><tr><th></th><th>${t("goal")}</th><th class="num">${t("value")}</th>
    <th class="num">${t("target")}</th><th>${t("status")}</th><th class="num">${t("completeness")}</th>
    <th>${grouped ? t("parts_by_city") : t("parts_by_zone")}</th></tr></thead>
    <tbody>${rows.map(r => levelRow(level, table, r, grouped)).join("")}</tbody></table>`;
}

// Zones behind a table, counted: how many are in it, and (at a center) how many are stale or missing.
function levelCounts(table, zones) {
  const c = table.completeness;
  const stand = c ? ` · ${t("standing_fresh")} <b>${c.fresh}</b> · ${t("standing_stale")} <b class="${c.stale ? "bad" : ""}">${c.stale}</b> · ${t("standing_missing")} <b class="${c.missing ? "bad" : ""}">${c.missing}</b>` : "";
  // A zone left out of every figure is named, never silently absent.
  const missing = (table.zone_standing || []).filter(z => z.standing === "missing").map(z => zoneName(z.zone));
  const named = missing.length ? `<div class="missing-zones bad">${t("standing_missing")}: ${esc(missing.join("、"))}</div>` : "";
  return `<div class="counts muted">${t("zones_in_table").replace("{n}", zones)}${stand}${named}</div>`;
}

// "济源" → "济源市" (a registry may already write "济源市").
const cityWords = c => (S.lang === "en" || c.endsWith("市") ? c : c + t("city_suffix"));

async function viewCity() {
  const shown = S.kiosk ? S.cities.filter(c => c.city === S.city) : S.cities;
  const [tables, province] = await Promise.all([
    Promise.all(shown.map(c => api(`/api/v1/cities/${encodeURIComponent(c.city)}/goals?${q()}`))),
    S.kiosk ? null : api(`/api/v1/province/goals?${q()}`),
  ]);
  const cities = shown.map((c, k) => `<section class="card city" data-city="${esc(c.city)}">
      <div class="zone-head"><h2>${esc(cityWords(c.city))} · ${t("scope_city")}</h2>${levelCounts(tables[k], c.zones.length)}</div>
      ${statusChips(tables[k].goals.filter(g => g.scope === "city"))}
      ${levelTable("city:" + c.city, tables[k], "city", false)}</section>`).join("");
  if (!province) return cities;
  const n = S.cities.reduce((a, c) => a + c.zones.length, 0);
  // A zone aggregator sees only the zones it serves: its province table is
  // theirs alone, and says so, so it never passes for the whole province.
  const partial = S.role === "center" ? "" : `<div class="muted partial-note">${t("province_partial").replace("{n}", n)}</div>`;
  return cities + `<section class="card province" data-province="1">
      <div class="zone-head"><h2>${esc(S.cities[0]?.province || t("province_name"))} · ${t("scope_province")}</h2>${levelCounts(province, n)}</div>${partial}
      ${statusChips(province.goals.filter(g => g.scope === "province"))}
      ${levelTable("province", province, "province", true)}</section>`;
}

// Months to draw: from the first with any data (at least the last six).
function window_(series) {
  const n = series.months.length;
  const any = i => series.zone.intensity[i] != null || series.enterprises.some(e => e.intensity[i] != null);
  let first = 0;
  while (first < n - 6 && !any(first)) first++;
  return first;
}

async function viewEnergy() {
  const all = await Promise.all(S.zones.map(z => api(`/api/v1/dashboard/zones/${z.id}/energy-series?${q()}&months=12`)));
  const idx = Math.max(0, S.zones.findIndex(z => z.id === S.zone));
  const zoneCards = S.zones.map((z, k) => {
    const s = all[k].series, from = window_(s);
    const latest = s.zone.latest;
    return `<div class="zone-energy${k === idx ? " selected" : ""}" data-zone="${esc(z.id)}">
      <div class="zname">${esc(nm(z))}</div>
      <div class="big"><b class="zone-intensity">${latest == null ? "—" : human(s.zone.intensity[latest], "")}</b>
        <span class="muted span-label">${latest == null ? "" : esc(spanLabel(s.months[latest]))}</span></div>
      <div class="gapline">${t("gap")} <b class="${s.zone.gap > 0 ? "bad" : "good"}">${signedPct(s.zone.gap)}</b></div>
      ${latest != null && s.zone_partial[latest] > 0 ? `<div class="muted partial-note">${t("partial_left_out").replace("{n}", s.zone_partial[latest])}</div>` : ""}
      ${Charts.spark(s.zone.intensity.slice(from), s.zone.trajectory.slice(from), 220, 48)}
    </div>`;
  }).join("");
  const s = all[idx].series, from = window_(s);
  const labels = s.months.slice(from);
  const rate = s.rate
    ? t(s.rate.base_year ? "trajectory_rule_base" : "trajectory_rule").replace("{rate}", signedPct(s.rate.per_year))
      .replace("{goal}", s.rate.goal).replace("{base}", s.rate.base_year)
    : t("no_trajectory");
  // The trend in ECharts (vendored): tooltips per month and the current
  // year's target as a mark line; drawn once the HTML is in place.
  const chart = `<div id="energy-chart" class="echart" style="height:380px"></div>`;
  S.after.push(() => energyChart(labels, s.zone.intensity.slice(from), s.zone.trajectory.slice(from), s.rate));
  const rows = s.enterprises.map(e => {
    const l = e.latest;
    // A partial month has no intensity and is not ranked on; say so where it is the newest.
    const newest = e.partial.length - 1;
    const partial = e.partial[newest] ? `<div class="partial">${t("partial_month").replace("{month}", esc(s.months[newest]))}</div>` : "";
    return `<tr data-enterprise="${esc(e.enterprise)}"><td>${esc(e.name)}<div class="muted mono">${esc(e.enterprise)}</div>${partial}</td>
      <td class="num span-label">${l == null ? "—" : esc(spanLabel(s.months[l]))}</td>
      <td class="num"><b>${l == null ? "—" : human(e.intensity[l], "")}</b></td>
      <td class="num">${l == null ? "—" : human(e.trajectory[l], "")}</td>
      <td class="num"><b class="gap ${e.gap > 0 ? "bad" : "good"}">${signedPct(e.gap)}</b></td>
      <td>${Charts.spark(e.intensity.slice(from), e.trajectory.slice(from))}</td></tr>`;
  }).join("");
  return `<section class="card"><h2>${t("energy_zones")}</h2><div class="zone-energy-row">${zoneCards}</div></section>
    <section class="card"><h2>${esc(nm(S.zones[idx]))} · ${t("energy_trend")}</h2>
      <div class="legend"><span class="key actual"></span>${t("actual")} <span class="key trajectory"></span>${t("trajectory")}
        <span class="muted">${esc(rate)}</span></div>
      <div class="muted unit-note">${t("energy_title")}</div>${chart}</section>
    <section class="card"><h2>${t("off_first")}</h2>
      <table class="grid-table"><thead><tr><th>${t("enterprise")}</th><th class="num">${t("latest")}</th>
      <th class="num">${t("latest_value")}</th><th class="num">${t("trajectory_value")}</th><th class="num">${t("gap")}</th>
      <th>${t("trend")}</th></tr></thead><tbody>${rows || `<tr><td colspan="6" class="muted">${t("no_data_yet")}</td></tr>`}</tbody></table></section>`;
}

// The zone's intensity against its trajectory, with the latest year's
// target as a mark line, in ECharts on the page's dark theme.
function energyChart(months, actual, trajectory, rate) {
  const el = document.getElementById("energy-chart");
  if (!el || typeof echarts === "undefined") return;
  const old = echarts.getInstanceByDom(el);
  if (old) old.dispose();
  const chart = echarts.init(el, null, { renderer: "canvas" });
  const f4 = v => (v == null ? "—" : Number(v).toFixed(4));
  const lastTarget = [...trajectory].reverse().find(v => v != null);
  chart.setOption({
    animation: false,
    grid: { left: 70, right: 40, top: 30, bottom: 40 },
    tooltip: {
      trigger: "axis",
      valueFormatter: f4,
      backgroundColor: "rgba(10,25,50,0.92)",
      borderColor: "#2b4a7a",
      textStyle: { color: "#dbe7ff" },
    },
    legend: { show: false },
    xAxis: { type: "category", data: months.map(spanLabel), axisLabel: { color: "#8fa7cc" }, axisLine: { lineStyle: { color: "#2b4a7a" } } },
    yAxis: { type: "value", name: t("unit_tce_per_10k"), nameTextStyle: { color: "#8fa7cc" }, scale: true,
      axisLabel: { color: "#8fa7cc", formatter: v => v.toFixed(4) }, splitLine: { lineStyle: { color: "rgba(143,167,204,0.15)" } } },
    series: [
      { name: t("actual"), type: "line", data: actual, connectNulls: false, symbol: "circle", symbolSize: 7,
        lineStyle: { width: 3, color: "#39c5ff" }, itemStyle: { color: "#39c5ff", borderColor: "#fff" },
        markLine: lastTarget == null ? undefined : {
          symbol: "none", silent: false,
          lineStyle: { type: "solid", width: 1.5, color: "#ff7b72" },
          label: { color: "#ff7b72", position: "insideEndTop", formatter: `${t("target")} ${f4(lastTarget)}` },
          data: [{ yAxis: lastTarget, name: t("target") }],
        } },
      { name: t("trajectory"), type: "line", data: trajectory, symbol: "none", lineStyle: { width: 2, type: "dashed", color: "#ffd166" } },
    ],
  });
  window.addEventListener("resize", () => chart.resize(), { once: true });
}

const LEVELS = ["advanced", "intermediate", "basic", "none", "undeclared"];

async function viewScenarios() {
  const { scenarios: v } = await api(`/api/v1/dashboard/zones/${S.zone}/scenarios`);
  const z = S.zones.find(x => x.id === S.zone);
  const gauges = [["any", "scen_any"], ["intermediate", "scen_intermediate"], ["advanced", "scen_advanced"]].map(([k, label]) =>
    `<div class="gauge" data-coverage="${k}"><div class="glabel">${t(label)}</div>
      <div class="gline">${Charts.bar(v.coverage[k], null, "info")}<b class="value">${pct(v.coverage[k])}</b></div></div>`).join("");
  const stack = Charts.stack(LEVELS.map(l => ({ n: v.by_standing[l] || 0, cls: "lvl-" + l, label: t("lvl_" + l) })));
  const legend = LEVELS.map(l => `<span class="key lvl-${l}"></span>${t("lvl_" + l)} <b>${v.by_standing[l] || 0}</b>`).join(" ");
  const codes = Object.entries(v.by_scenario).map(([code, lv]) =>
    `<tr><td>${esc(code)}</td>${["basic", "intermediate", "advanced"].map(l => `<td class="num">${lv[l] || 0}</td>`).join("")}</tr>`).join("");
  const without = v.without.map(e =>
    `<tr data-enterprise="${esc(e.enterprise)}"><td>${esc(e.name)}</td><td class="mono">${esc(e.enterprise)}</td>
      <td><span class="badge lvl-${e.standing}">${t("lvl_" + e.standing)}</span></td></tr>`).join("");
  return `<section class="card"><h2>${esc(nm(z))} · ${t("scen_title")}</h2>
      <div class="muted">${t("in_scope")} <b>${v.in_scope}</b></div><div class="gauges">${gauges}</div></section>
    <section class="card"><h2>${t("scen_levels")}</h2>${stack}<div class="legend">${legend}</div></section>
    <div class="two">
    <section class="card"><h2>${t("scen_by_code")}</h2><table class="grid-table"><thead><tr><th>${t("scenario")}</th>
      <th class="num">${t("lvl_basic")}</th><th class="num">${t("lvl_intermediate")}</th><th class="num">${t("lvl_advanced")}</th></tr></thead>
      <tbody>${codes || `<tr><td colspan="4" class="muted">${t("no_data_yet")}</td></tr>`}</tbody></table></section>
    <section class="card"><h2>${t("scen_without")} <span class="count-pill">${v.without.length}</span></h2>
      <table class="grid-table" id="without"><thead><tr><th>${t("enterprise")}</th><th>${t("credit_code")}</th><th>${t("reason")}</th></tr></thead>
      <tbody>${without || `<tr><td colspan="3" class="good">${t("scen_without_none")}</td></tr>`}</tbody></table></section></div>`;
}

function zoneName(id) {
  const z = S.zones.find(x => x.id === id);
  if (z) return nm(z);
  // At a center there are no zone records: the names come with the cities.
  const c = S.cities.find(c => c.names && c.names[id]);
  return c && S.lang !== "en" ? c.names[id] : id;
}

async function viewAlerts() {
  const [act, hist] = await Promise.all([api("/api/v1/alerts"), api("/api/v1/alerts/history?limit=30")]);
  // What the user is typing survives a live redraw.
  const token = $("#write-token")?.value || sessionStorage.getItem("zonesync.writeToken") || "";
  const by = $("#ack-by")?.value || sessionStorage.getItem("zonesync.ackBy") || t("ack_by_default");
  const rows = act.alerts.map(a => {
    const ph = a.phase || {};
    const ackCell = ph.acked_by
      ? `<span class="badge acked">${t("acked")}</span> <span class="acked-by">${esc(ph.acked_by)}</span>`
      : ph.state === "active" ? `<button type="button" class="ack" data-key="${esc(a.key)}">${t("ack")}</button>` : "";
    return `<tr class="alert ${esc(ph.state)}" data-key="${esc(a.key)}">
      <td><span class="badge phase-${esc(ph.state)}">${t("phase_" + ph.state)}</span></td>
      <td>${esc(t("rule_" + a.rule))}</td>
      <td>${esc(a.subject.name)}<div class="muted">${esc(zoneName(a.subject.zone))}</div></td>
      <td class="num"><b>${human(a.value, "")}</b></td><td class="num">${human(a.limit, "")}</td>
      <td>${esc(a.period)}</td><td>${fmtTime(ph.raised_at)}</td><td>${ackCell}</td></tr>`;
  }).join("");
  const events = hist.events.map(e =>
    `<tr><td>${fmtTime(e.at)}</td><td><span class="badge tr-${esc(e.transition)}">${t("tr_" + e.transition)}</span></td>
      <td>${esc(t("rule_" + e.rule))}</td><td>${esc(e.subject.name)}</td><td class="num">${human(e.value, "")}</td>
      <td class="num">${human(e.limit, "")}</td><td>${esc(e.period)}</td></tr>`).join("");
  return `<section class="card"><h2>${t("alerts_active")} <span class="count-pill">${act.alerts.length}</span></h2>
      <div class="ack-form"><label>${t("ack_token")} <input id="write-token" type="password" autocomplete="off" value="${esc(token)}"></label>
        <label>${t("ack_by")} <input id="ack-by" type="text" maxlength="64" value="${esc(by)}"></label></div>
      <table class="grid-table"><thead><tr><th>${t("phase")}</th><th>${t("rule")}</th><th>${t("subject")}</th><th class="num">${t("value")}</th>
      <th class="num">${t("limit")}</th><th>${t("period")}</th><th>${t("raised_at")}</th><th>${t("ack")}</th></tr></thead>
      <tbody>${rows || `<tr><td colspan="8" class="good">${t("alerts_none")}</td></tr>`}</tbody></table></section>
    <section class="card"><h2>${t("alerts_recent")}</h2><table class="grid-table"><thead><tr><th>${t("time")}</th><th>${t("transition")}</th>
      <th>${t("rule")}</th><th>${t("subject")}</th><th class="num">${t("value")}</th><th class="num">${t("limit")}</th><th>${t("period")}</th></tr></thead>
      <tbody>${events || `<tr><td colspan="7" class="muted">${t("history_none")}</td></tr>`}</tbody></table></section>`;
}

async function acknowledge(key) {
  const token = $("#write-token").value.trim();
  const by = $("#ack-by").value.trim() || t("ack_by_default");
  if (!token) return toast(t("ack_need_token"), true);
  sessionStorage.setItem("zonesync.writeToken", token);
  sessionStorage.setItem("zonesync.ackBy", by);
  const r = await fetch("/api/v1/alerts/ack", {
    method: "POST",
    headers: { "Content-Type": "application/json", ...authHeaders(token) },
    body: JSON.stringify({ key, by }),
  });
  if (r.ok) toast(t("ack_done"));
  else toast(`${t("ack_failed")}: ${r.status} ${(await r.json().catch(() => ({}))).error || ""}`, true);
  await render();
}

// The enterprises to chase and what each is missing; silent gateways after them.
function chaseSection(c) {
  const rows = c.enterprises.map(e => `<tr class="chase" data-enterprise="${esc(e.enterprise)}"><td>${esc(e.name)}</td>
    <td class="mono">${esc(e.enterprise)}</td><td><ul class="why">${(S.lang === "en" ? e.why.map(whyEn) : e.why_zh).map(w => `<li>${esc(w)}</li>`).join("")}</ul></td></tr>`).join("");
  const silent = c.silent_agents.length
    ? `<div class="silent-agents">${t("silent_agents")}: ${c.silent_agents.map(a => `<span class="mono">${esc(a.agent)}</span> <span class="muted">(${t("last_seen")} ${fmtTime(a.last_seen)})</span>`).join("、")}</div>` : "";
  return `<section class="card briefing chase-list"><h2>${t("to_chase")} <span class="count-pill">${c.enterprises.length}</span></h2>
    <table class="grid-table" id="chase"><thead><tr><th>${t("enterprise")}</th><th>${t("credit_code")}</th><th>${t("to_chase_why")}</th></tr></thead>
    <tbody>${rows || `<tr><td colspan="3" class="good">${t("to_chase_none")}</td></tr>`}</tbody></table>${silent}</section>`;
}

// A reason in English, from its fields (the Chinese comes from the server).
function whyEn(w) {
  if (w.kind === "off_trajectory") return `energy intensity ${signedPct(w.gap)} above the trajectory (${spanLabel(w.month)})`;
  if (w.kind === "undeclared") return `not declared: ${w.attributes.map(a => a.join(" or ")).join(", ")} (${w.goals.join(", ")})`;
  if (w.kind === "incomplete") return `readings incomplete this month: ${pct(w.completeness)}`;
  return "no data this month";
}

async function viewBriefing() {
  const [g, c] = await Promise.all([
    api(`/api/v1/zones/${S.zone}/goals?${q()}&compare=true&pace=true`),
    api(`/api/v1/zones/${S.zone}/chase?${q()}`),
  ]);
  const rows = g.goals.map(r => `<tr class="goal" data-goal="${esc(r.id)}"><td class="mono">${esc(r.id)}</td><td>${esc(nm(r))}</td>
    <td class="num value">${amount(r.value, r.unit).join(" ").trim()}</td>
    <td class="span-label">${esc(spanLabel(r.period))}</td><td class="compare">${cmpText(g.comparisons && g.comparisons[r.id])}</td>
    <td class="num">${esc(targetText(r))}</td><td>${statusBadge(r.status)}</td>
    <td class="num completeness">${pct(r.completeness)}</td><td class="num">${r.unknown}</td><td>${esc(r.deadline || "")}${paceLine(g.pace && g.pace[r.id], r.unit)}</td></tr>`).join("");
  return `<section class="card briefing">
    <div class="brief-head"><div><h2>${esc(nm(g))} · ${t("briefing_title")}</h2>
      <div class="muted">${t("period")} ${esc(g.period)} · ${t("generated")} ${fmtTime(g.computed_at)}</div></div>
      <div class="no-print"><button type="button" id="export-xlsx">${t("export_xlsx")}</button>
      <button type="button" id="export-csv">${t("export_csv")}</button>
      <button type="button" id="print">${t("print")}</button></div></div>
    ${statusChips(g.goals)}
    <table class="grid-table"><thead><tr><th></th><th>${t("goal")}</th><th class="num">${t("value")}</th><th>${t("span")}</th><th>${t("yoy")} · ${t("mom")}</th><th class="num">${t("target")}</th>
      <th>${t("status")}</th><th class="num">${t("completeness")}</th><th class="num">${t("unknown")}</th><th>${t("deadline")}</th></tr></thead>
      <tbody>${rows}</tbody></table></section>${chaseSection(c.chase)}`;
}

async function exportReport(format) {
  const r = await fetch(`/api/v1/zones/${S.zone}/report?format=${format}&${q()}`, { headers: authHeaders(S.readToken) });
  if (!r.ok) return toast(`${format.toUpperCase()}: ${r.status}`, true);
  const a = document.createElement("a");
  a.href = URL.createObjectURL(await r.blob());
  a.download = `zonesync-${S.zone}-${S.period}.${format}`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

// ---------------------------------------------------------------- frame

const VIEWS = { city: viewCity, overview: viewOverview, energy: viewEnergy, scenarios: viewScenarios, alerts: viewAlerts, briefing: viewBriefing };

function toast(msg, bad) {
  const el = $("#toast");
  el.textContent = msg;
  el.className = "toast" + (bad ? " bad" : "");
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (el.hidden = true), 2500);
}

function applyLabels() {
  document.documentElement.lang = S.lang === "en" ? "en" : "zh-CN";
  document.title = t("title") + " · zonesync";
  document.querySelectorAll("[data-i18n]").forEach(el => (el.textContent = t(el.dataset.i18n)));
  $("#lang").textContent = t("lang_switch");
  document.querySelectorAll("#tabs a").forEach(a => a.classList.toggle("active", a.dataset.tab === S.tab));
  $("#zone").innerHTML = S.zones.map(z => `<option value="${esc(z.id)}"${z.id === S.zone ? " selected" : ""}>${esc(nm(z))}</option>`).join("");
  $("#zone").parentElement.hidden = ["city", "overview", "alerts"].includes(S.tab);
  document.querySelectorAll("#tabs a").forEach(a => (a.hidden = S.role === "center" && a.dataset.tab !== "city"));
  $("#period").innerHTML = monthsBack(24).map(m =>
    `<option value="${m}"${m === S.period ? " selected" : ""}>${S.lang === "en" ? m : m.replace("-", "年") + "月"}${m === currentMonth() ? (S.lang === "en" ? " (in progress)" : "（进行中）") : ""}</option>`).join("");
  const note = progressNote(S.period);
  $("#period-note").textContent = note;
  $("#period-note").hidden = !note;
}

function saveUrl() {
  const p = new URLSearchParams({ lang: S.lang, zone: S.zone || "", period: S.period });
  if (S.tab === "city" && S.kiosk && S.city) p.set("city", S.city);
  // A kiosk keeps its own settings in the address, so a reload carries on.
  if (S.kiosk) {
    p.set("kiosk", "1");
    p.set("every", String(S.every));
    // Left to itself, a wall screen moves on to each new complete month.
    if (!S.periodChosen) p.delete("period");
  }
  history.replaceState(null, "", `?${p}#${S.tab}`);
}

// Kiosk: `?kiosk=1` (and `every=` seconds, default 30) turns the page into a
// wall screen that runs itself: one zone per screen, the next one every
// `every` seconds, scaled so nothing is scrolled off.
function fitScreen() {
  const view = $("#view");
  view.style.transform = "";
  view.style.width = "";
  const free = window.innerHeight - view.getBoundingClientRect().top - 8;
  const k = Math.min(1, free / Math.max(1, view.scrollHeight));
  if (k < 1) {
    view.style.transformOrigin = "top left";
    view.style.transform = `scale(${k})`;
    view.style.width = `${100 / k}%`;
  }
  document.body.dataset.scale = k.toFixed(3);
}

// The screens a kiosk turns through: started on the city view or the
// overview, each city's table and then each zone's goals, in turn; started
// on another tab (energy, scenarios), that tab for each zone.
function kioskScreens() {
  const zones = S.zones.map(z => ({ tab: S.tab === "city" ? "overview" : S.tab, zone: z.id }));
  if (S.tab !== "city" && S.tab !== "overview") return zones;
  return S.cities.map(c => ({ tab: "city", city: c.city })).concat(zones);
}

function startKiosk() {
  document.body.classList.add("kiosk");
  setInterval(() => {
    const screens = kioskScreens();
    if (!screens.length) return;
    const i = screens.findIndex(x => x.tab === S.tab && (x.tab === "city" ? x.city === S.city : x.zone === S.zone));
    const next = screens[(i + 1) % screens.length];
    S.tab = next.tab;
    if (next.city) S.city = next.city;
    if (next.zone) S.zone = next.zone;
    if (!S.periodChosen) S.period = lastCompleteMonth();
    render();
  }, S.every * 1000);
  window.addEventListener("resize", fitScreen);
}

let rendering = null;
async function render() {
  // One render at a time; a request made meanwhile runs once after it.
  if (rendering) { render.again = true; return rendering; }
  rendering = (async () => {
    applyLabels();
    saveUrl();
    const view = $("#view");
    if (!view.innerHTML) view.innerHTML = `<div class="loading">${t("loading")}</div>`;
    try {
      const cs = await api("/api/v1/cities");
      S.cities = cs.cities;
      S.role = cs.role;
      // A center holds no zone's own data: only its city and province tables.
      if (S.role === "center") S.tab = "city";
      S.zones = S.role === "center" ? [] : (await api("/api/v1/zones")).zones;
      if (!S.zones.some(z => z.id === S.zone)) S.zone = S.zones.length ? S.zones[0].id : null;
      if (!S.cities.some(c => c.city === S.city)) S.city = S.cities.length ? S.cities[0].city : null;
      applyLabels();
      S.after = [];
      const ready = S.tab === "city" ? S.city : S.zone;
      const html = ready ? await VIEWS[S.tab]() : `<div class="loading">${t("no_data_yet")}</div>`;
      const y = window.scrollY;
      view.innerHTML = html;
      // Charts drawn into the new HTML (ECharts needs its element in place).
      for (const f of S.after.splice(0)) f();
      if (S.kiosk) fitScreen(); else window.scrollTo(0, y);
      $("#token-bar").hidden = true;
    } catch (e) {
      if (!(e instanceof NeedToken)) view.innerHTML = `<div class="error">${esc(e.message)}</div>`;
    }
    S.renders += 1;
    document.body.dataset.rendered = `${S.tab}:${S.lang}:${S.renders}`;
  })();
  await rendering;
  rendering = null;
  if (render.again) { render.again = false; await render(); }
}

// A change re-renders at most every LIVE_MS, so a busy zone does not make the screen flicker.
const LIVE_MS = 5000;
let lastLive = 0, liveTimer = null;
function liveRender() {
  if (liveTimer) return;
  liveTimer = setTimeout(() => { liveTimer = null; lastLive = Date.now(); render(); },
    Math.max(0, lastLive + LIVE_MS - Date.now()));
}

// Live updates: the event stream (read with fetch, so the access token can be sent).
async function follow() {
  const live = $("#live"), text = $("#live-text");
  for (;;) {
    if (S.role === "center") {
      // A center has no event stream: its tables are redrawn every 15 s.
      live.className = "live on";
      text.textContent = `${t("polling")} · ${t("updated")} ${new Date().toLocaleTimeString(S.lang === "en" ? "en-GB" : "zh-CN", { hour12: false, timeZone: "Asia/Shanghai" })}`;
      await new Promise(res => setTimeout(res, 15000));
      render();
      continue;
    }
    try {
      const r = await fetch("/api/v1/dashboard/events", { headers: authHeaders(S.readToken) });
      if (!r.ok || !r.body) throw new Error(String(r.status));
      live.className = "live on";
      text.textContent = t("live");
      const reader = r.body.getReader(), dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          const data = block.split("\n").filter(l => l.startsWith("data:")).map(l => l.slice(5).trim()).join("");
          if (!data) continue;
          const fp = data;
          const first = S.live === null;
          if (fp !== S.live) {
            S.live = fp;
            if (!first) liveRender();
            text.textContent = `${t("live")} · ${t("updated")} ${new Date().toLocaleTimeString(S.lang === "en" ? "en-GB" : "zh-CN", { hour12: false, timeZone: "Asia/Shanghai" })}`;
          }
        }
      }
    } catch (e) {
      // fall through to the retry below
    }
    live.className = "live off";
    text.textContent = t("live_off");
    await new Promise(res => setTimeout(res, 3000));
  }
}

function init() {
  const p = new URLSearchParams(location.search);
  S.lang = (p.get("lang") || localStorage.getItem("zonesync.lang")) === "en" ? "en" : "zh";
  S.zone = p.get("zone") || null;
  S.kiosk = p.get("kiosk") === "1";
  S.periodChosen = p.has("period");
  S.every = Math.min(3600, Math.max(2, Number(p.get("every")) || 30));
  // Set once with ?token=… (e.g. in the kiosk's start URL); saveUrl drops it
  // from the address bar, the screen keeps it.
  if (p.get("token")) {
    S.readToken = p.get("token").trim();
    localStorage.setItem("zonesync.readToken", S.readToken);
  }
  S.period = /^\d{4}-\d{2}$/.test(p.get("period") || "") ? p.get("period") : lastCompleteMonth();
  S.city = p.get("city") || null;
  // City and province first: what most of the plans' targets are judged on.
  S.tab = VIEWS[location.hash.slice(1)] ? location.hash.slice(1) : "city";
  $("#period").addEventListener("change", e => { if (e.target.value) { S.period = e.target.value; render(); } });
  $("#zone").addEventListener("change", e => { S.zone = e.target.value; render(); });
  $("#lang").addEventListener("click", () => {
    S.lang = S.lang === "zh" ? "en" : "zh";
    $("#toast").hidden = true;
    localStorage.setItem("zonesync.lang", S.lang);
    render();
  });
  window.addEventListener("hashchange", () => {
    const tab = location.hash.slice(1);
    if (VIEWS[tab] && tab !== S.tab) { S.tab = tab; $("#view").innerHTML = ""; $("#toast").hidden = true; render(); }
  });
  $("#read-token-apply").addEventListener("click", () => {
    S.readToken = $("#read-token").value.trim();
    localStorage.setItem("zonesync.readToken", S.readToken);
    render();
  });
  $("#view").addEventListener("click", e => {
    const b = e.target.closest("button");
    if (!b) return;
    if (b.classList.contains("ack")) acknowledge(b.dataset.key);
    else if (b.id === "export-csv") exportReport("csv");
    else if (b.id === "export-xlsx") exportReport("xlsx");
    else if (b.id === "print") window.print();
  });
  // The event stream once the first render knows whom it faces (a center has none).
  render().then(follow);
  if (S.kiosk) startKiosk();
}

init();
