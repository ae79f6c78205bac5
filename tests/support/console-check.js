// Drives Debian's Chromium through the console (tests/tests/it/console.rs):
// signs in as each account, checks what its role sees, signs out, and saves
// a screenshot of each page. Fails on a page that does not load, on any
// JavaScript error or console error, and on any check that does not hold.
//
// Environment: CHROMIUM_BIN, PLAYWRIGHT_DIR (folder holding
// node_modules/playwright-core), CONSOLE_URL (the service's base URL),
// CONSOLE_OUT (screenshot folder), CONSOLE_ACCOUNTS (JSON: [{name, email,
// password, sees, does}] with `sees` one of "trial", "workers-only",
// "refused", and `does` the actions to take: "payout" (approve it),
// "own-adjustment" (try to approve one's own proposal: refused with the
// API's message), "adjustment" (approve it), "resolve" (credit the flagged
// payment), "account" (entries, balance at a time, the CSV statement
// compared with the entries)), CONSOLE_SCENE (JSON: {payoutId, account,
// balance, adjustmentId, paymentId, creditUserId, from, to, today: today's
// row of the daily route}); an account with `chart: "today"` must see
// today's bars drawn with exactly those coins.

const fs = require("fs");
const path = require("path");
const { chromium } = require(path.join(process.env.PLAYWRIGHT_DIR, "node_modules", "playwright-core"));

const STEP_TIMEOUT_MS = 15000;
// Tab presses from a view's button to an action of its first row, at most.
const TAB_PRESSES_MAX = 40;

// Every visible form control (the open dialog's included) has a label: a
// <label> of its own, aria-label or aria-labelledby.
async function checkLabels(page, account, where, failures) {
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll("input, select, textarea")]
      .filter((control) => control.offsetParent !== null)
      .filter((control) => control.labels.length === 0 && !control.getAttribute("aria-label") && !control.getAttribute("aria-labelledby"))
      .map((control) => control.id || control.name || control.outerHTML.slice(0, 80)),
  );
  if (unlabelled.length > 0) failures.push(`${account.name}: unlabelled controls on ${where}: ${unlabelled.join(", ")}`);
}

// Readable at 1280x800 and on a laptop screen (1440x900): nothing wider
// than the window; a screenshot at 1440x900 as well.
async function checkWidths(page, account, where, out, failures) {
  for (const [width, height] of [[1440, 900], [1280, 800]]) {
    await page.setViewportSize({ width, height });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (overflow > 0) failures.push(`${account.name}: ${where} is ${overflow}px wider than a ${width}px window`);
    if (width === 1440) await page.screenshot({ path: path.join(out, `${where}-${account.name}-1440.png`), fullPage: true });
  }
}

// By keyboard alone: Tab from the view's button reaches the button named
// `label`; Enter opens the confirmation with focus inside it; Escape closes
// it, nothing done, and focus is back on the button.
async function dialogByKeyboard(page, account, viewButton, label, failures) {
  await page.getByRole("button", { name: viewButton }).focus();
  let reached = false;
  for (let press = 0; press < TAB_PRESSES_MAX && !reached; press += 1) {
    await page.keyboard.press("Tab");
    reached = await page.evaluate((wanted) => document.activeElement && document.activeElement.getAttribute("aria-label") === wanted, label);
  }
  if (!reached) {
    failures.push(`${account.name}: ${TAB_PRESSES_MAX} Tabs from ${viewButton} never reach ${label}`);
    return;
  }
  await page.keyboard.press("Enter");
  await page.getByRole("dialog").waitFor();
  const inside = await page.evaluate(() => document.getElementById("confirm").contains(document.activeElement));
  if (!inside) failures.push(`${account.name}: the confirmation opened without focus inside it`);
  await page.keyboard.press("Escape");
  await page.getByRole("dialog").waitFor({ state: "hidden" });
  const back = await page.evaluate(() => document.activeElement && document.activeElement.getAttribute("aria-label"));
  if (back !== label) failures.push(`${account.name}: after Escape, focus is on ${JSON.stringify(back)}, not ${label}`);
}

