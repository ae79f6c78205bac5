// Drives Debian's Chromium through the console (tests/tests/it/console.rs):
// signs in as each account, checks what its role sees, signs out, and saves
// a screenshot of each page. Fails on a page that does not load, on any
// JavaScript error or console error, and on any check that does not hold.
//
// Environment: CHROMIUM_BIN, PLAYWRIGHT_DIR (folder holding
// node_modules/playwright-core), CONSOLE_URL (the service's base URL),
// CONSOLE_OUT (screenshot folder), CONSOLE_ACCOUNTS (JSON: [{name, email,
// password, sees, decides}] with `sees` one of "trial", "workers-only",
// "refused", and `decides` true for the account that approves the
// payout), CONSOLE_SCENE (JSON: {payoutId, account, balance}: a pending
// payout, and an account with its balance after its last entry).

const path = require("path");
const { chromium } = require(path.join(process.env.PLAYWRIGHT_DIR, "node_modules", "playwright-core"));

const STEP_TIMEOUT_MS = 15000;

// The payout queue (approve through the confirmation dialog, the payout
// leaves the queue), reconciliation, and an account's entries.
async function decideAndLookUp(page, account, scene, out, failures) {
  await page.getByRole("button", { name: "Payout queue" }).click();
  const row = page.locator(`tr[data-payout="${scene.payoutId}"]`);
  await row.waitFor();
  await page.screenshot({ path: path.join(out, `payouts-${account.name}.png`), fullPage: true });
  await page.getByRole("button", { name: `Approve payout ${scene.payoutId}` }).click();
  await page.getByRole("dialog").waitFor();
  await page.getByLabel("External reference of the transfer").fill("wire-console-1");
  await page.screenshot({ path: path.join(out, `payout-confirm-${account.name}.png`) });
  await page.getByRole("button", { name: "Confirm" }).click();
  await page.getByRole("status").filter({ hasText: "approved" }).waitFor();
  const result = await page.getByRole("status").innerText();
  if (!/position \d+/.test(result)) failures.push(`${account.name}: the approval reads ${JSON.stringify(result)}`);
  await row.waitFor({ state: "detached" });

  await page.getByRole("button", { name: "Reconciliation" }).click();
  await page.locator("#reconciliation").waitFor({ state: "visible" });
  await page.waitForFunction(() => !document.getElementById("payments-empty").hidden || document.querySelector("#payment-rows tr"));
  await page.screenshot({ path: path.join(out, `reconciliation-${account.name}.png`), fullPage: true });

  await page.getByRole("button", { name: "Accounts" }).click();
  await page.getByLabel("Account or user id").fill(scene.account);
  await page.getByRole("button", { name: "Show entries" }).click();
  await page.locator("#entry-rows tr").first().waitFor();
  const balances = await page.locator("#entry-rows tr td:nth-child(5)").allInnerTexts();
  if (!balances.map((text) => text.trim()).includes(String(scene.balance))) {
    failures.push(`${account.name}: ${scene.account} shows balances ${balances.join(", ")}, not ${scene.balance}`);
  }
  await page.screenshot({ path: path.join(out, `accounts-${account.name}.png`), fullPage: true });
  await page.getByRole("button", { name: "Overview" }).click();
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
      const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
      const page = await context.newPage();
      page.setDefaultTimeout(STEP_TIMEOUT_MS);
      const errors = [];
      page.on("pageerror", (error) => errors.push(`page error: ${error.message}`));
      page.on("console", (message) => {
        if (message.type() === "error") errors.push(`console error: ${message.text()}`);
      });
      const response = await page.goto(`${base}/console`);
      if (!response || response.status() !== 200) {
        failures.push(`${account.name}: /console answered ${response && response.status()}`);
        await context.close();
        continue;
      }
      await page.screenshot({ path: path.join(out, `sign-in-${account.name}.png`) });
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
          if (text !== "(finance and admin)") failures.push(`${account.name}: sees the trial total ${text}`);
        }
        await page.screenshot({ path: path.join(out, `overview-${account.name}.png`), fullPage: true });
        if (account.decides) await decideAndLookUp(page, account, scene, out, failures);
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
