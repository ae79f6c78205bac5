// HaloBuzz Ledger console: the same HTTP API as every client. Tokens live
// in this module's memory only (never localStorage or cookies): a reload
// signs out. Every error from the API is shown as its title and detail.

const API = "/api/v1";
const CONSOLE_ROLES = ["admin", "finance", "ops"];
const REFRESH_MS = 5000;

const session = { access: null, refresh: null, user: null, timer: null };
const VIEWS = ["overview", "payouts", "reconciliation", "accounts"];
const ENTRIES_PAGE = 50;

const $ = (id) => document.getElementById(id);

function showProblem(title, detail) {
  $("problem-title").textContent = title;
  $("problem-detail").textContent = detail ? ` ${detail}` : "";
  $("problem").hidden = false;
}

function clearProblem() {
  $("problem").hidden = true;
}

// A JSON request; a problem+json answer becomes a thrown {title, detail}.
async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (session.access) headers.Authorization = `Bearer ${session.access}`;
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    throw { title: "The service cannot be reached", detail: String(error) };
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) {
    throw {
      title: (json && json.title) || `HTTP ${response.status}`,
      detail: (json && json.detail) || text.slice(0, 200),
    };
  }
  return json;
}

function roleOf(user) {
  return CONSOLE_ROLES.filter((role) => user.roles.includes(role));
}

async function signIn(event) {
  event.preventDefault();
  clearProblem();
  try {
    const answer = await call("POST", `${API}/auth/login`, {
      email: $("email").value,
      password: $("password").value,
    });
    const roles = roleOf(answer.user);
    session.access = answer.accessToken;
    session.refresh = answer.refreshToken;
    session.user = answer.user;
    $("password").value = "";
    if (roles.length === 0) {
      await signOut();
      showProblem("Not allowed", "The console is for finance, ops and admin accounts.");
      return;
    }
    $("who-name").textContent = `${answer.user.email} (${roles.join(", ")})`;
    $("who").hidden = false;
    $("sign-in-section").hidden = true;
    for (const button of document.querySelectorAll("#views button")) {
      const allowed = button.dataset.roles;
      button.hidden = allowed !== undefined && !allowed.split(" ").some((role) => roles.includes(role));
    }
    $("views").hidden = false;
    await showView("overview");
    // The form that had focus is hidden: focus moves to what replaced it.
    $("overview-title").focus();
    session.timer = setInterval(() => {
      if (!$("overview").hidden) refreshOverview();
    }, REFRESH_MS);
  } catch (problem) {
    showProblem(problem.title, problem.detail);
  }
}

async function signOut() {
  clearInterval(session.timer);
  const refresh = session.refresh;
  if (refresh) {
    try {
      await call("POST", `${API}/auth/logout`, { refreshToken: refresh });
    } catch (problem) {
      showProblem(problem.title, problem.detail);
    }
  }
  Object.assign(session, { access: null, refresh: null, user: null, timer: null });
  $("who").hidden = true;
  $("views").hidden = true;
  for (const view of VIEWS) $(view).hidden = true;
  $("sign-in-section").hidden = false;
  $("email").focus();
}

function workerRow(name, status, position, lag) {
  const row = document.createElement("tr");
  for (const [value, numeric] of [[name, false], [status, false], [position, true], [lag, true]]) {
    const cell = document.createElement("td");
    cell.textContent = value === null || value === undefined ? "—" : String(value);
    if (numeric) cell.className = "number";
    row.append(cell);
  }
  return row;
}

async function refreshOverview() {
  try {
    const roles = roleOf(session.user);
    if (roles.includes("admin") || roles.includes("finance")) {
      const trial = await call("GET", `${API}/ledger/trial-balance?limit=1`);
      const total = $("trial-total");
      total.textContent = String(trial.totalCoins);
      total.dataset.state = trial.totalCoins === 0 ? "ok" : "broken";
      $("trial-as-of").textContent = `${trial.accountsCount} accounts, as of position ${trial.position}.`;
    } else {
      // Ops see the workers and the chart; the total is not theirs.
      $("trial-total").textContent = "—";
      $("trial-as-of").textContent = "The trial balance is for finance and admin accounts.";
    }
    await refreshDaily();
    const health = await call("GET", "/health");
    const rows = [
      workerRow("Projectors", health.checks.projector.status, health.checks.projector.checkpoint, health.checks.projector.lagEvents),
    ];
    if (health.checks.reactor) {
      const reactor = health.checks.reactor;
      rows.push(workerRow("Gift reactor", reactor.status, reactor.position, reactor.lagEvents));
    }
    $("workers").replaceChildren(...rows);
    $("workers-updated").textContent = `Updated ${new Date().toLocaleTimeString()}.`;
  } catch (problem) {
    showProblem(problem.title, problem.detail);
  }
}