async function approvePayout(page, account, scene, out, failures) {
  await page.getByRole("button", { name: "Payout queue" }).click();
  const row = page.locator(`tr[data-payout="${scene.payoutId}"]`);
  await row.waitFor();
  const risk = await row.locator("td.risk").innerText().catch(() => "");
  if (!risk.includes(scene.risk)) failures.push(`${account.name}: the payout's risk reads ${JSON.stringify(risk)}`);
  await page.screenshot({ path: path.join(out, `payouts-${account.name}.png`), fullPage: true });
  await checkWidths(page, account, "payouts", out, failures);
  await dialogByKeyboard(page, account, "Payout queue", `Reject payout ${scene.payoutId}`, failures);
  if (!(await row.isVisible())) failures.push(`${account.name}: the payout left the queue on Escape`);
  await page.getByRole("button", { name: `Approve payout ${scene.payoutId}` }).click();
  await page.getByRole("dialog").waitFor();
  await checkLabels(page, account, "the confirmation", failures);
  await page.getByLabel("External reference of the transfer").fill("wire-console-1");
  await page.screenshot({ path: path.join(out, `payout-confirm-${account.name}.png`) });
  await page.getByRole("button", { name: "Confirm" }).click();
  await page.locator("#payout-result").filter({ hasText: "approved" }).waitFor();
  const result = await page.locator("#payout-result").innerText();
  if (!/position \d+/.test(result)) failures.push(`${account.name}: the approval reads ${JSON.stringify(result)}`);
  await row.waitFor({ state: "detached" });
  // Its button went with the row: focus moves to the result (once the
  // queue is read again), not lost.
  const moved = await page
    .waitForFunction(() => document.activeElement && document.activeElement.id === "payout-result")
    .then(() => true, () => false);
  if (!moved) {
    const focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
    failures.push(`${account.name}: after the approval, focus is on ${JSON.stringify(focused)}`);
  }
}

async function approveAdjustment(page, account, scene, out, failures, expectRefusal) {
  await page.getByRole("button", { name: "Payout queue" }).click();
  const row = page.locator(`tr[data-adjustment="${scene.adjustmentId}"]`);
  await row.waitFor();
  await page.getByRole("button", { name: `Approve adjustment ${scene.adjustmentId}` }).click();
  await page.getByRole("dialog").waitFor();
  await page.getByRole("button", { name: "Confirm" }).click();
  if (expectRefusal) {
    const alert = page.locator("#problem");
    await alert.waitFor({ state: "visible" });
    const text = await alert.innerText();
    if (!text.includes("their own money")) failures.push(`${account.name}: own approval reads ${JSON.stringify(text)}`);
    await page.screenshot({ path: path.join(out, `adjustment-refused-${account.name}.png`), fullPage: true });
    if (!(await row.isVisible())) failures.push(`${account.name}: the refused adjustment left the queue`);
  } else {
    await page.locator("#payout-result").filter({ hasText: "applied" }).waitFor();
    await row.waitFor({ state: "detached" });
    await page.screenshot({ path: path.join(out, `adjustment-applied-${account.name}.png`), fullPage: true });
  }
}

async function resolvePayment(page, account, scene, out, failures) {
  await page.getByRole("button", { name: "Reconciliation" }).click();
  await page.getByLabel("Status").selectOption("open");
  await page.getByRole("button", { name: "Show", exact: true }).click();
  const row = page.locator(`tr[data-payment="${scene.paymentId}"]`);
  await row.waitFor();
  await page.screenshot({ path: path.join(out, `reconciliation-${account.name}.png`), fullPage: true });
  await checkLabels(page, account, "reconciliation", failures);
  await checkWidths(page, account, "reconciliation", out, failures);
  await page.getByRole("button", { name: `Credit payment ${scene.paymentId}` }).click();
  await page.getByRole("dialog").waitFor();
  const dialog = page.getByRole("dialog");
  await dialog.getByLabel("User id", { exact: true }).fill(scene.creditUserId);
  await dialog.getByLabel("Note", { exact: true }).fill("support ticket, console");
  await page.getByRole("button", { name: "Confirm" }).click();
  await page.locator("#reconciliation-result").filter({ hasText: "credited" }).waitFor();
  await row.waitFor({ state: "detached" });
  await page.getByLabel("Status").selectOption("resolved");
  await page.getByRole("button", { name: "Show", exact: true }).click();
  await row.waitFor();
  const text = await row.innerText();
  if (!text.includes("resolved")) failures.push(`${account.name}: the resolved payment reads ${JSON.stringify(text)}`);
}

