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
      $("trial-total").textContent = "(finance and admin)";
    }
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

// Asks for confirmation with one required text field; resolves to its value,
// or null when cancelled. Every action that moves money goes through here.
function confirmAction(title, text, label) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-label").textContent = label;
  $("confirm-input").value = "";
  return new Promise((resolve) => {
    const done = (value) => {
      $("confirm-form").onsubmit = null;
      $("confirm-cancel").onclick = null;
      dialog.onclose = null;
      if (dialog.open) dialog.close();
      resolve(value);
    };
    $("confirm-form").onsubmit = (event) => {
      event.preventDefault();
      const value = $("confirm-input").value.trim();
      if (value) done(value);
    };
    $("confirm-cancel").onclick = () => done(null);
    dialog.onclose = () => done(null);
    dialog.showModal();
    $("confirm-input").focus();
  });
}

async function loadPayouts() {
  try {
    const page = await call("GET", `${API}/admin/payouts?status=pending&limit=200`);
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
      const actions = document.createElement("td");
      if (isAdmin) {
        const approve = document.createElement("button");
        approve.type = "button";
        approve.textContent = "Approve";
        approve.setAttribute("aria-label", `Approve payout ${payout.id}`);
        approve.addEventListener("click", () => decidePayout(payout, "approve"));
        const reject = document.createElement("button");
        reject.type = "button";
        reject.textContent = "Reject";
        reject.setAttribute("aria-label", `Reject payout ${payout.id}`);
        reject.addEventListener("click", () => decidePayout(payout, "reject"));
        actions.append(approve, " ", reject);
      }
      row.append(actions);
      return row;
    });
    $("payout-rows").replaceChildren(...rows);
    $("payouts-empty").hidden = rows.length > 0;
  } catch (problem) {
    showProblem(problem.title, problem.detail);
  }
}

async function decidePayout(payout, verdict) {
  clearProblem();
  const approving = verdict === "approve";
  const value = await confirmAction(
    approving ? "Approve payout" : "Reject payout",
    `${approving ? "Pay out" : "Return"} ${payout.coins} coins (${money(payout.fiat.amount, payout.fiat.currency)}) ${approving ? "to" : "of"} host ${payout.userId}.`,
    approving ? "External reference of the transfer" : "Reason",
  );
  if (value === null) return;
  try {
    const body = approving ? { externalRef: value } : { reason: value };
    const answer = await call("POST", `${API}/admin/payouts/${payout.id}/${verdict}`, body);
    $("payout-result").textContent =
      `Payout ${payout.id} ${approving ? "approved" : "rejected"}: the ledger is at position ${answer.position}.`;
    await loadPayouts();
  } catch (problem) {
    showProblem(problem.title, problem.detail);
  }
}

async function loadReconciliation() {
  try {
    const page = await call("GET", `${API}/ledger/reconciliation?limit=200`);
    const mismatched = new Set(page.mismatches.map((item) => item.paymentId));
    const rows = page.items.map((item) => {
      const row = document.createElement("tr");
      const flags = [...(item.flags || [])];
      if (mismatched.has(item.paymentId) && flags.length === 0) flags.push("mismatch");
      row.append(
        cell(item.paymentId),
        cell(item.userId),
        cell(item.packageId),
        cell(money((item.amountCents / 100).toFixed(2), item.currency), true),
        cell(item.coinsIssued, true),
        cell(item.coinsReversed, true),
        cell(flags.join(", ")),
      );
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
