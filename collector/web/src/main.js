// Sunbox display: Now, History, Cells, Health, Alarms. Live values over one WebSocket
// (/api/live), history from /api/history and /api/energy. Every value shows how old it
// is: fresh, stale (orange), dead (red) or unknown (a dash). Nothing is fetched from
// anywhere but the Pi itself.
import uPlot from "uplot";

const app = {
  devices: new Map(),
  broker: null,
  collectorOnline: null,
  offsetMs: 0, // server clock minus this browser's clock
  staleS: 60,
  deadS: 300,
  link: "connecting", // the page's own WebSocket: connecting, live, lost
  skipped: {},
  messages: 0,
  storage: null, // last /api/health answer about InfluxDB
  disk: null, // the card holding the history: {status: ok|low|full|read-only|unknown, free_bytes, ...}
  backup: null, // the nightly backup: {status: none|ok|overdue|unknown, age_s, size_bytes, error}
  gaps: {}, // device -> 10-minute windows without a reading in the last 24 h
  // the alarm engine (docs/alarms.md): active (null until it has said), history, online
  alarms: { active: null, history: [], online: null },
  ackError: "", // why the last acknowledgement was refused
  history: { range: "24h", quantity: "soc", zoom: null, chart: null, seq: 0 },
};

// --- formatting ------------------------------------------------------------------------

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const known = (v) => v !== null && v !== undefined && Number.isFinite(v);
function num(v, digits = 0, unit = "") {
  if (!known(v)) return "—";
  return `${v.toFixed(digits)}${unit ? "\u202f" + unit : ""}`;
}
function watts(v) {
  if (!known(v)) return "—";
  const a = Math.abs(v);
  return a >= 10000 ? `${(a / 1000).toFixed(1)}\u202fkW` : `${a.toFixed(0)}\u202fW`;
}
function duration(s) {
  if (!known(s)) return "—";
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(s < 36000 ? 1 : 0)} h`;
  return `${Math.round(s / 86400)} d`;
}
const serverNow = () => Date.now() + app.offsetMs;

function freshness(device) {
  if (!device || !known(device.received_ms)) return "unknown";
  const age = (serverNow() - device.received_ms) / 1000;
  if (age < app.staleS) return "fresh";
  return age < app.deadS ? "stale" : "dead";
}
function ageChip(device) {
  const f = freshness(device);
  const text = f === "unknown" ? "no reading" : `${duration(Math.max(0, (serverNow() - device.received_ms) / 1000))} ago`;
  return `<span class="age ${f === "fresh" ? "" : f}" title="${f}">${esc(text)}</span>`;
}
const worst = (list) => ["dead", "stale", "unknown", "fresh"].find((f) => list.includes(f)) || "unknown";

// --- live connection -------------------------------------------------------------------

let retry = 1000;
function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/live`);
  ws.onopen = () => {
    retry = 1000;
    app.link = "live";
    renderStatus();
  };
  ws.onmessage = (event) => {
    const m = JSON.parse(event.data);
    if (known(m.server_time_ms)) app.offsetMs = m.server_time_ms - Date.now();
    if (m.type === "snapshot") {
      app.devices = new Map(m.devices.map((d) => [d.device_id, d]));
      app.broker = m.broker;
      app.collectorOnline = m.collector_online;
      app.disk = m.disk || null;
      app.backup = m.backup || null;
      app.alarms = m.alarms || app.alarms;
      app.staleS = m.stale_after_s;
      app.deadS = m.dead_after_s;
      app.skipped = m.skipped;
      app.messages = m.messages;
      render();
    } else if (m.type === "device") {
      app.devices.set(m.device.device_id, m.device);
      app.messages += 1;
      renderLive();
    } else if (m.type === "broker") {
      app.broker = m.broker;
      renderLive();
    } else if (m.type === "collector") {
      app.collectorOnline = m.online;
      renderLive();
    } else if (m.type === "disk") {
      app.disk = m.disk;
      renderLive();
    } else if (m.type === "backup") {
      app.backup = m.backup;
      renderLive();
    } else if (m.type === "alarms") {
      app.alarms = m.alarms;
      renderLive();
    }
  };
  ws.onclose = () => {
    app.link = "lost";
    renderStatus();
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 10000);
  };
}

// The card states that stop or will soon stop the history: shown in the status bar on
// every page, above a collector that is merely offline (sunbox.disk).
const CARD_ALARM = {
  "read-only": "card read-only: not storing",
  full: "card full: not storing",
  low: "card almost full",
};
function bytes(v) {
  if (!known(v)) return "—";
  return v >= 1e9 ? `${(v / 1e9).toFixed(1)}\u202fGB` : `${Math.round(v / 1e6)}\u202fMB`;
}
function cardFact(d) {
  if (!d) return "—";
  const size = `${bytes(d.free_bytes)} free of ${bytes(d.total_bytes)}`;
  if (d.status === "ok") return `<span class="ok">writable</span>, ${size}`;
  if (d.status === "unknown") return `<span class="warn">unknown</span> (${esc(d.error || "")})`;
  const what = d.status === "low" ? "almost full" : d.status;
  return `<span class="bad">${esc(what)}</span>, ${size}`;
}