async function lookUpAccount(page, account, scene, out, failures) {
  await page.getByRole("button", { name: "Accounts" }).click();
  await page.getByLabel("Account or user id").fill(scene.account);
  await page.getByRole("button", { name: "Show entries" }).click();
  await page.locator("#entry-rows tr").first().waitFor();
  const balances = (await page.locator("#entry-rows tr td:nth-child(5)").allInnerTexts()).map((t) => t.trim());
  if (!balances.includes(String(scene.balance))) {
    failures.push(`${account.name}: ${scene.account} shows balances ${balances.join(", ")}, not ${scene.balance}`);
  }
  const coins = (await page.locator("#entry-rows tr td:nth-child(4)").allInnerTexts()).map((t) => Number(t.trim()));

  await page.getByLabel("Balance at").fill(scene.to);
  await page.getByRole("button", { name: "Show balance" }).click();
  await page.locator("#balance-result").filter({ hasText: "coins" }).waitFor();
  const at = await page.locator("#balance-result").innerText();
  if (!at.includes(`: ${scene.balance} coins`)) failures.push(`${account.name}: balance at reads ${JSON.stringify(at)}`);

  await page.getByLabel("Statement from").fill(scene.from);
  await page.getByLabel("to", { exact: true }).fill(scene.to);
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Download CSV statement" }).click(),
  ]);
  const file = path.join(out, `statement-${account.name}.csv`);
  await download.saveAs(file);
  const lines = fs.readFileSync(file, "utf8").trim().split("\n");
  const header = lines[0].split(",");
  const column = header.indexOf("coins");
  const rows = lines.slice(1).map((line) => line.split(","));
  const entryRows = rows.filter((cells) => !cells.join(",").includes("opening_balance"));
  const sum = rows.reduce((total, cells) => total + Number(cells[column]), 0);
  if (column < 0) failures.push(`${account.name}: the statement has no coins column: ${lines[0]}`);
  if (entryRows.length !== coins.length) {
    failures.push(`${account.name}: the statement has ${entryRows.length} entries, the entries route ${coins.length}`);
  }
  if (sum !== scene.balance) failures.push(`${account.name}: the statement's coins sum to ${sum}, not ${scene.balance}`);
  await page.screenshot({ path: path.join(out, `accounts-${account.name}.png`), fullPage: true });
  await checkLabels(page, account, "accounts", failures);
  await checkWidths(page, account, "accounts", out, failures);
}

// The overview's chart: an SVG with an accessible name and description,
// one group of bars per day of the 30, today's last; with `expected`
// (today's row of the daily route), today's bars carry exactly its coins,
// and a bar is drawn (has height) for each kind with coins.
async function checkChart(page, account, expected, failures) {
  // Empty days have no size: attached, not visible.
  await page.locator("#daily-svg svg g[data-day]").first().waitFor({ state: "attached" });
  const chart = await page.evaluate(() => {
    const svg = document.querySelector("#daily-svg svg");
    const ids = (svg.getAttribute("aria-labelledby") || "").split(" ").filter(Boolean);
    const named = ids.map((id) => document.getElementById(id)).filter((element) => element && svg.contains(element));
    const groups = [...svg.querySelectorAll("g[data-day]")];
    const last = groups[groups.length - 1];
    const bars = {};
    for (const rect of last.querySelectorAll("rect[data-kind]")) {
      bars[rect.dataset.kind] = { coins: Number(rect.dataset.coins), height: Number(rect.getAttribute("height")) };
    }
    return {
      role: svg.getAttribute("role"),
      names: named.map((element) => element.textContent),
      days: groups.length,
      lastDay: last.dataset.day,
      bars,
      rows: document.querySelectorAll("#daily-rows tr").length,
    };
  });
  if (chart.role !== "img" || chart.names.length !== 2 || chart.names.some((text) => !text)) {
    failures.push(`${account.name}: the chart has no accessible name and description: ${JSON.stringify(chart)}`);
  }
  if (chart.days !== 30 || chart.rows !== 30) failures.push(`${account.name}: the chart has ${chart.days} days, ${chart.rows} rows`);
  if (!expected) return;
  if (chart.lastDay !== expected.day) failures.push(`${account.name}: the chart ends on ${chart.lastDay}, not ${expected.day}`);
  const kinds = { purchased: "purchasedCoins", gifted: "giftedCoins", credited: "creditedCoins", paidOut: "paidOutCoins", reversed: "reversedCoins" };
  for (const [kind, key] of Object.entries(kinds)) {
    const bar = chart.bars[kind];
    if (!bar || bar.coins !== expected[key]) {
      failures.push(`${account.name}: today's ${kind} bar reads ${bar && bar.coins}, the API ${expected[key]}`);
    } else if ((bar.coins > 0) !== (bar.height > 0)) {
      failures.push(`${account.name}: today's ${kind} bar is ${bar.height} high for ${bar.coins} coins`);
    }
  }
  for (const kind of ["purchased", "gifted"]) {
    if (!(chart.bars[kind] && chart.bars[kind].coins > 0)) failures.push(`${account.name}: no ${kind} coins drawn today`);
  }
  const description = chart.names[1] || "";
  if (!description.includes(`purchased ${expected.purchasedCoins}`) || !description.includes(`gifted ${expected.giftedCoins}`)) {
    failures.push(`${account.name}: the chart's description reads ${JSON.stringify(description)}`);
  }
}

