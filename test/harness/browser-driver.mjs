// Drives one real headless browser (Debian's chromium or firefox-esr, through
// puppeteer-core; Firefox over WebDriver BiDi) INSIDE the caller's network
// namespace: the test runs this script with `ip netns exec NS node ...`, so
// the browser's WebRTC traffic leaves from the lab client's addresses.
// argv[2] is a JSON job: { browser, steps?: [...], serve?: { dir, host, port } }.
// Steps: {goto: url} (a path starting with "/" is served from `serve`),
//        {click: selector}, {type: selector, text}, {waitState: [states], timeoutMs},
//        {waitText: regex source, timeoutMs}, {screenshot: file},
//        {serveHttps: {dir, host, port, cert, key}}, {stopHttps: true},
//        {eval: "expression"} (result recorded), {viewport: {width, height}}, {sleepMs}.
// With `steps`, runs them and prints one JSON line { ok, results, error? }.
// Without, it is a session: it prints {ready:true}, then reads one JSON step
// per stdin line and answers each with one line { ok, result?, error? }, and
// closes the browser at end of input. Bounded: every wait has a timeout and
// the caller kills the session by PID at teardown.
import { createServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

const job = JSON.parse(process.argv[2]);
const results = [];
let server;
let httpsServer;
let browser;
const profileDir = mkdtempSync(path.join(tmpdir(), 'sesame-browser-'));

function fileHandler(dir) {
  return (req, res) => {
    const name = path.basename(new URL(req.url, 'http://x').pathname) || 'index.html';
    try {
      const body = readFileSync(path.join(dir, name));
      const type = name.endsWith('.html') ? 'text/html; charset=utf-8' : name.endsWith('.js') ? 'text/javascript'
        : name.endsWith('.webmanifest') ? 'application/manifest+json' : name.endsWith('.svg') ? 'image/svg+xml' : name.endsWith('.png') ? 'image/png' : 'application/octet-stream';
      res.writeHead(200, { 'content-type': type });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  };
}

function serveDir(dir, host, port) {
  return new Promise((resolve, reject) => {
    server = createServer(fileHandler(dir));
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
}

async function launch() {
  if (job.browser === 'firefox') {
    return puppeteer.launch({
      browser: 'firefox',
      executablePath: '/usr/bin/firefox-esr',
      headless: true,
      userDataDir: profileDir,
      extraPrefsFirefox: {
        'network.dns.disablePrefetch': true,
        'network.captive-portal-service.enabled': false,
        'app.update.enabled': false,
        'browser.safebrowsing.malware.enabled': false,
        'browser.safebrowsing.phishing.enabled': false,
      },
    });
  }
  return puppeteer.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    userDataDir: profileDir,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', ...(job.ignoreCertificateErrors ? ['--ignore-certificate-errors'] : [])],
  });
}

let page;

/** Run one step; returns what it observed (or undefined). */
async function runStep(step) {
  if (step.viewport) return void (await page.setViewport(step.viewport));
  if (step.goto) {
    const url = step.goto.startsWith('/') ? `http://${job.serve.host.includes(':') ? `[${job.serve.host}]` : job.serve.host}:${job.serve.port}${step.goto}` : step.goto;
    // A fresh document even when only the fragment differs (same-document navigations keep the old page).
    await page.goto('about:blank');
    await page.goto(url, { waitUntil: 'load', timeout: 15000 });
    await page.waitForFunction(() => document.body?.dataset.ready === '1', { timeout: 15000 });
    return undefined;
  }
  if (step.click) return void (await page.click(step.click));
  if (step.serveHttps) {
    const o = step.serveHttps;
    httpsServer = createHttpsServer({ cert: readFileSync(o.cert), key: readFileSync(o.key) }, fileHandler(o.dir));
    await new Promise((resolve, reject) => { httpsServer.once('error', reject); httpsServer.listen(o.port, o.host, resolve); });
    return undefined;
  }
  if (step.stopHttps) {
    httpsServer?.closeAllConnections?.();
    await new Promise((resolve) => (httpsServer ? httpsServer.close(() => resolve()) : resolve()));
    httpsServer = undefined;
    return undefined;
  }
  if (step.type) {
    await page.$eval(step.type, (e) => { e.closest('details')?.setAttribute('open', ''); e.value = ''; });
    return void (await page.type(step.type, step.text));
  }
  if (step.waitText) {
    const seen = await page.waitForFunction((re) => {
      const el = document.getElementById('status');
      return el && new RegExp(re).test(el.textContent ?? '') ? JSON.stringify({ state: el.dataset.state, text: el.textContent }) : false;
    }, { timeout: step.timeoutMs ?? 15000 }, step.waitText);
    return JSON.parse(await seen.jsonValue());
  }
  if (step.waitState) {
    const t0 = Date.now();
    // State and text are read in the same evaluation that sees the state: the page may navigate right after
    // "opened" (the profile's open link), and a second round trip would find another document.
    const seen = await page.waitForFunction((states) => {
      const el = document.getElementById('status');
      return el && states.includes(el.dataset.state) ? JSON.stringify({ state: el.dataset.state, text: el.textContent }) : false;
    }, { timeout: step.timeoutMs ?? 15000 }, step.waitState);
    return { ...JSON.parse(await seen.jsonValue()), ms: Date.now() - t0 };
  }
  if (step.eval) return { eval: await page.evaluate(step.eval) };
  if (step.screenshot) return void (await page.screenshot({ path: step.screenshot }));
  if (step.sleepMs) return void (await new Promise((r) => setTimeout(r, Math.min(step.sleepMs, 10000))));
  throw new Error(`unknown step ${JSON.stringify(step).slice(0, 80)}`);
}

async function cleanup() {
  await browser?.close().catch(() => undefined);
  server?.close();
  httpsServer?.close();
  rmSync(profileDir, { recursive: true, force: true });
}

const oneLine = (e) => String(e?.message ?? e).split('\n')[0];

try {
  if (job.serve) await serveDir(job.serve.dir, job.serve.host, job.serve.port);
  browser = await launch();
  page = await browser.newPage();
} catch (e) {
  process.stdout.write(JSON.stringify({ ok: false, results: [], error: oneLine(e) }) + '\n');
  await cleanup();
  process.exit(0);
}

if (job.steps) {
  let out;
  try {
    for (const step of job.steps) {
      const r = await runStep(step);
      if (r !== undefined) results.push(r);
    }
    results.push({ url: page.url() });
    out = { ok: true, results };
  } catch (e) {
    out = { ok: false, results, error: oneLine(e) };
  }
  await cleanup();
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
}

process.stdout.write(JSON.stringify({ ready: true }) + '\n');
const { createInterface } = await import('node:readline');
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  try {
    process.stdout.write(JSON.stringify({ ok: true, result: (await runStep(JSON.parse(line))) ?? null }) + '\n');
  } catch (e) {
    process.stdout.write(JSON.stringify({ ok: false, error: oneLine(e) }) + '\n');
  }
}
await cleanup();
process.exit(0);
