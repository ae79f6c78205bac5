// HaloBuzz Ledger console: the same HTTP API as every client. Tokens live
// in this module's memory only (never localStorage or cookies): a reload
// signs out. Every error from the API is shown as its title and detail.

const API = "/api/v1";
const CONSOLE_ROLES = ["admin", "finance", "ops"];
const REFRESH_MS = 5000;

const session = { access: null, refresh: null, user: null, timer: null };

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
    $("overview").hidden = false;
    await refreshOverview();
    session.timer = setInterval(refreshOverview, REFRESH_MS);
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
  $("overview").hidden = true;
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

$("sign-in").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", signOut);