function backupFact(b) {
  if (!b || b.status === "none") return `<span class="muted">not set up</span>`;
  const last = known(b.age_s) ? `${duration(b.age_s)} ago, ${bytes(b.size_bytes)}` : "none yet";
  const failed = b.last_run_ok === false && b.error ? ` (last run: ${esc(b.error)})` : "";
  return `<span class="${b.status === "ok" ? "ok" : "bad"}">${last}</span>${failed}`;
}

function renderStatus() {
  const el = document.getElementById("status");
  let text, cls;
  if (app.link !== "live") {
    [text, cls] = [app.link === "lost" ? "display server unreachable, retrying" : "connecting…", "bad"];
  } else if (!app.broker || !app.broker.connected) {
    const since = app.broker ? duration((serverNow() - app.broker.since_ms) / 1000) : "";
    [text, cls] = [`broker down ${since}`, "bad"];
  } else if (app.disk && CARD_ALARM[app.disk.status]) {
    [text, cls] = [CARD_ALARM[app.disk.status], "bad alarm"];
  } else if (app.backup && app.backup.status === "overdue") {
    [text, cls] = [known(app.backup.age_s) ? `last backup ${duration(app.backup.age_s)} ago` : "no backup yet", "bad alarm"];
  } else if (app.collectorOnline === false) {
    [text, cls] = ["collector offline", "warn"];
  } else {
    [text, cls] = [`live · ${new Date(serverNow()).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`, "ok"];
  }
  el.textContent = text;
  el.className = `status ${cls}`;
}

// --- alarms ----------------------------------------------------------------------------

const SEVERITY = { alarm: 0, warning: 1 };
const activeAlarms = () =>
  (app.alarms.active || []).slice().sort((a, b) => SEVERITY[a.severity] - SEVERITY[b.severity] || b.raised_ms - a.raised_ms);
const alarmValue = (a) => (known(a.value) ? ` (${+a.value.toPrecision(3)})` : "");
// minutes, not seconds: the Alarms page then changes only when an alarm does, so a tap on
// its buttons never meets a page being redrawn
const since = (ms) => {
  const age = Math.max(0, (serverNow() - ms) / 1000);
  return age < 60 ? "under a minute" : duration(Math.floor(age / 60) * 60);
};

// On every page: the alarms not yet acknowledged (white on red, or on orange for a
// warning), or once all are acknowledged a quieter line; the engine offline is said too.
// A tap opens the Alarms page.
function renderBanner() {
  const el = document.getElementById("banner");
  const active = activeAlarms();
  const open = active.filter((a) => !known(a.acked_ms));
  let text = "";
  let cls = "";
  if (open.length) {
    const top = open[0];
    const more = active.length > 1 ? ` · +${active.length - 1} more` : "";
    text = `⚠ ${top.device}: ${top.text}${alarmValue(top)}${more}`;
    cls = open.some((a) => a.severity === "alarm") ? "alarm" : "warning";
  } else if (active.length) {
    text = `${active.length} acknowledged alarm${active.length > 1 ? "s" : ""} still active`;
    cls = "acked";
  } else if (app.alarms.online === false) {
    text = "alarm engine offline: no alarm can be raised";
    cls = "warning";
  }
  el.hidden = !text;
  el.textContent = text;
  el.className = `banner ${cls}`;
}

function alarmsPage() {
  const active = activeAlarms();
  const engine = app.alarms.online === true ? `<span class="ok">running</span>` : app.alarms.online === false ? `<span class="bad">offline</span>` : "—";
  const rows = active
    .map((a) => {
      const acked = known(a.acked_ms);
      return `<section class="card alarm-item ${esc(a.severity)} ${acked ? "acked" : ""}" data-alarm="${esc(a.id)}">
        <div class="what"><span class="sev">${esc(a.severity)}</span> <b>${esc(a.device)}</b>: ${esc(a.text)}${esc(alarmValue(a))}</div>
        <div class="when">raised ${esc(since(a.raised_ms))} ago${acked ? ` · acknowledged ${esc(since(a.acked_ms))} ago` : ""}</div>
        ${acked ? "" : `<button data-ack="${esc(a.id)}">Acknowledge</button>`}</section>`;
    })
    .join("");
  const past = (app.alarms.history || [])
    .slice(-20)
    .reverse()
    .map((e) => `<tr><td>${esc(new Date(e.time_ms).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" }))}</td>
      <td class="${e.what === "raised" ? "bad" : e.what === "cleared" ? "ok" : "muted"}">${esc(e.what)}</td>
      <td>${esc(e.alarm.device)}</td><td>${esc(e.alarm.text)}</td></tr>`)
    .join("");
  const none = app.alarms.active === null ? "No word from the alarm engine yet." : "No active alarm.";
  return `<div class="alarm-list">
    ${app.ackError ? `<div class="notice bad">${esc(app.ackError)}</div>` : ""}
    ${rows || `<div class="card notice">${none}</div>`}
    <section class="card gap wide"><h2>Past alarms <span class="muted">engine: ${engine}</span></h2>
      <table><tbody>${past || `<tr><td class="muted">none yet</td></tr>`}</tbody></table></section></div>`;
}

