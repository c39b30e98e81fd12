// TEST-ONLY browser driver for regate's integration tests: runs a JSON list of steps in
// Debian's headless Chromium (/usr/bin/chromium) through playwright-core, and prints one JSON
// result on stdout. It never downloads a browser.
//
// Usage:
//   node browser.mjs SCRIPT.json        (or `node browser.mjs -` to read the script on stdin)
// Exit code 0 when every step passed, 1 when a step failed (the JSON says which), 2 on a bad
// script or a browser that would not start. stdout holds the JSON result only.
//
// Script:
// {
//   "timeoutMs": 10000,               // default per-step timeout (each step may set its own)
//   "executablePath": "/usr/bin/chromium",   // or env CHROMIUM
//   "ignoreHTTPSErrors": false,       // true for regate's self-signed test certificates
//   "bypassCSP": false,
//   "viewport": { "width": 1280, "height": 800 },
//   "locale": "en-US",
//   "extraHTTPHeaders": {},
//   "failureScreenshot": "/tmp/fail.png",   // taken when a step fails
//   "steps": [ ... ]
// }
//
// Steps (one action key each; optional on any step: "timeoutMs", "as" = name in `results`,
// "optional": true = a failure is recorded but does not stop the script):
//   {"goto": URL, "waitUntil": "load"}              navigate; results[as] = HTTP status
//   {"fill": SELECTOR, "value": "text"}             type into an input
//   {"click": SELECTOR}                             click (waits for it to be actionable)
//   {"press": SELECTOR, "key": "Enter"}
//   {"check": SELECTOR} / {"uncheck": SELECTOR}
//   {"select": SELECTOR, "value": "v"}              <select> option by value
//   {"waitForURL": "glob**"} or {"waitForURL": {"regex": "code=", "flags": ""}}
//   {"waitForSelector": SELECTOR, "state": "visible"}
//   {"waitForText": "Signed in"}                    some element shows this text
//   {"waitMs": 250}
//   {"url": true}                                   results[as] = current URL
//   {"text": SELECTOR}                              results[as] = its innerText
//   {"attribute": SELECTOR, "name": "href"}         results[as] = that attribute
//   {"count": SELECTOR}                             results[as] = number of matches
//   {"html": true}                                  results[as] = page HTML
//   {"title": true}                                 results[as] = document.title
//   {"evaluate": "JS expression"}                   results[as] = its JSON value
//   {"cookies": true}                               results[as] = cookies of the context
//   {"clearCookies": true}
//   {"screenshot": "/path.png", "fullPage": true}
//   {"axe": true, "tags": ["wcag2a","wcag2aa"], "failOn": ["serious","critical"],
//    "include": SELECTOR}                           run axe-core; results[as] = violations
//                                                   (id, impact, help, nodes); the step fails
//                                                   if any violation's impact is in failOn
//                                                   (default: none, i.e. only report)
//   {"expect": SELECTOR, "contains": "x"} / {"expect": SELECTOR, "matches": "regex"} /
//   {"expectURL": {"regex": "..."}}                 assertions: fail the step when false
//
// Result (stdout):
// { "ok": true|false, "results": {as: value}, "finalUrl": "...",
//   "navigations": [every main-frame URL, in order, including redirect targets],
//   "steps": [{"index", "action", "ok", "ms", "error"?}],
//   "error": {"index", "action", "message"}?, "console": [page console errors] }

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import process from 'node:process';

import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);

// The flags headless Chromium needs as root in a container, with nothing phoning home.
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-dev-shm-usage',
  '--disable-background-networking',
  '--disable-sync',
  '--disable-component-update',
  '--no-first-run',
  '--disable-quic',
];

const ACTIONS = [
  'goto', 'fill', 'click', 'press', 'check', 'uncheck', 'select', 'waitForURL',
  'waitForSelector', 'waitForText', 'waitMs', 'url', 'text', 'attribute', 'count', 'html',
  'title', 'evaluate', 'cookies', 'clearCookies', 'screenshot', 'axe', 'expect', 'expectURL',
];

// The first key of the step that names an action (other keys are its options).
function actionOf(step) {
  return Object.keys(step).find((key) => ACTIONS.includes(key)) ?? null;
}

function urlMatcher(spec) {
  if (typeof spec === 'string') return spec;
  if (spec && typeof spec.regex === 'string') return new RegExp(spec.regex, spec.flags ?? '');
  throw new Error('URL pattern must be a glob string or {"regex": "..."}');
}

async function runAxe(page, step) {
  const source = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
  // evaluate() goes through the DevTools protocol, so a page's CSP does not block it.
  await page.evaluate(source);
  const violations = await page.evaluate(async ({ include, tags }) => {
    const context = include ? { include: [include] } : document;
    const options = tags ? { runOnly: { type: 'tag', values: tags } } : {};
    // eslint-disable-next-line no-undef
    const result = await axe.run(context, options);
    return result.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      helpUrl: v.helpUrl,
      nodes: v.nodes.map((n) => ({ target: n.target, html: n.html, summary: n.failureSummary })),
    }));
  }, { include: step.include ?? null, tags: step.tags ?? null });
  const failOn = step.failOn ?? [];
  const failing = violations.filter((v) => failOn.includes(v.impact));
  return { value: violations, failure: failing.length ? `axe: ${failing.map((v) => `${v.id} (${v.impact})`).join(', ')}` : null };
}