// The five kinds of the daily route, in the legend's order.
const KINDS = [
  { key: "purchasedCoins", name: "purchased", css: "kind-purchased", label: "Purchased" },
  { key: "giftedCoins", name: "gifted", css: "kind-gifted", label: "Gifted" },
  { key: "creditedCoins", name: "credited", css: "kind-credited", label: "Credited to hosts" },
  { key: "paidOutCoins", name: "paidOut", css: "kind-paidOut", label: "Paid out" },
  { key: "reversedCoins", name: "reversed", css: "kind-reversed", label: "Reversed" },
];
const DAILY_DAYS = 30;
const SVG = "http://www.w3.org/2000/svg";

function svg(name, attributes, text) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes || {})) element.setAttribute(key, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

// The smallest of 1, 2, 5 times a power of ten at or above `value`.
function niceCeiling(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

// The chart: one group of five bars per UTC day (attributes say the day,
// the kind and the coins, so that a test or a script can read it back), a
// title and a description for assistive technology, and the same figures
// as a table under it.
function drawDaily(daily) {
  const width = 960;
  const height = 260;
  const left = 64;
  const right = 8;
  const top = 12;
  const bottom = 28;
  const plotWidth = width - left - right;
  const plotHeight = height - top - bottom;
  const days = daily.days;
  const peak = Math.max(0, ...days.flatMap((d) => KINDS.map((k) => d[k.key])));
  const scaleMax = niceCeiling(peak);
  const slot = plotWidth / days.length;
  const bar = Math.max(1, (slot - 4) / KINDS.length);
  const totals = Object.fromEntries(KINDS.map((k) => [k.key, days.reduce((t, d) => t + d[k.key], 0)]));
  const today = days[days.length - 1];
  const sentence = (day) => KINDS.map((k) => `${k.label.toLowerCase()} ${day[k.key]}`).join(", ");
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-labelledby": "daily-svg-title daily-svg-desc",
    preserveAspectRatio: "xMidYMid meet",
  });
  chart.append(
    svg("title", { id: "daily-svg-title" }, `Coins per day from ${daily.from} to ${daily.to} (UTC)`),
    svg(
      "desc",
      { id: "daily-svg-desc" },
      `Today (${today.day}): ${sentence(today)} coins. Over ${days.length} days: ${sentence(totals)} coins. The figures are in the table below the chart.`,
    ),
  );
  const axis = svg("g", { class: "axis" });
  for (let tick = 0; tick <= 4; tick += 1) {
    const value = (scaleMax * tick) / 4;
    const y = top + plotHeight - (plotHeight * tick) / 4;
    axis.append(svg("line", { class: tick === 0 ? "baseline" : "grid", x1: left, x2: width - right, y1: y, y2: y }));
    axis.append(svg("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, value.toLocaleString("en-US")));
  }
  days.forEach((day, index) => {
    if (index % 5 === (days.length - 1) % 5) {
      const x = left + slot * index + slot / 2;
      axis.append(svg("text", { x, y: height - 8, "text-anchor": "middle" }, day.day.slice(5)));
    }
  });
  chart.append(axis);
  days.forEach((day, index) => {
    const group = svg("g", { "data-day": day.day });
    const x0 = left + slot * index + 2;
    if (index === days.length - 1) {
      group.append(svg("rect", { class: "today", x: x0 - 2, y: top, width: slot, height: plotHeight }));
    }
    KINDS.forEach((kind, k) => {
      const coins = day[kind.key];
      // A day with coins of a kind shows at least a sliver of it.
      const h = coins > 0 ? Math.max(1, (plotHeight * coins) / scaleMax) : 0;
      const rect = svg("rect", {
        class: kind.css,
        x: x0 + bar * k,
        y: top + plotHeight - h,
        width: Math.max(1, bar - 1),
        height: h,
        "data-kind": kind.name,
        "data-coins": coins,
      });
      rect.append(svg("title", {}, `${day.day}, ${kind.label.toLowerCase()}: ${coins} coins`));
      group.append(rect);
    });
    chart.append(group);
  });
  $("daily-svg").replaceChildren(chart);
  $("daily-summary").textContent =
    `Today (${today.day}): ${sentence(today)} coins. As of position ${daily.position}.`;
  $("daily-rows").replaceChildren(
    ...[...days].reverse().map((day) => {
      const row = document.createElement("tr");
      row.append(cell(day.day), ...KINDS.map((k) => cell(day[k.key], true)));
      return row;
    }),
  );
}

async function refreshDaily() {
  const daily = await call("GET", `${API}/ledger/daily?days=${DAILY_DAYS}`);
  drawDaily(daily);
}

function cell(value, numeric) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined || value === "" ? "—" : String(value);
  if (numeric) td.className = "number";
  return td;
}

function money(amount, currency) {
  return `${amount} ${String(currency || "").toUpperCase()}`;
}

async function showView(name) {
  clearProblem();
  for (const view of VIEWS) $(view).hidden = view !== name;
  for (const button of document.querySelectorAll("#views button")) {
    if (button.dataset.view === name) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  const loaders = { overview: refreshOverview, payouts: loadPayouts, reconciliation: loadReconciliation, accounts: null };
  if (loaders[name]) await loaders[name]();
}

// Asks for confirmation, with required text fields ([{name, label,
// value}]); resolves to {name: value}, or null when cancelled. Every action
// that moves money goes through here.
function confirmAction(title, text, fields) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  const inputs = fields.map((field, index) => {
    const input = document.createElement("input");
    input.id = `confirm-field-${index}`;
    input.required = true;
    input.value = field.value || "";
    const label = document.createElement("label");
    label.htmlFor = input.id;
    label.textContent = field.label;
    return { field, label, input };
  });
  $("confirm-fields").replaceChildren(...inputs.flatMap(({ label, input }) => [label, input]));
  // Focus goes back where it was when the dialog closes (Escape, Cancel
  // or Confirm); `settleFocus` moves it on if that element is re-rendered.
  const opener = document.activeElement;
  return new Promise((resolve) => {
    const done = (value) => {
      $("confirm-form").onsubmit = null;
      $("confirm-cancel").onclick = null;
      dialog.onclose = null;
      if (dialog.open) dialog.close();
      if (opener && opener.isConnected && typeof opener.focus === "function") opener.focus();
      resolve(value);
    };
    $("confirm-form").onsubmit = (event) => {
      event.preventDefault();
      const values = {};
      for (const { field, input } of inputs) {
        const value = input.value.trim();
        if (!value) return;
        values[field.name] = value;
      }
      done(values);
    };
    $("confirm-cancel").onclick = () => done(null);
    dialog.onclose = () => done(null);
    dialog.showModal();
    if (inputs.length > 0) inputs[0].input.focus();
  });
}

// After an action re-rendered the table its button was in, focus is on
// nothing: it moves to the action's result, which says what happened.
function settleFocus(resultId) {
  const active = document.activeElement;
  if (!active || active === document.body || !active.isConnected) $(resultId).focus();
}

function actionButton(text, label, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = text;
  button.setAttribute("aria-label", label);
  button.addEventListener("click", onClick);
  return button;
}

// `minPosition`, after an action: the lists read at least its position,
// so that what the action changed shows at once.
function atLeast(position) {
  return position ? `&minPosition=${position}` : "";
}

async function loadPayouts(position) {
  try {
    const page = await call("GET", `${API}/admin/payouts?status=pending&limit=200${atLeast(position)}`);
    const isAdmin = session.user.roles.includes("admin");
    const rows = page.items.map((payout) => {
      const row = document.createElement("tr");
      row.dataset.payout = payout.id;
      row.append(
        cell(payout.id),
        cell(payout.userId),
        cell(payout.coins, true),
        cell(money(payout.fiat.amount, payout.fiat.currency), true),
        cell(new Date(payout.requestedAt).toLocaleString()),
      );
      const risk = cell((payout.risk || []).map((r) => `${r.flag}: ${r.coins} coins`).join("; "));
      if ((payout.risk || []).length > 0) risk.classList.add("risk");
      row.append(risk);
      const actions = document.createElement("td");
      actions.className = "actions";
      if (isAdmin) {
        actions.append(
          actionButton("Approve", `Approve payout ${payout.id}`, () => decidePayout(payout, "approve")),
          " ",
          actionButton("Reject", `Reject payout ${payout.id}`, () => decidePayout(payout, "reject")),
        );
      }
      row.append(actions);
      return row;
    });
    $("payout-rows").replaceChildren(...rows);
    $("payouts-empty").hidden = rows.length > 0;
    await loadAdjustments(isAdmin, position);
  } catch (problem) {
    showProblem(problem.title, problem.detail);
  }
}

async function decidePayout(payout, verdict) {
  clearProblem();
  const approving = verdict === "approve";
  const values = await confirmAction(
    approving ? "Approve payout" : "Reject payout",
    `${approving ? "Pay out" : "Return"} ${payout.coins} coins (${money(payout.fiat.amount, payout.fiat.currency)}) ${approving ? "to" : "of"} host ${payout.userId}.`,
    [{ name: "value", label: approving ? "External reference of the transfer" : "Reason" }],
  );
  if (values === null) return;
  try {
    const body = approving ? { externalRef: values.value } : { reason: values.value };
    const answer = await call("POST", `${API}/admin/payouts/${payout.id}/${verdict}`, body);
    $("payout-result").textContent =
      `Payout ${payout.id} ${approving ? "approved" : "rejected"}: the ledger is at position ${answer.position}.`;
    await loadPayouts(answer.position);
    settleFocus("payout-result");
  } catch (problem) {
    showProblem(problem.title, problem.detail);
  }
}

async function loadAdjustments(isAdmin, position) {
  const page = await call("GET", `${API}/admin/adjustments?status=proposed&limit=200${atLeast(position)}`);
  const rows = page.items.map((adjustment) => {
    const row = document.createElement("tr");
    row.dataset.adjustment = adjustment.id;
    row.append(
      cell(adjustment.id),
      cell(adjustment.userId),
      cell(adjustment.coins, true),
      cell(adjustment.reason),
      cell(adjustment.proposedBy),
    );
    const actions = document.createElement("td");
    actions.className = "actions";
    if (isAdmin) {
      actions.append(
        actionButton("Approve", `Approve adjustment ${adjustment.id}`, () => decideAdjustment(adjustment, "approve")),
        " ",
        actionButton("Reject", `Reject adjustment ${adjustment.id}`, () => decideAdjustment(adjustment, "reject")),
      );
    }
    row.append(actions);
    return row;
  });
  $("adjustment-rows").replaceChildren(...rows);
  $("adjustments-empty").hidden = rows.length > 0;
}

async function decideAdjustment(adjustment, verdict) {
  clearProblem();
  const approving = verdict === "approve";
  const values = await confirmAction(
    approving ? "Approve adjustment" : "Reject adjustment",
    `${approving ? "Apply" : "Reject"} ${adjustment.coins} coins to the wallet of ${adjustment.userId} (${adjustment.reason}).`,
    approving ? [] : [{ name: "reason", label: "Reason" }],
  );
  if (values === null) return;
  try {
    const answer = await call("POST", `${API}/admin/adjustments/${adjustment.id}/${verdict}`, approving ? {} : values);
    $("payout-result").textContent =
      `Adjustment ${adjustment.id} ${approving ? "applied" : "rejected"}: the ledger is at position ${answer.position}.`;
    await loadPayouts(answer.position);
    settleFocus("payout-result");
  } catch (problem) {
    showProblem(problem.title, problem.detail);
  }
}

async function resolvePayment(item, action) {
  clearProblem();
  const crediting = action === "credit";
  const values = await confirmAction(
    crediting ? "Credit payment" : "Dismiss flag",
    crediting
      ? `Credit payment ${item.paymentId} once, a package's coins to a user.`
      : `Close the flags of payment ${item.paymentId} without coins.`,
    crediting
      ? [
          { name: "userId", label: "User id", value: item.claimedUserId || item.userId || "" },
          { name: "packageId", label: "Package id", value: item.claimedPackageId || item.packageId || "" },
          { name: "note", label: "Note" },
        ]
      : [{ name: "note", label: "Note" }],
  );
  if (values === null) return;
  try {
    const answer = await call("POST", `${API}/admin/payments/${encodeURIComponent(item.paymentId)}/resolve`, {
      action,
      ...values,
    });
    $("reconciliation-result").textContent =
      `Payment ${item.paymentId} ${crediting ? "credited" : "dismissed"}: the ledger is at position ${answer.position}.`;
    session.seen = Math.max(session.seen || 0, answer.position);
    await loadReconciliation();
    settleFocus("reconciliation-result");
  } catch (problem) {
    showProblem(problem.title, problem.detail);
  }
}

async function loadReconciliation() {
  try {
    const status = $("payment-status").value;
    const query = new URLSearchParams({ limit: "200" });
    if (status) query.set("status", status);
    // At least the console's own last resolution.
    if (session.seen) query.set("minPosition", String(session.seen));
    const page = await call("GET", `${API}/ledger/reconciliation?${query}`);
    const resolves = roleOf(session.user).some((role) => role === "admin" || role === "finance");
    const mismatched = new Set(page.mismatches.map((item) => item.paymentId));
    const rows = page.items.map((item) => {
      const row = document.createElement("tr");
      const flags = [...(item.flags || [])];
      if (mismatched.has(item.paymentId) && flags.length === 0) flags.push("mismatch");
      row.dataset.payment = item.paymentId;
      row.append(
        cell(item.paymentId),
        cell(item.userId || item.claimedUserId),
        cell(item.packageId || item.claimedPackageId),
        cell(money((item.amountCents / 100).toFixed(2), item.currency), true),
        cell(item.coinsIssued, true),
        cell(item.coinsReversed, true),
        cell(flags.join(", ")),
        cell(item.resolution ? `${item.status} (${item.resolution.action}: ${item.resolution.note})` : item.status),
      );
      const actions = document.createElement("td");
      actions.className = "actions";
      if (resolves && item.status === "open") {
        if (item.coinsIssued === 0) {
          actions.append(actionButton("Credit", `Credit payment ${item.paymentId}`, () => resolvePayment(item, "credit")), " ");
        }
        actions.append(actionButton("Dismiss", `Dismiss payment ${item.paymentId}`, () => resolvePayment(item, "dismiss")));
      }
      row.append(actions);
      return row;
    });
    $("payment-rows").replaceChildren(...rows);
    $("payments-empty").hidden = rows.length > 0;
  } catch (problem) {
    showProblem(problem.title, problem.detail);
  }
}

const entries = { account: null, cursor: null };

// A bare user id reads as the user's wallet.
function accountName(text) {
  const trimmed = text.trim();
  return /^[0-9a-f-]{36}$/i.test(trimmed) ? `wallet:${trimmed}` : trimmed;
}

async function loadEntries(account, cursor) {
  clearProblem();
  try {
    const query = new URLSearchParams({ limit: String(ENTRIES_PAGE) });
    if (cursor) query.set("cursor", cursor);
    const page = await call("GET", `${API}/ledger/accounts/${encodeURIComponent(account)}/entries?${query}`);
    const rows = page.items.map((entry) => {
      const row = document.createElement("tr");
      row.append(
        cell(entry.position, true),
        cell(entry.eventType),
        cell(entry.counterparty),
        cell(entry.coins, true),
        cell(entry.balanceAfter, true),
        cell(new Date(entry.createdAt).toLocaleString()),
      );
      return row;
    });
    $("entry-rows").replaceChildren(...rows);
    entries.account = account;
    entries.cursor = page.nextCursor;
    $("entries-next").hidden = !page.nextCursor;
  } catch (problem) {
    showProblem(problem.title, problem.detail);
  }
}

$("sign-in").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", signOut);
for (const button of document.querySelectorAll("#views button")) {
  button.addEventListener("click", () => showView(button.dataset.view));
}
$("account-lookup").addEventListener("submit", (event) => {
  event.preventDefault();
  loadEntries(accountName($("account-name").value), null);
});
$("entries-next").addEventListener("click", () => loadEntries(entries.account, entries.cursor));
$("reconciliation-filter").addEventListener("submit", (event) => {
  event.preventDefault();
  loadReconciliation();
});

// A datetime-local value (the browser's local time) as RFC 3339 in UTC.
function rfc3339(local) {
  return new Date(local).toISOString().replace(/\.\d{3}Z$/, "Z");
}

$("balance-at").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearProblem();
  const account = accountName($("account-name").value);
  try {
    const at = rfc3339($("balance-time").value);
    const answer = await call("GET", `${API}/ledger/accounts/${encodeURIComponent(account)}/balance?at=${encodeURIComponent(at)}`);
    $("balance-result").textContent = `${answer.account}: ${answer.balance} coins at ${at} (position ${answer.asOf.position}).`;
  } catch (problem) {
    showProblem(problem.title, problem.detail);
  }
});

// The statement as CSV, fetched with the token (never in a URL) and saved.
$("statement").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearProblem();
  const account = accountName($("account-name").value);
  const from = rfc3339($("statement-from").value);
  const to = rfc3339($("statement-to").value);
  const query = new URLSearchParams({ from, to });
  try {
    const response = await fetch(`${API}/ledger/accounts/${encodeURIComponent(account)}/statement?${query}`, {
      headers: { Accept: "text/csv", Authorization: `Bearer ${session.access}` },
    });
    if (!response.ok) {
      const problem = await response.json().catch(() => ({}));
      throw { title: problem.title || `HTTP ${response.status}`, detail: problem.detail || "" };
    }
    const blob = await response.blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = `statement-${account.replace(/[^a-z0-9_-]/gi, "_")}.csv`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  } catch (problem) {
    showProblem(problem.title, problem.detail);
  }
});