// The display's one write: an alarm acknowledged (the server takes it from the Pi's own
// touchscreen, or a LAN viewer who gave the viewer password).
async function acknowledge(id) {
  app.ackError = "";
  try {
    const response = await fetch("/api/alarms/ack", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ id }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      app.ackError = response.status === 403 ? "Acknowledge on the touchscreen, or set a viewer password." : body.error || `refused (${response.status})`;
    }
  } catch {
    app.ackError = "display server unreachable";
  }
  if (route() === "alarms") showPage();
}

// --- pages -----------------------------------------------------------------------------

const byKind = (kind) => [...app.devices.values()].filter((d) => d.kind === kind && d.state);
const alive = (d) => freshness(d) !== "dead";
function sum(list, pick) {
  const values = list.filter(alive).map(pick).filter(known);
  return values.length ? values.reduce((a, b) => a + b, 0) : null;
}

// A bank's members as the display names them: a bridged site's ids carry its "<site>." prefix.
function members(bank) {
  const site = bank.device_id.includes(".") ? bank.device_id.slice(0, bank.device_id.indexOf(".") + 1) : "";
  const packs = String(bank.state.packs || "").split(",").filter(Boolean).map((id) => site + id);
  return { packs, meter: bank.state.meter ? site + bank.state.meter : null };
}

function nowPage() {
  const banks = byKind("bank");
  const inBank = new Set(banks.flatMap((b) => { const m = members(b); return [...m.packs, m.meter].filter(Boolean); }));
  // what the owner calls a battery: each bank, and each battery in no bank
  const batteries = [...banks, ...byKind("battery").filter((d) => !inBank.has(d.device_id))];
  const chargers = byKind("charger");
  const inverters = byKind("inverter");
  const chargeOut = (s) => (known(s.charge_power) ? s.charge_power : known(s.battery_voltage) && known(s.battery_current) ? s.battery_voltage * s.battery_current : null);
  const pv = sum(chargers, (d) => (known(d.state.pv_power) ? d.state.pv_power : chargeOut(d.state)));
  const charged = sum(chargers, (d) => chargeOut(d.state));
  const battery = sum(batteries, (d) => d.state.power);
  const load = known(charged) && known(battery) ? Math.max(0, charged - battery) : null;
  const ac = sum(inverters, (d) => d.state.ac_out_power);
  const pvVolts = Math.max(...chargers.map((d) => d.state.pv_voltage).filter(known), -1);
  const chargeState = chargers.map((d) => d.state.charge_state).find((s) => s);
  const fc = worst(chargers.map(freshness));
  const fb = worst(batteries.map(freshness));
  const soc = bankSoc(batteries.filter(alive));
  const on = (v) => known(v) && Math.abs(v) >= 5;
  const direction = !known(battery) ? "—" : battery > 5 ? "charging" : battery < -5 ? "discharging" : "idle";
  const node = (x, y, cls, label, big, small) => `
    <g class="node ${cls}" transform="translate(${x},${y})">
      <rect width="170" height="104" rx="14"></rect>
      <text class="label" x="12" y="24">${esc(label)}</text>
      <text class="big" x="12" y="62">${esc(big)}</text>
      <text class="small" x="12" y="88">${esc(small)}</text>
    </g>`;
  const flow = `
    <svg viewBox="0 0 480 400" role="img" aria-label="Power flow: solar ${watts(pv)}, battery ${direction} ${watts(battery)}, load ${watts(load)}">
      <path class="pipe solar ${on(pv) ? "on" : ""}" d="M180 62 H300"></path>
      <path class="pipe charge ${on(charged) ? "on" : ""}" d="M385 114 V200"></path>
      <path class="pipe ${battery < 0 ? "discharge" : "charge"} ${on(battery) ? "on" : ""} ${battery < 0 ? "reverse" : ""}" d="M385 200 H95 V286"></path>
      <path class="pipe load ${on(load) ? "on" : ""}" d="M385 200 V286"></path>
      ${node(10, 10, fc, "Solar", watts(pv), pvVolts >= 0 ? `PV ${num(pvVolts, 1, "V")}` : `${chargers.length} charger(s)`)}
      ${node(300, 10, fc, "Charger", watts(charged), chargeState || "—")}
      ${node(10, 288, fb, "Battery", watts(battery), `${direction}${known(soc) ? ` · ${soc.toFixed(0)} %` : ""}`)}
      ${node(300, 288, worst([fc, fb]), "Load", watts(load), known(ac) ? `AC ${watts(ac)}` : "computed")}
    </svg>`;
  const others = [...app.devices.values()].filter((d) => d.kind !== "battery" && d.kind !== "bank");
  const chips = `<div class="chips">${others
    .map((d) => `<span class="chip" data-device="${esc(d.device_id)}">${esc(d.device_id)} ${ageChip(d)}</span>`)
    .join("")}</div>`;
  const cards = batteries.length
    ? batteries.map((d) => (d.kind === "bank" ? bankCard(d) : batteryCard(d))).join("")
    : `<div class="card notice">No battery reading yet. The collector publishes one per poll.</div>`;
  return `<div class="now"><div class="flow">${flow}${chips}</div><div class="side${batteries.length > 3 ? " compact" : ""}">${cards}</div></div>`;
}

