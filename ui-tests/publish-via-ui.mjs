// Publishes one message through the RabbitMQ management UI, the way docs/events.md tells a
// person to: log in, open the exchange, fill "Publish message" and press the button. It drives
// the system's Chromium (Debian package `chromium`) through playwright-core; nothing is
// downloaded. The Rust test crates/booksvc/tests/operations/browser.rs runs it and then checks
// that booksvc serves what was published.
//
// Input (environment):
//   UI_URL         the management UI, e.g. http://127.0.0.1:15672            (required)
//   UI_USER        login                                                     (required)
//   UI_PASS        password                                                  (required)
//   ROUTING_KEY    e.g. book.updated                                         (required)
//   PAYLOAD        the message body, e.g. a JSON event                        (required)
//   EXCHANGE       default books
//   VHOST          default /
//   PROPERTIES     "key=value" lines or ;-separated pairs for the form's Properties field,
//                  default content_type=application/json
//   CHROMIUM       browser binary, default /usr/bin/chromium
//   SCREENSHOT     where to save a screenshot on failure, default a temp file
//   TIMEOUT_MS     per step, default 30000 (a loaded 2-core machine is slow)
//
// Exit status 0 when the UI said "Message published." (routed to at least one queue);
// otherwise 1 with one line saying which step failed and where the screenshot is.

import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const INSTALL_HINT = 'install with: bash scripts/install-deps.sh';

function required(name) {
  const value = process.env[name];
  if (!value) fail(`environment variable ${name} is required`);
  return value;
}

function fail(message, screenshot) {
  const where = screenshot ? ` (screenshot: ${screenshot})` : '';
  console.error(`publish-via-ui: ${message}${where}`);
  process.exit(1);
}

/** "a=b; c=d" or one pair per line → [[a, b], [c, d]]. */
function parseProperties(text) {
  return text
    .split(/[;\n]/)
    .map((pair) => pair.trim())
    .filter(Boolean)
    .map((pair) => {
      const at = pair.indexOf('=');
      if (at < 1) fail(`PROPERTIES: "${pair}" is not key=value`);
      return [pair.slice(0, at).trim(), pair.slice(at + 1).trim()];
    });
}

const config = {
  url: required('UI_URL').replace(/\/+$/, ''),
  user: required('UI_USER'),
  pass: required('UI_PASS'),
  routingKey: required('ROUTING_KEY'),
  payload: required('PAYLOAD'),
  exchange: process.env.EXCHANGE || 'books',
  vhost: process.env.VHOST || '/',
  properties: parseProperties(process.env.PROPERTIES ?? 'content_type=application/json'),
  chromium: process.env.CHROMIUM || '/usr/bin/chromium',
  screenshot: process.env.SCREENSHOT || join(tmpdir(), `publish-via-ui-${process.pid}.png`),
  timeout: Number(process.env.TIMEOUT_MS || 30000),
};

if (!existsSync(config.chromium)) {
  fail(`no browser at ${config.chromium}; ${INSTALL_HINT}`);
}

/** Runs one named step; a failure names the step and leaves a screenshot. */
async function step(page, name, action) {
  try {
    return await action();
  } catch (error) {
    const firstLine = String(error?.message ?? error).split('\n')[0];
    let shot;
    try {
      await page.screenshot({ path: config.screenshot, fullPage: true });
      shot = config.screenshot;
    } catch {
      // No screenshot is no reason to hide the real error.
    }
    throw Object.assign(new Error(`${name}: ${firstLine}`), { screenshot: shot });
  }
}

async function logIn(page) {
  await page.goto(config.url + '/');
  await page.locator('input[name="username"]').fill(config.user);
  await page.locator('input[name="password"]').fill(config.pass);
  await page.locator('form input[type="submit"], form button[type="submit"]').first().click();
  // The logged-in layout has a logout control; a wrong password leaves the login form
  // with a message instead, which is the more useful error.
  const loggedIn = page.locator('#logout').first();
  const refused = page.locator('#login-status').filter({ hasText: /\S/ });
  await loggedIn.or(refused).waitFor({ state: 'attached' });
  if (!(await loggedIn.count())) {
    throw new Error(`the UI refused the login: ${(await refused.innerText()).trim()}`);
  }
}