async function main() {
  const base = process.env.CONSOLE_URL;
  const out = process.env.CONSOLE_OUT;
  const accounts = JSON.parse(process.env.CONSOLE_ACCOUNTS);
  const scene = JSON.parse(process.env.CONSOLE_SCENE);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_BIN,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const failures = [];
  try {
    for (const account of accounts) {
      const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, timezoneId: "UTC", acceptDownloads: true });
      const page = await context.newPage();
      page.setDefaultTimeout(STEP_TIMEOUT_MS);
      const errors = [];
      page.on("pageerror", (error) => errors.push(`page error: ${error.message}`));
      page.on("console", (message) => {
        // Chromium logs every 4xx answer as a failed resource; a refusal the
        // page shows as its problem (checked below) is not a page error.
        // Everything else, 5xx included, is.
        const refusal = /Failed to load resource: the server responded with a status of 4\d\d/;
        if (message.type() === "error" && !refusal.test(message.text())) errors.push(`console error: ${message.text()}`);
      });
      const response = await page.goto(`${base}/console`);
      if (!response || response.status() !== 200) {
        failures.push(`${account.name}: /console answered ${response && response.status()}`);
        await context.close();
        continue;
      }
      await page.screenshot({ path: path.join(out, `sign-in-${account.name}.png`) });
      await checkLabels(page, account, "sign-in", failures);
      await page.getByLabel("Email").fill(account.email);
      await page.getByLabel("Password").fill(account.password);
      await page.getByRole("button", { name: "Sign in" }).click();
      if (account.sees === "refused") {
        await page.getByRole("alert").waitFor();
        const alert = await page.getByRole("alert").innerText();
        if (!alert.includes("Not allowed")) failures.push(`${account.name}: the alert reads ${JSON.stringify(alert)}`);
        if (await page.locator("#overview").isVisible()) failures.push(`${account.name}: sees the overview`);
        await page.screenshot({ path: path.join(out, `refused-${account.name}.png`) });
      } else {
        await page.locator("#overview").waitFor({ state: "visible" });
        // The workers table fills in once /health answered.
        await page.locator("#workers tr").first().waitFor();
        const total = page.locator("#trial-total");
        if (account.sees === "trial") {
          await page.waitForFunction(() => document.getElementById("trial-total").dataset.state !== "unknown");
          const text = (await total.innerText()).trim();
          const state = await total.getAttribute("data-state");
          if (text !== "0" || state !== "ok") failures.push(`${account.name}: trial total ${text} (${state})`);
        } else {
          const text = (await total.innerText()).trim();
          const note = await page.locator("#trial-as-of").innerText();
          if (text !== "—" || !note.includes("for finance and admin")) {
            failures.push(`${account.name}: sees the trial total ${text} (${note})`);
          }
        }
        await checkChart(page, account, account.chart === "today" ? scene.today : null, failures);
        await page.screenshot({ path: path.join(out, `overview-${account.name}.png`), fullPage: true });
        await checkWidths(page, account, "overview", out, failures);
        const signedIn = await page
          .waitForFunction(() => document.activeElement && document.activeElement.id === "overview-title")
          .then(() => true, () => false);
        if (!signedIn) failures.push(`${account.name}: after signing in, focus is not on the overview`);
        const does = account.does || [];
        if (does.includes("payout")) await approvePayout(page, account, scene, out, failures);
        if (does.includes("own-adjustment")) await approveAdjustment(page, account, scene, out, failures, true);
        if (does.includes("adjustment")) await approveAdjustment(page, account, scene, out, failures, false);
        if (does.includes("resolve")) await resolvePayment(page, account, scene, out, failures);
        if (does.includes("account")) await lookUpAccount(page, account, scene, out, failures);
        await page.getByRole("button", { name: "Overview" }).click();
        await page.getByRole("button", { name: "Sign out" }).click();
        await page.locator("#sign-in-section").waitFor({ state: "visible" });
      }
      for (const error of errors) failures.push(`${account.name}: ${error}`);
      await context.close();
    }
  } finally {
    await browser.close();
  }
  if (failures.length > 0) {
    console.error(failures.join("\n"));
    process.exit(1);
  }
  console.log(`console checked for ${accounts.length} accounts; screenshots in ${out}`);
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : String(error));
  process.exit(1);
});