// The SOC of several batteries: weighted by their full-charge capacity when each has one
// (a 100 Ah pack at 50 % and a 280 Ah one at 90 % hold 79 %), else their mean.
function bankSoc(list) {
  const socs = list.filter((d) => known(d.state.soc));
  if (!socs.length) return null;
  if (socs.every((d) => known(d.state.capacity_nominal) && d.state.capacity_nominal > 0)) {
    const full = socs.reduce((a, d) => a + d.state.capacity_nominal, 0);
    return socs.reduce((a, d) => a + d.state.soc * d.state.capacity_nominal, 0) / full;
  }
  return socs.reduce((a, d) => a + d.state.soc, 0) / socs.length;
}

function timeLeft(s) {
  if (known(s.time_to_go)) return `${duration(s.time_to_go)} left`;
  if (known(s.time_to_full)) return `full in ${duration(s.time_to_full)}`;
  if (known(s.current) && s.current < -0.05 && known(s.capacity_remaining)) return `≈ ${duration((s.capacity_remaining / -s.current) * 3600)} left`;
  if (known(s.current) && s.current > 0.05 && known(s.capacity_nominal) && known(s.capacity_remaining))
    return `full in ≈ ${duration((Math.max(0, s.capacity_nominal - s.capacity_remaining) / s.current) * 3600)}`;
  return "";
}

// One card per bank: its SOC, volts and amps, how many packs report, and each member beneath.
function bankCard(d) {
  const s = d.state;
  const f = freshness(d);
  const m = members(d);
  const count = known(s.packs_fresh) && known(s.packs_total) ? `${s.packs_fresh} of ${s.packs_total} packs` : "";
  const partial = s.partial === true;
  const temps = known(s.temperature_min) ? (s.temperature_min.toFixed(0) === s.temperature_max.toFixed(0) ? s.temperature_min.toFixed(0) : `${s.temperature_min.toFixed(0)}–${s.temperature_max.toFixed(0)}`) : "";
  const spread = known(s.cell_voltage_delta) ? `Δ ${(s.cell_voltage_delta * 1000).toFixed(0)} mV` : "";
  const line = (id, what) => {
    const dev = app.devices.get(id);
    const ps = (dev && dev.state) || {};
    const pf = dev && dev.state ? freshness(dev) : "unknown";
    const values = pf === "unknown" ? "no reading" : `${num(ps.soc, 0, "%")} · ${num(ps.current, 1, "A")}`;
    return `<div class="member ${pf}" data-device="${esc(id)}"><span class="name">${esc(id)}${esc(what)}</span><span>${esc(values)}</span>${dev ? ageChip(dev) : `<span class="age unknown">no reading</span>`}</div>`;
  };
  const lines = m.packs.map((id) => line(id, "")).concat(m.meter ? [line(m.meter, " (meter)")] : []).join("");
  const alarms = d.alarms && d.alarms.length ? `<div class="alarms">⚠ ${esc(d.alarms.join(", "))}</div>` : "";
  return `<section class="card battery bank ${f}" data-device="${esc(d.device_id)}" data-time="${esc(s.time_ms)}">
    <h2><span class="name">${esc(d.device_id)}</span><span class="count ${partial ? "partial" : ""}">${esc(count)}</span>${ageChip(d)}</h2>
    <div class="soc v">${known(s.soc) ? `${s.soc.toFixed(0)}<small>%</small>` : "—"}</div>
    <div class="facts v"><b>${num(s.voltage, 2, "V")}</b> · <b>${num(s.current, 1, "A")}</b><br>
      ${esc(timeLeft(s) || "—")}<br>${esc([spread, temps ? `${temps} °C` : ""].filter(Boolean).join(" · ") || "")}</div>
    <div class="members">${lines}</div>${alarms}</section>`;
}

