// The dashboard in a real browser (Debian's Chromium, driven by playwright-core), as an admin
// and as a client would use it. Run by tests/tests/dashboard.rs against a stack of its own,
// which passes what it set up in the environment. Exits 0 when every step held; otherwise
// prints the step that failed, with a screenshot of the page at that moment.
//
// Environment: DASHBOARD_URL, ADMIN_TOKEN, CLIENT_TOKEN (client "beta"'s token), CLIENT (the
// client to install for), DOMAIN (the site to install), OTHER_DOMAIN (beta's own site),
// TARGET_PLATFORM (a platform to migrate to), OLDER_PLATFORM (one the site cannot go to),
// SCREENSHOTS (a directory), CHROMIUM, PLAYWRIGHT (the directory playwright-core is in).

import { createRequire } from "node:module";
import path from "node:path";
import fs from "node:fs";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const require = createRequire(path.join(env("PLAYWRIGHT"), "node_modules", "x.js"));
const { chromium } = require("playwright-core");

const base = env("DASHBOARD_URL");
const shots = env("SCREENSHOTS");
fs.mkdirSync(shots, { recursive: true });
const TASK_TIMEOUT = 180_000;

let step = "starting";
let current = null;
const expect = (cond, what) => {
  if (!cond) throw new Error(`expected: ${what}`);
};
const log = (m) => console.log(`[dashboard] ${m}`);

async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

// Waits on a task's page for its end, as the page's own script reports it, and checks how.
async function waitTask(page, want = "success") {
  expect(/\/ui\/tasks\/\d+$/.test(new URL(page.url()).pathname), `a task page, not ${page.url()}`);
  const done = await page.waitForFunction(
    () => {
      const live = document.body.dataset.taskDone;
      const badge = document.querySelector("#task-status .badge");
      const log = document.getElementById("log");
      // A task that had ended when the page loaded has no stream.
      if (log && !log.dataset.events && badge) return badge.textContent;
      return live || null;
    },
    null,
    { timeout: TASK_TIMEOUT, polling: 250 },
  );
  const status = await done.jsonValue();
  if (status !== want) {
    const text = await page.locator("main").innerText();
    throw new Error(`task ended ${status}, not ${want}:\n${text}`);
  }
  return status;
}

async function signIn(context, token) {
  const page = await context.newPage();
  current = page;
  await page.goto(`${base}/ui/login`);
  await page.fill("#token", token);
  await Promise.all([page.waitForURL(/\/ui\/sites$/), page.click("button[type=submit]")]);
  return page;
}

