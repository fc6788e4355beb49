// Drives the seeder's admin page in headless Chromium, as an office admin would: claim with
// the setup code, set the password, open a page that doesn't exist, add a space by its seed
// code (a typo first, which stays in the form with its group marked), watch the
// space's byte count rise live while a member syncs, read the peer code and add a partner by
// one on the Peers page, log out, fail to log in with a wrong password. Run by seeder/tests/admin_browser.rs, which starts the real daemon and the member.
//
// Talks to the Rust test over stdout lines: "sync-now" asks it to start the member's sync;
// the last line is "ok" on success. Screenshots go to $SHOTS.
import { chromium } from "playwright-core";

const url = process.env.SEEDER_URL;
const setupCode = process.env.SETUP_CODE;
const seedCode = process.env.SEED_CODE;
const shots = process.env.SHOTS;
const password = "a long office password";
const deadline = (ms) => Date.now() + ms;

function fail(message) {
  console.error("FAIL: " + message);
  process.exit(1);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });

  // An unclaimed seeder shows the claim page.
  await page.goto(url + "/");
  if (!page.url().endsWith("/claim")) fail("expected the claim page, got " + page.url());
  await page.screenshot({ path: shots + "/claim.png" });
  const claim = page.locator("form[action='/claim']").first();
  await claim.locator("input[name=setup_code]").fill(setupCode);
  await claim.locator("input[name=password]").fill(password);
  await claim.locator("input[name=password_again]").fill(password);
  await claim.locator("button[type=submit]").click();
  await page.waitForURL(url + "/");
  console.log("claimed");

  // A mistyped address gets the site's own "not found" page, with the way to the dashboard.
  const missing = await page.goto(url + "/spaces/no-such-page");
  if (missing.status() !== 404) fail("an unknown path answered " + missing.status());
  if ((await page.locator("h1").textContent()).trim() !== "Page not found") fail("no not-found page");
  if ((await page.locator("main a[href='/']").count()) !== 1) fail("no link to the dashboard");
  await page.screenshot({ path: shots + "/not-found.png" });
  console.log("unknown path: styled 404");

  // A typo in the seed code is caught with a clear message; what was typed stays in the form
  // and the group of five characters that holds the typo is marked.
  await page.goto(url + "/spaces");
  const typo = seedCode.slice(0, -1) + (seedCode.endsWith("a") ? "b" : "a");
  await page.fill("input[name=seed_code]", typo);
  await page.click("form[action='/spaces'] button[type=submit]");
  const flash = await page.locator(".flash.error").textContent();
  if (!/seed code has a typo/i.test(flash)) fail("no clear message for a typo: " + flash);
  const kept = await page.inputValue("input[name=seed_code]");
  if (kept !== typo) fail("the typed code was not kept: " + kept);
  const marked = (await page.locator(".flash.error mark").textContent()).trim();
  if (marked !== typo.split("-").pop()) fail("the wrong group is marked: " + marked);
  await page.locator("input[name=seed_code]").scrollIntoViewIfNeeded();
  await page.screenshot({ path: shots + "/seed-code-typo.png", fullPage: true });
  console.log("typo refused: " + flash.trim() + " (marked " + marked + ")");

  await page.fill("input[name=seed_code]", seedCode);
  await page.fill("input[name=name]", "office");
  await page.click("form[action='/spaces'] button[type=submit]");
  await page.locator(".flash:not(.error)").waitFor();
  const bytes = page.locator("[data-live='space:office:bytes']");
  const before = (await bytes.textContent()).trim();
  console.log("space added, holding " + before);

  // The page is not reloaded from here on: the numbers change through the live stream.
  await page.evaluate(() => { window.__sameDocument = true; });
  console.log("sync-now");
  const seen = [before];
  const until = deadline(120000);
  let last = before;
  while (Date.now() < until) {
    const now = (await bytes.textContent()).trim();
    if (now !== last) { seen.push(now); last = now; }
    if (/MiB/.test(now) && parseFloat(now) >= 8) break;
    await page.waitForTimeout(100);
  }
  if (!(/MiB/.test(last) && parseFloat(last) >= 8)) fail("bytes never rose: " + seen.join(" → "));
  if (!(await page.evaluate(() => window.__sameDocument === true))) fail("the page was reloaded");
  console.log("live byte counts: " + seen.join(" → "));
  const health = page.locator("[data-live='space:office:health']");
  const healthUntil = deadline(60000);
  while (Date.now() < healthUntil && !/held complete/.test(await health.textContent())) {
    await page.waitForTimeout(100);
  }
  const healthNow = (await health.textContent()).trim();
  if (!/held complete/.test(healthNow)) fail("health line never said complete: " + healthNow);
  console.log("health: " + healthNow);
  await page.screenshot({ path: shots + "/spaces.png", fullPage: true });
  await page.goto(url + "/");
  await page.screenshot({ path: shots + "/dashboard.png", fullPage: true });

  // The Peers page gives this seeder's peer code (with its QR code) and what the router did,
  // and takes a partner's peer code.
  await page.goto(url + "/peers");
  const own = (await page.locator("code.peer-code").textContent()).trim();
  if (!/^seeder:[0-9a-f]{64}@/.test(own)) fail("no peer code on the Peers page: " + own);
  if ((await page.locator("div.qr svg").count()) !== 1) fail("no QR code of the peer code");
  const mapping = await page.locator("body").innerText();
  if (!/Port mapping: off/.test(mapping)) fail("the port mapping is not described");
  const partner = "seeder:" + "cd".repeat(32) + "@127.0.0.1:9";
  await page.fill("form[action='/peers'] input[name=address]", partner);
  await page.click("form[action='/peers'] button[type=submit]");
  await page.locator(".flash:not(.error)").waitFor();
  if (!(await page.locator("article.partner").innerText()).includes("127.0.0.1:9")) {
    fail("the partner added by peer code is not listed");
  }
  console.log("peer code " + own.slice(0, 24) + "…, partner added by code");
  await page.screenshot({ path: shots + "/peers.png", fullPage: true });

  // The browser logs the 404 and 422 answers it was meant to get; anything else is a fault.
  const faults = errors.filter((e) => !/status of (404|422)/.test(e));
  if (faults.length) fail("errors in the page: " + faults.join("; "));

  // Log out, then a wrong password is refused (the browser logs the 401 itself).
  await page.click("form.logout button");
  await page.waitForURL(url + "/login");
  await page.fill("input[name=password]", "not the password");
  await page.click("form[action='/login'] button[type=submit]");
  const alert = await page.locator("p.error").textContent();
  if (!/wrong password/.test(alert)) fail("no refusal shown: " + alert);
  await page.screenshot({ path: shots + "/login-refused.png" });
  const dash = await page.goto(url + "/");
  if (!page.url().endsWith("/login")) fail("still logged in after a wrong password");
  console.log("wrong password refused");
  console.log("ok");
} catch (e) {
  const pages = browser.contexts().flatMap((c) => c.pages());
  for (const p of pages) {
    console.error("at " + p.url() + ": " + (await p.locator("body").innerText().catch(() => "?")).slice(0, 2000));
  }
  throw e;
} finally {
  await browser.close();
}