function batteryCard(d) {
  const s = d.state;
  const f = freshness(d);
  const left = timeLeft(s);
  const tlist = (s.temperatures || []).filter(known).concat(known(s.battery_temperature) ? [s.battery_temperature] : []);
  const tlo = Math.min(...tlist).toFixed(0);
  const thi = Math.max(...tlist).toFixed(0);
  const temps = tlist.length ? (tlo === thi ? tlo : `${tlo}–${thi}`) : "";
  const spread = known(s.cell_voltage_delta) ? `Δ ${(s.cell_voltage_delta * 1000).toFixed(0)} mV` : "";
  const alarms = d.alarms && d.alarms.length ? `<div class="alarms">⚠ ${esc(d.alarms.join(", "))}</div>` : "";
  return `<section class="card battery ${f}" data-device="${esc(d.device_id)}" data-time="${esc(s.time_ms)}">
    <h2><span class="name">${esc(d.device_id)}</span>${ageChip(d)}</h2>
    <div class="soc v">${known(s.soc) ? `${s.soc.toFixed(0)}<small>%</small>` : "—"}</div>
    <div class="facts v"><b>${num(s.voltage, 2, "V")}</b> · <b>${num(s.current, 1, "A")}</b><br>
      ${esc(left || "—")}<br>${esc([spread, temps ? `${temps} °C` : ""].filter(Boolean).join(" · ") || "")}</div>
    ${alarms}</section>`;
}

function cellsPage() {
  const batteries = byKind("battery").filter((d) => Array.isArray(d.state.cell_voltages));
  if (!batteries.length) return `<div class="notice">No battery reports cell voltages yet.</div>`;
  return `<div class="cells">${batteries
    .map((d) => {
      const cells = d.state.cell_voltages;
      const present = cells.filter(known);
      const lo = Math.min(2.5, ...present.map((v) => v - 0.05));
      const hi = Math.max(3.65, ...present.map((v) => v + 0.05));
      const min = Math.min(...present);
      const max = Math.max(...present);
      const bits = d.state.balance_bits || 0;
      const bars = cells
        .map((v, i) => {
          const cls = [!known(v) ? "absent" : v === min && min !== max ? "low" : v === max && min !== max ? "high" : "", (bits >>> i) & 1 ? "balancing" : ""].join(" ");
          const h = known(v) ? ((v - lo) / (hi - lo)) * 100 : 2;
          return `<div class="cell ${cls}" title="cell ${i + 1}: ${known(v) ? v.toFixed(3) + " V" : "absent"}">
            <div class="mv">${known(v) ? (v * 1000).toFixed(0) : "—"}</div><div class="fill" data-h="${h.toFixed(1)}"></div><div class="n">${i + 1}</div></div>`;
        })
        .join("");
      const balancing = cells.map((_, i) => ((bits >>> i) & 1 ? i + 1 : null)).filter((i) => i);
      return `<section class="card ${freshness(d)}" data-device="${esc(d.device_id)}">
        <h2><span class="name">${esc(d.device_id)} · ${cells.length} cells</span>${ageChip(d)}</h2>
        <div class="facts v">min <b>${num(min, 3, "V")}</b> · max <b>${num(max, 3, "V")}</b> · spread <b>${present.length ? ((max - min) * 1000).toFixed(0) : "—"} mV</b>
          · balancing: ${balancing.length ? esc(balancing.join(", ")) : "none"}</div>
        <div class="bars">${bars}</div></section>`;
    })
    .join("")}</div>`;
}

function healthPage() {
  const b = app.broker;
  const rows = [...app.devices.values()]
    .sort((a, c) => a.device_id.localeCompare(c.device_id))
    .map((d) => {
      const h = d.health || {};
      const link = h.connected === true || d.online === true ? `<span class="ok">up</span>` : h.connected === false || d.online === false ? `<span class="bad">down</span>` : "—";
      return `<tr data-device="${esc(d.device_id)}"><td>${esc(d.device_id)}</td><td>${esc(d.kind || "—")}</td><td>${ageChip(d)}</td><td>${link}</td>
        <td>${num(h.reconnects)}</td><td>${num(h.rssi, 0, "dBm")}</td><td>${num(h.poll_latency_ms, 0, "ms")}</td><td>${num(h.errors_total)}</td>
        <td>${d.device_id in app.gaps ? app.gaps[d.device_id] : "—"}</td>
        <td class="err">${esc(h.last_error || "")}</td></tr>`;
    })
    .join("");
  const skipped = Object.entries(app.skipped || {});
  const storage = app.storage === null ? "checking…" : app.storage ? `<span class="ok">up</span>` : `<span class="bad">storage unavailable</span>`;
  return `<section class="card"><h2>Services</h2><div class="facts">
      Display ↔ broker: ${b && b.connected ? `<span class="ok">connected</span>` : `<span class="bad">down (${esc(b ? b.reason : "starting")})</span>`}
      · Collector: ${app.collectorOnline === true ? `<span class="ok">online</span>` : app.collectorOnline === false ? `<span class="bad">offline</span>` : "—"}
      · InfluxDB: ${storage}
      · Card: ${cardFact(app.disk)}
      · Backup: ${backupFact(app.backup)}
      · Messages: ${app.messages}, skipped ${skipped.reduce((a, [, n]) => a + n, 0)}${skipped.length ? ` (${esc(skipped.map(([k, n]) => `${k}: ${n}`).join("; "))})` : ""}</div></section>
    <section class="card gap wide"><table><thead><tr><th>device</th><th>kind</th><th>last reading</th><th>link</th><th title="reconnects">reconn.</th>
      <th>RSSI</th><th>poll</th><th>errors</th><th title="10-minute windows without a reading, last 24 h">gaps 24 h</th><th>last error</th></tr></thead><tbody>${rows || `<tr><td colspan="10" class="muted">no device yet</td></tr>`}</tbody></table></section>`;
}