async function runStep(page, context, step, timeout) {
  const action = actionOf(step);
  if (!action) throw new Error(`step has no known action: ${JSON.stringify(step)}`);
  const arg = step[action];
  switch (action) {
    case 'goto': {
      const response = await page.goto(arg, { timeout, waitUntil: step.waitUntil ?? 'load' });
      return { action, value: response ? response.status() : null };
    }
    case 'fill': await page.fill(arg, String(step.value ?? ''), { timeout }); return { action };
    case 'click': await page.click(arg, { timeout }); return { action };
    case 'press': await page.press(arg, step.key, { timeout }); return { action };
    case 'check': await page.check(arg, { timeout }); return { action };
    case 'uncheck': await page.uncheck(arg, { timeout }); return { action };
    case 'select': await page.selectOption(arg, String(step.value), { timeout }); return { action };
    case 'waitForURL':
      await page.waitForURL(urlMatcher(arg), { timeout, waitUntil: step.waitUntil ?? 'load' });
      return { action, value: page.url() };
    case 'waitForSelector':
      await page.waitForSelector(arg, { timeout, state: step.state ?? 'visible' });
      return { action };
    case 'waitForText':
      await page.getByText(String(arg)).first().waitFor({ timeout, state: 'visible' });
      return { action };
    case 'waitMs': await page.waitForTimeout(Number(arg)); return { action };
    case 'url': return { action, value: page.url() };
    case 'text': return { action, value: await page.innerText(arg, { timeout }) };
    case 'attribute': return { action, value: await page.getAttribute(arg, step.name, { timeout }) };
    case 'count': return { action, value: await page.locator(arg).count() };
    case 'html': return { action, value: await page.content() };
    case 'title': return { action, value: await page.title() };
    case 'evaluate': return { action, value: await page.evaluate(arg) };
    case 'cookies': return { action, value: await context.cookies() };
    case 'clearCookies': await context.clearCookies(); return { action };
    case 'screenshot':
      await page.screenshot({ path: arg, fullPage: step.fullPage ?? false, timeout });
      return { action, value: arg };
    case 'axe': {
      const { value, failure } = await runAxe(page, step);
      return { action, value, failure };
    }
    case 'expect': {
      const text = await page.innerText(arg, { timeout });
      const ok = step.matches !== undefined
        ? new RegExp(step.matches, step.flags ?? '').test(text)
        : text.includes(String(step.contains ?? ''));
      return { action, value: text, failure: ok ? null : `expected ${arg} to show ${JSON.stringify(step.matches ?? step.contains)}, it shows ${JSON.stringify(text)}` };
    }
    case 'expectURL': {
      const current = page.url();
      const matcher = urlMatcher(arg);
      const ok = matcher instanceof RegExp ? matcher.test(current) : current === matcher;
      return { action, value: current, failure: ok ? null : `expected URL ${String(matcher)}, it is ${current}` };
    }
    default: throw new Error(`unhandled action ${action}`);
  }
}

function readScript(arg) {
  if (!arg) throw new Error('usage: node browser.mjs SCRIPT.json | -');
  return JSON.parse(readFileSync(arg === '-' ? 0 : arg, 'utf8'));
}

async function main() {
  const out = { ok: false, results: {}, finalUrl: null, navigations: [], steps: [], console: [] };
  let script;
  try {
    script = readScript(process.argv[2]);
  } catch (err) {
    out.error = { index: null, action: 'script', message: err.message };
    process.stdout.write(`${JSON.stringify(out)}\n`);
    return 2;
  }
  const defaultTimeout = Number(script.timeoutMs ?? 10000);

  let browser;
  try {
    browser = await chromium.launch({
      executablePath: script.executablePath ?? process.env.CHROMIUM ?? '/usr/bin/chromium',
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: 30000,
    });
  } catch (err) {
    out.error = { index: null, action: 'launch', message: err.message };
    process.stdout.write(`${JSON.stringify(out)}\n`);
    return 2;
  }

  let failed = false;
  try {
    const context = await browser.newContext({
      ignoreHTTPSErrors: script.ignoreHTTPSErrors ?? false,
      bypassCSP: script.bypassCSP ?? false,
      viewport: script.viewport ?? { width: 1280, height: 800 },
      locale: script.locale ?? 'en-US',
      extraHTTPHeaders: script.extraHTTPHeaders ?? {},
    });
    const page = await context.newPage();
    // Redirect hops never become a committed navigation; record them from the requests.
    page.on('request', (request) => {
      if (request.isNavigationRequest() && request.frame() === page.mainFrame()) {
        out.navigations.push(request.url());
      }
    });
    page.on('console', (msg) => { if (msg.type() === 'error') out.console.push(msg.text()); });
    page.on('pageerror', (err) => out.console.push(`pageerror: ${err.message}`));

    const steps = script.steps ?? [];
    for (let index = 0; index < steps.length; index += 1) {
      const step = steps[index];
      const started = Date.now();
      const record = { index, action: null, ok: true, ms: 0 };
      try {
        const { action, value, failure } = await runStep(page, context, step, Number(step.timeoutMs ?? defaultTimeout));
        record.action = action;
        if (step.as !== undefined) out.results[step.as] = value;
        if (failure) throw new Error(failure);
      } catch (err) {
        record.ok = false;
        record.error = err.message.split('\n')[0];
        record.action ??= actionOf(step);
        if (!step.optional) {
          failed = true;
          out.error = { index, action: record.action, message: err.message };
        }
      }
      record.ms = Date.now() - started;
      out.steps.push(record);
      if (failed) break;
    }
    out.finalUrl = page.url();
    if (failed && script.failureScreenshot) {
      await page.screenshot({ path: script.failureScreenshot, fullPage: true }).catch(() => {});
    }
  } catch (err) {
    failed = true;
    out.error ??= { index: null, action: 'context', message: err.message };
  } finally {
    await browser.close().catch(() => {});
  }
  out.ok = !failed;
  process.stdout.write(`${JSON.stringify(out)}\n`);
  return failed ? 1 : 0;
}

process.exitCode = await main();