async function sitePage(page, domain) {
  await page.goto(`${base}/ui/sites?search=${encodeURIComponent(domain)}`);
  await Promise.all([page.waitForURL(/\/ui\/sites\/\d+$/), page.click(`#sites a:text-is("${domain}")`)]);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: env("CHROMIUM"),
    // Root in a container has no sandbox; hosted sites' names resolve to this host, as DNS
    // would send them to the web server.
    args: ["--no-sandbox", `--host-resolver-rules=MAP *.test 127.0.0.1`],
  });
  try {
    // Script errors and CSP violations on any page of either session fail the run.
    const errors = [];
    const watch = (context) => {
      // A page answered 403 or 404 on purpose logs "Failed to load resource": the steps check
      // statuses themselves. A CSP violation logs "Refused to ...".
      context.on("console", (m) => {
        if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) {
          errors.push(`${m.page()?.url()}: ${m.text()}`);
        }
      });
      context.on("weberror", (e) => errors.push(String(e.error())));
      return context;
    };
    const admin = watch(await browser.newContext({ viewport: { width: 1280, height: 900 } }));
    step = "sign in as the admin";
    await (async () => {
      const p = await admin.newPage();
      current = p;
      const r = await p.goto(`${base}/ui/login`);
      const csp = r.headers()["content-security-policy"] || "";
      expect(csp.includes("script-src 'self'") && csp.includes("default-src 'none'"), `a CSP header, got '${csp}'`);
      await shot(p, "01-login");
      await p.close();
    })();
    const page = await signIn(admin, env("ADMIN_TOKEN"));
    await shot(page, "02-sites-empty");

    step = "switch migrate and clone on in the settings";
    await page.click("nav a:text-is('Settings')");
    await page.check("input[name='features.clone']");
    await page.check("input[name='require_disable_before_delete']");
    await Promise.all([page.waitForURL(/\/ui\/settings$/), page.click("#settings-form button[type=submit]")]);
    expect(await page.isChecked("input[name='features.migrate']"), "clone switched migrate on");
    await shot(page, "03-settings");

    step = "the site form narrows platforms and languages by profile";
    await page.goto(`${base}/ui/sites/new`);
    await Promise.all([page.waitForURL(/profile=minimal/), page.selectOption("#profile", "minimal")]);
    const platformsFor = async () => (await page.locator("#platform option").allInnerTexts()).map((t) => t.split(" ")[0]);
    let offered = await platformsFor();
    expect(!offered.includes(env("TARGET_PLATFORM")), `${env("TARGET_PLATFORM")} has no 'minimal' profile and is not offered: ${offered}`);
    expect(offered.includes("example"), `example offers 'minimal': ${offered}`);
    expect(JSON.stringify(await page.locator("#language option").allInnerTexts()) === '["en"]', "minimal has only en");
    await Promise.all([page.waitForURL(/profile=standard/), page.selectOption("#profile", "standard")]);
    offered = await platformsFor();
    expect(offered.includes(env("TARGET_PLATFORM")) && offered.includes("example"), `both offer 'standard': ${offered}`);
    const langs = await page.locator("#language option").allInnerTexts();
    expect(["en", "fr", "de"].every((l) => langs.includes(l)), `standard's languages: ${langs}`);

    step = "install a site through the form";
    await page.fill("#domain", env("DOMAIN"));
    await page.selectOption("#client", { label: env("CLIENT") });
    await page.selectOption("#platform", { label: "example (local)" });
    await page.selectOption("#language", "fr");
    await shot(page, "04-site-form");
    await Promise.all([page.waitForURL(/\/ui\/tasks\/\d+$/), page.click("#site-form button[type=submit]")]);
    await waitTask(page);
    await shot(page, "05-install-task");

    step = "open the site through its Login to link";
    await Promise.all([page.waitForURL(/\/ui\/sites\/\d+$/), page.click("#task-site")]);
    const siteUrl = page.url();
    const siteId = siteUrl.split("/").pop();
    fs.writeFileSync(path.join(shots, "site-id"), siteId);
    await shot(page, "06-site");
    const link = page.locator("#site-link");
    expect((await link.innerText()).startsWith("Login to"), `a Login to link: ${await link.innerText()}`);
    const [site] = await Promise.all([admin.waitForEvent("page"), link.click()]);
    await site.waitForLoadState();
    expect(new URL(site.url()).hostname === env("DOMAIN"), `the site's own page, not ${site.url()}`);
    expect((await site.locator("h1").innerText()) === "Logged in", `logged in: ${await site.locator("body").innerText()}`);
    await shot(site, "07-site-logged-in");
    await site.close();
    await page.reload();
    expect((await page.locator("#site-link").innerText()).startsWith("Go to"), "a used login link is gone");

    step = "back up from the site's button while the log streams";
    const reason = "before migrate <b>not bold</b>";
    await page.fill("input[name=description]", reason);
    await Promise.all([page.waitForURL(/\/ui\/tasks\/\d+$/), page.click("button[data-task=backup]")]);
    await waitTask(page);
    const taskId = page.url().split("/").pop();
    const stored = await (await page.request.get(`${base}/api/v1/tasks/${taskId}/log`, {
      headers: { Authorization: `Bearer ${env("ADMIN_TOKEN")}` },
    })).json();
    const streamed = Number(await page.locator("#log").getAttribute("data-streamed"));
    expect(stored.length > 0 && streamed === stored.length, `the stream brought every log line: ${streamed} of ${stored.length}`);
    expect((await page.locator("#log li").count()) === stored.length, "each line shown once");
    expect((await page.locator("#log").innerText()).includes(stored[stored.length - 1].message), "the last line too");
    expect(await page.locator("#cancel-form").isHidden(), "no Cancel once the task has started");
    expect((await page.locator("#task-started").innerText()).endsWith("UTC"), "the start time arrived with the status");
    await shot(page, "08-backup-live-log");

    step = "the backup is listed, its reason escaped";
    await page.goto(siteUrl);
    const backups = page.locator("#backups table");
    expect((await backups.innerText()).includes(reason), "the reason as written");
    expect((await backups.locator("b").count()) === 0, "no markup from a value");

    step = "migrate through the platform comparison";
    await Promise.all([page.waitForURL(/tasks\/migrate$/), page.click("a[data-task=migrate]")]);
    const older = page.locator(`input[data-platform="${env("OLDER_PLATFORM")}"]`);
    expect(await older.isDisabled(), "a platform with older packages cannot be chosen");
    const target = page.locator(`input[data-platform="${env("TARGET_PLATFORM")}"]`);
    expect(await target.isEnabled(), "the newer platform can be chosen");
    await page.locator("details summary").first().click();
    await shot(page, "09-migrate-compare");
    await target.check();
    await Promise.all([page.waitForURL(/\/ui\/tasks\/\d+$/), page.click("#confirm")]);
    await waitTask(page);
    await page.goto(siteUrl);
    expect((await page.locator("dl.facts").innerText()).includes(env("TARGET_PLATFORM")), "the site is on the target platform");

    step = "restore from the radio list of backups";
    await Promise.all([page.waitForURL(/tasks\/restore$/), page.click("a[data-task=restore]")]);
    const choice = page.locator("#backup-choice label.choice", { hasText: " - " + reason });
    expect((await choice.count()) === 1, "the backup as 'date/time - reason'");
    expect(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC - /.test((await choice.innerText()).trim()), `date/time - reason: ${await choice.innerText()}`);
    await shot(page, "10-restore-form");
    await choice.locator("input").check();
    await Promise.all([page.waitForURL(/\/ui\/tasks\/\d+$/), page.click("#confirm")]);
    await waitTask(page);

    step = "disable, confirmed";
    await page.goto(siteUrl);
    expect((await page.locator("a[data-task=delete]").count()) === 0, "an enabled site offers no delete while disabling comes first");
    await Promise.all([page.waitForURL(/tasks\/disable$/), page.click("a[data-task=disable]")]);
    expect((await page.locator(".confirm").innerText()).startsWith(`Disable ${env("DOMAIN")}?`), "the disable asks first");
    await shot(page, "11-disable-confirm");
    await Promise.all([page.waitForURL(/\/ui\/tasks\/\d+$/), page.click("#confirm")]);
    await waitTask(page);

    step = "the task queue lists what ran";
    await page.goto(`${base}/ui/tasks?site=${siteId}`);
    const types = await page.locator("table.tasks tbody tr td:nth-child(2)").allInnerTexts();
    for (const t of ["install", "backup", "migrate", "restore", "disable"]) {
      expect(types.includes(t), `the queue shows the ${t}: ${types}`);
    }
    await shot(page, "12-task-queue");

    step = "delete, confirmed";
    await page.goto(siteUrl);
    await Promise.all([page.waitForURL(/tasks\/delete$/), page.click("a[data-task=delete]")]);
    expect((await page.locator(".confirm").innerText()).startsWith(`Delete ${env("DOMAIN")}?`), "the delete asks first");
    await shot(page, "13-delete-confirm");
    await Promise.all([page.waitForURL(/\/ui\/tasks\/\d+$/), page.click("#confirm")]);
    await waitTask(page);
    await page.goto(siteUrl);
    expect((await page.locator("h1 .badge").innerText()) === "deleted", "the site is deleted");

    step = "platforms, with their packages and a verify button";
    await page.goto(`${base}/ui/platforms`);
    await shot(page, "14-platforms");
    await Promise.all([page.waitForURL(/\/ui\/platforms\/\d+$/), page.click(`#platforms a:text-is("${env("TARGET_PLATFORM")}")`)]);
    expect((await page.locator("#packages").innerText()).includes("guestbook"), "the platform's packages");
    await shot(page, "15-platform");
    await Promise.all([page.waitForURL(/\/ui\/tasks\/\d+$/), page.click("button[data-task=verify]")]);
    await waitTask(page);

    step = "servers, clients and tokens";
    for (const [name, file] of [["servers", "16-servers"], ["clients", "17-clients"], ["tokens", "18-tokens"]]) {
      await page.goto(`${base}/ui/${name}`);
      await shot(page, file);
    }
    expect(errors.length === 0, `no script errors or CSP violations: ${errors.join("; ")}`);

    step = "a client's session sees only its own sites";
    const client = watch(await browser.newContext({ viewport: { width: 1280, height: 900 } }));
    const mine = await signIn(client, env("CLIENT_TOKEN"));
    const listed = await mine.locator("#sites").innerText();
    expect(listed.includes(env("OTHER_DOMAIN")), "the client's own site is listed");
    expect(!listed.includes(env("DOMAIN")), "another client's site is not listed");
    expect((await mine.locator("nav a:text-is('Settings')").count()) === 0, "no admin pages in a client's menu");
    await shot(mine, "19-client-sites");
    const other = await mine.goto(`${base}/ui/sites/${siteId}`);
    expect(other.status() === 404, `another client's site is not found, got ${other.status()}`);
    const search = await mine.goto(`${base}/ui/sites?search=${encodeURIComponent(env("DOMAIN"))}&status=deleted`);
    expect(search.ok() && !(await mine.locator("main").innerText()).includes(env("DOMAIN")), "nor found by a search");
    const settings = await mine.goto(`${base}/ui/settings`);
    expect(settings.ok() && (await mine.locator("#settings-form button").count()) === 0, "the settings are read-only for a client");
    const refused = await mine.request.post(`${base}/ui/settings`, {
      form: {
        csrf: await mine.locator("input[name=csrf]").first().inputValue(),
        "features.clone": "true",
        login_link_ttl_hours: "24",
        task_retention_days: "90",
        backup_interval_floor: "5m",
        client_backup_interval_floor: "hourly",
        backup_interval_ceiling: "366d",
      },
    });
    expect(refused.status() === 403 && (await refused.text()).includes("admin token"), `the API refuses a client's settings change, got ${refused.status()}`);
    await shot(mine, "20-client-refused");
    expect(errors.length === 0, `no script errors or CSP violations: ${errors.join("; ")}`);
    log("every step held");
  } finally {
    await browser.close();
  }
}

main().catch(async (e) => {
  console.error(`[dashboard] step failed: ${step}\n${e && e.stack ? e.stack : e}`);
  if (current) {
    try {
      await shot(current, "failed");
      console.error(`[dashboard] page at failure: ${current.url()}`);
    } catch {}
  }
  process.exit(1);
});