// --- History ---------------------------------------------------------------------------

const QUANTITIES = [
  ["soc", "SOC"],
  ["battery_power", "Battery W"],
  ["solar_power", "Solar W"],
  ["voltage", "Volts"],
  ["cell_delta", "Cell Δ"],
  ["energy", "kWh"],
];
const RANGES = ["1h", "24h", "7d", "30d", "1y", "10y"];
// kWh per hour over 24 h, per day over 7 or 30 days, per month over a year, per year over 10
const ENERGY_RANGES = ["24h", "7d", "30d", "1y", "10y"];
const COLORS = ["#4ca3ff", "#f5b700", "#4cc38a", "#c77dff", "#ff8b3d", "#e5484d"];

function historyPage() {
  const h = app.history;
  const energy = h.quantity === "energy";
  const pressed = (r) => !h.zoom && (energy ? energyRange() : h.range) === r;
  const usable = (r) => !energy || ENERGY_RANGES.includes(r);
  return `<div class="hist">
    <div class="row" role="group" aria-label="Range">${RANGES.map((r) => `<button data-range="${r}" aria-pressed="${pressed(r)}" ${usable(r) ? "" : "disabled"}>${r}</button>`).join("")}
      ${h.zoom ? `<button data-unzoom>Reset zoom</button>` : ""}</div>
    <div class="row" role="group" aria-label="Quantity">${QUANTITIES.map(([q, label]) => `<button data-quantity="${q}" aria-pressed="${h.quantity === q}">${esc(label)}</button>`).join("")}</div>
    <div class="chart" id="chart"><div class="notice">loading…</div></div></div>`;
}

async function loadHistory() {
  const h = app.history;
  const seq = ++h.seq;
  const el = document.getElementById("chart");
  if (!el) return;
  let url;
  if (h.quantity === "energy") url = `/api/energy?range=${energyRange()}`;
  else if (h.zoom) url = `/api/history?quantity=${h.quantity}&start=${h.zoom[0]}&stop=${h.zoom[1]}`;
  else url = `/api/history?quantity=${h.quantity}&range=${h.range}`;
  let body;
  try {
    const response = await fetch(url);
    body = await response.json();
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  } catch (error) {
    if (seq !== h.seq) return;
    const storage = String(error.message).includes("storage unavailable");
    el.innerHTML = `<div class="notice bad">${storage ? "Storage unavailable: history cannot be read right now. The live values on Now keep working." : esc(error.message)}</div>`;
    return;
  }
  if (seq !== h.seq) return;
  if (h.chart) h.chart.destroy();
  h.chart = null;
  el.innerHTML = "";
  if (h.quantity === "energy") return energyChart(el, body);
  if (!body.series.length) {
    el.innerHTML = `<div class="notice">No data in this range.</div>`;
    return;
  }
  const tables = body.series.map((s) => [s.t, s.mean, s.min, s.max]);
  const data = tables.length === 1 ? tables[0] : uPlot.join(tables);
  const series = [{}];
  const bands = [];
  body.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const base = series.length;
    series.push({ label: `${s.device}`, stroke: color, width: 2, value: (u, v) => num(v, body.unit === "V" ? 2 : 1, body.unit) });
    series.push({ label: `${s.device} min`, stroke: "transparent", width: 0, points: { show: false } });
    series.push({ label: `${s.device} max`, stroke: "transparent", width: 0, points: { show: false } });
    bands.push({ series: [base + 2, base + 1], fill: `${color}33` });
  });
  const rect = el.getBoundingClientRect();
  const roomy = rect.height > 420;
  const alarms = body.alarms || [];
  const marked = alarms.length ? ` · ${alarms.length} alarm event${alarms.length === 1 ? "" : "s"}` : "";
  h.chart = new uPlot(
    {
      title: `${body.label} · ${body.bucket.replace("sunbox_", "")} (${body.window_s > 1 ? duration(body.window_s) + " windows" : "raw"})${marked}`,
      width: Math.max(300, rect.width - 8),
      height: Math.max(160, rect.height - (roomy ? 90 : 70)),
      series,
      bands,
      // the x axis always spans the asked range, however few points it holds
      scales: { x: { time: true, range: () => [body.start, body.stop] } },
      axes: [{ stroke: "#9aa7b4", grid: { stroke: "#2c3641" } }, { stroke: "#9aa7b4", grid: { stroke: "#2c3641" }, size: 60 }],
      legend: { show: true, live: roomy },
      cursor: { drag: { x: true, y: false } },
      hooks: {
        ready: [(u) => alarmMarks(u, alarms)],
        setSize: [(u) => alarmMarks(u, alarms)],
        setSelect: [
          (u) => {
            if (u.select.width < 10) return;
            const start = u.posToVal(u.select.left, "x");
            const stop = u.posToVal(u.select.left + u.select.width, "x");
            if (stop - start >= 60) {
              app.history.zoom = [Math.floor(start), Math.ceil(stop)];
              showPage();
            }
          },
        ],
      },
    },
    data,
    el,
  );
  // the legend names the devices; their min and max (the band) need no entry
  for (const row of h.chart.root.querySelectorAll(".u-legend .u-series")) {
    const label = row.querySelector(".u-label");
    if (label && / (min|max)$/.test(label.textContent)) row.style.display = "none";
  }
}