async function openExchange(page) {
  const vhost = encodeURIComponent(config.vhost);
  const exchange = encodeURIComponent(config.exchange);
  await page.goto(`${config.url}/#/exchanges/${vhost}/${exchange}`);
  await page.locator('h1', { hasText: config.exchange }).first().waitFor();
}

/** The "Publish message" section is collapsed unless the user opened it before. */
async function openPublishForm(page) {
  const form = page.locator('form[action="#/exchanges/publish"]');
  const routingKey = form.locator('input[name="routing_key"]');
  if (!(await routingKey.isVisible())) {
    await page.locator('h2', { hasText: 'Publish message' }).click();
  }
  await routingKey.waitFor({ state: 'visible' });
  return form;
}

async function fillForm(form) {
  await form.locator('input[name="routing_key"]').fill(config.routingKey);
  // The exchange page of RabbitMQ 3.x publishes persistent without asking (a hidden field);
  // where a version shows the choice, pick "2 - Persistent" as the docs tell users.
  const deliveryMode = form.locator('select[name="delivery_mode"]');
  if ((await deliveryMode.count()) > 0 && (await deliveryMode.isVisible())) {
    await deliveryMode.selectOption('2');
  }
  // The Properties field grows a new key/value row as the last one is filled.
  for (const [index, [key, value]] of config.properties.entries()) {
    const row = index + 1;
    await form.locator(`#props_${row}_mfkey`).fill(key);
    await form.locator(`#props_${row}_mfvalue`).fill(value);
  }
  await form.locator('textarea[name="payload"]').fill(config.payload);
}

/** Submits and reads the UI's verdict: routed, not routed, or an error popup. */
async function submit(page, form) {
  await form.locator('input[type="submit"][value="Publish message"]').click();
  const popup = page.locator('.form-popup-info, .form-popup-warn').first();
  await popup.waitFor({ state: 'visible' });
  // The popup ends with its "Close" link.
  const text = (await popup.innerText()).replace(/\s+/g, ' ').replace(/\s*Close$/, '').trim();
  if (!/Message published\.?/.test(text) || /not routed/i.test(text)) {
    throw new Error(`the UI answered "${text}"`);
  }
  return text;
}

async function main() {
  let browser;
  try {
    browser = await chromium.launch({
      executablePath: config.chromium,
      headless: true,
      // Root in a container has no user namespaces for Chromium's sandbox.
      args: ['--no-sandbox', '--disable-dev-shm-usage'],
    });
  } catch (error) {
    fail(`cannot start ${config.chromium}: ${String(error?.message ?? error).split('\n')[0]}`);
  }
  // The UI logs in with a synchronous XHR: a wrong password draws a 401 challenge that would
  // open the browser's own login dialog and hang the page. Answering challenges with the same
  // credentials turns that into the UI's "Login failed" instead.
  const context = await browser.newContext({
    httpCredentials: { username: config.user, password: config.pass, send: 'unauthorized' },
  });
  const page = await context.newPage();
  page.setDefaultTimeout(config.timeout);
  try {
    await step(page, `log in to ${config.url} as ${config.user}`, () => logIn(page));
    await step(page, `open exchange ${config.exchange}`, () => openExchange(page));
    const form = await step(page, 'open the Publish message form', () => openPublishForm(page));
    await step(page, 'fill the Publish message form', () => fillForm(form));
    const verdict = await step(page, 'publish', () => submit(page, form));
    console.log(
      `publish-via-ui: ${verdict} exchange=${config.exchange} routing_key=${config.routingKey}`,
    );
  } catch (error) {
    await browser.close().catch(() => {});
    fail(error.message, error.screenshot);
  }
  await browser.close();
}

await main();