// The alarm engine's events on the chart (docs/web.md): a line at each event's time over
// the plot, red for an alarm raised, amber for a warning raised, green dashed when
// cleared, grey dotted when acknowledged; its title says what, when and where.
const MARK_STYLES = { raised: "solid", cleared: "dashed", acked: "dotted" };
function alarmMarks(u, alarms) {
  for (const old of u.over.querySelectorAll(".alarm-mark")) old.remove();
  for (const e of alarms) {
    const x = u.valToPos(e.t, "x");
    if (!(x >= 0 && x <= u.over.clientWidth)) continue;
    const mark = document.createElement("div");
    const tone = e.event === "raised" ? (e.severity === "alarm" ? "bad" : "warn") : e.event === "cleared" ? "ok" : "muted";
    mark.className = `alarm-mark ${tone}`;
    mark.dataset.event = e.event;
    mark.style.left = `${Math.round(x)}px`;
    mark.style.borderLeftStyle = MARK_STYLES[e.event] || "solid";
    const when = new Date(e.t * 1000).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
    mark.title = `${when} · ${e.event} · ${e.severity} · ${e.device}: ${e.text}`;
    u.over.appendChild(mark);
  }
}

// The energy view's range: the chosen one, or 30 days when it has none (1 h)
function energyRange() {
  return ENERGY_RANGES.includes(app.history.range) ? app.history.range : "30d";
}

const ENERGY_LABELS = {
  "1h": { hour: "2-digit" },
  "1d": { day: "numeric", month: "short" },
  "1mo": { month: "short", year: "2-digit" },
  "1y": { year: "numeric" },
};
const ENERGY_UNITS = { "1h": "hour", "1d": "day", "1mo": "month", "1y": "year" };

function energyChart(el, body) {
  const rows = body.rows;
  if (!rows.some((r) => r.charged !== null || r.solar !== null)) {
    el.innerHTML = `<div class="notice">No energy counted in this range yet.</div>`;
    return;
  }
  const keys = [
    ["solar", "solar", "#f5b700"],
    ["charged", "into battery", "#4cc38a"],
    ["discharged", "out of battery", "#ff8b3d"],
    ["load", "load", "#c77dff"],
  ];
  // an inverter/charger's AC input (shore power, a generator), where there is one
  if (rows.some((r) => r.ac_in !== null && r.ac_in !== undefined)) keys.splice(1, 0, ["ac_in", "AC in", "#4ca3ff"]);
  const max = Math.max(1, ...rows.flatMap((r) => keys.map(([k]) => r[k] || 0)));
  const rect = el.getBoundingClientRect();
  const w = Math.max(300, rect.width - 16);
  const gaps = rows.filter((r) => r.charged === null && r.solar === null).length;
  const partial = rows.filter((r) => r.partial).length;
  const notes = [gaps ? `${gaps} without readings` : "", partial ? `${partial} partial` : ""].filter(Boolean).join(" · ");
  // the legend first: at 800x480 it takes two lines, and the bars get what is left
  const legend = document.createElement("div");
  legend.className = "row legend";
  legend.innerHTML = `${keys.map(([k, name]) => `<span><span class="key ${k}">■</span> ${name}</span>`).join(" ")}
      <span class="muted">kWh per ${ENERGY_UNITS[body.every] || "day"} · max ${(max / 1000).toFixed(2)}${notes ? " · " + esc(notes) : ""}</span>`;
  el.replaceChildren(legend);
  const hgt = Math.max(120, rect.height - legend.getBoundingClientRect().height - 36);
  const slot = w / rows.length;
  const bar = Math.max(2, (slot * 0.8) / keys.length);
  const label = (t) => new Date(t * 1000).toLocaleString([], ENERGY_LABELS[body.every] || ENERGY_LABELS["1d"]);
  const bars = rows
    .map((r, i) => {
      const x0 = i * slot + slot * 0.1;
      // no reading at all: a gap, drawn as one, never as zero energy
      if (r.charged === null && r.solar === null) {
        return `<rect class="energy-gap" x="${x0.toFixed(1)}" y="${(hgt - 24).toFixed(1)}" width="${(slot * 0.8).toFixed(1)}" height="24"><title>${esc(label(r.start))}: no readings</title></rect>`;
      }
      const note = r.partial ? ` (partial: readings cover ${Math.round(r.coverage * 100)} %)` : "";
      // the PV yield per charger, in the solar bar's tooltip
      const byCharger = Object.entries(r.solar_by_charger || {});
      const perCharger = byCharger.length > 1 ? " (" + byCharger.map(([d, wh]) => `${d} ${(wh / 1000).toFixed(2)}`).join(", ") + ")" : "";
      return keys
        .map(([k, , color], j) => {
          const v = r[k] || 0;
          const bh = (v / max) * (hgt - 20);
          return `<rect x="${(x0 + j * bar).toFixed(1)}" y="${(hgt - bh).toFixed(1)}" width="${(bar - 1).toFixed(1)}" height="${bh.toFixed(1)}" fill="${color}"${r.partial ? ' fill-opacity="0.45" class="partial"' : ""}><title>${esc(label(r.start))} ${k}: ${r[k] === null ? "unknown" : (v / 1000).toFixed(2) + " kWh"}${k === "solar" ? esc(perCharger) : ""}${note}</title></rect>`;
        })
        .join("");
    })
    .join("");
  const step = Math.ceil(rows.length / 8);
  const ticks = rows
    // the first label starts at the left edge, so it is not cut off
    .map((r, i) => (i % step === 0 ? `<text x="${(i ? i * slot + slot / 2 : 2).toFixed(1)}" y="${hgt + 16}" fill="#9aa7b4" font-size="13" text-anchor="${i ? "middle" : "start"}">${esc(label(r.start))}</text>` : ""))
    .join("");
  el.innerHTML = `<svg width="${w}" height="${hgt + 22}" role="img" aria-label="Energy per ${ENERGY_UNITS[body.every] || "day"}">${bars}${ticks}</svg>`;
  el.prepend(legend);
}

// --- routing and rendering -------------------------------------------------------------

const PAGES = { now: nowPage, history: historyPage, cells: cellsPage, health: healthPage, alarms: alarmsPage };
const route = () => (location.hash.slice(1) in PAGES ? location.hash.slice(1) : "now");

let lastHtml = "";
function showPage() {
  const page = route();
  for (const a of document.querySelectorAll(".tabs a")) a.setAttribute("aria-current", a.dataset.page === page ? "page" : "false");
  const main = document.getElementById("page");
  main.className = page === "now" ? "fit" : "";
  if (page !== "history" && app.history.chart) {
    app.history.chart.destroy();
    app.history.chart = null;
  }
  const html = PAGES[page]();
  // nothing changed: keep the DOM, and with it a tap in progress on one of its buttons
  if (page !== main.dataset.page || html !== lastHtml) {
    lastHtml = html;
    main.innerHTML = html;
    applyHeights(main);
    main.dataset.page = page;
    if (page === "history") loadHistory();
  }
  if (page === "health") checkStorage();
}

// The CSP allows no inline style attributes: bar heights are set through the CSSOM.
function applyHeights(root) {
  for (const el of root.querySelectorAll("[data-h]")) el.style.height = `${el.dataset.h}%`;
}

function render() {
  renderStatus();
  renderBanner();
  showPage();
}

// Live pages redraw on every reading and every second (ages); History only on request.
function renderLive() {
  renderStatus();
  renderBanner();
  if (route() !== "history") showPage();
}

let storageCheckedAt = 0;
async function checkStorage() {
  if (Date.now() - storageCheckedAt < 10000) return;
  storageCheckedAt = Date.now();
  try {
    const body = await (await fetch("/api/health")).json();
    app.storage = body.storage;
    if (body.disk) app.disk = body.disk;
    if (body.backup) app.backup = body.backup;
    const gaps = await fetch("/api/gaps");
    app.gaps = gaps.ok ? (await gaps.json()).devices : {};
  } catch {
    app.storage = false;
  }
  if (route() === "health") showPage();
}

document.addEventListener("click", (event) => {
  const t = event.target.closest("button");
  if (!t) return;
  if (t.dataset.ack) {
    acknowledge(t.dataset.ack);
    return;
  }
  const h = app.history;
  if (t.dataset.range) Object.assign(h, { range: t.dataset.range, zoom: null });
  else if (t.dataset.quantity) Object.assign(h, { quantity: t.dataset.quantity, zoom: null });
  else if ("unzoom" in t.dataset) h.zoom = null;
  else return;
  showPage();
});
window.addEventListener("hashchange", showPage);
let resizeTimer;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => route() === "history" && loadHistory(), 200);
});
setInterval(renderLive, 1000);
// The kiosk's watchdog restarts the browser when these stop (a hung page stops its timers).
// Only the page on the Pi itself beats (the server takes beats from the kiosk's browser alone).
const onThePi = ["localhost", "127.0.0.1", "[::1]"].includes(location.hostname);
const heartbeat = () => fetch("/api/heartbeat").catch(() => {});
if (onThePi) setInterval(heartbeat, 15000);
document.addEventListener("DOMContentLoaded", () => {
  if (onThePi) heartbeat();
  render();
  connect();
});
