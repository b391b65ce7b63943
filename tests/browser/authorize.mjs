// authorize.mjs — real-browser test of oxnotify's web page, driven by playwright-core in Debian's
// Chromium: create a target in the form, click Authorize, log in and consent at the rig's real
// OAuth2 server in the popup, let the callback hand the code back (postMessage), wait for the
// backend exchange, click "Send test". Exit 0 on success; screenshots go to $SHOTS.
// Then the modes without a popup: a device-code target (the page shows the code; the user enters
// it at the rig on another page) and an app-only target (no Authorize button; Send test mints).
// Each target's health (authorized since, expiry, last refresh, queue, last error) and the
// Verify button (each step with its time; a failure's step, kind and hint) are checked too.
// env: SERVER_URL TOKEN RIG_ISSUER RIG_SMTP_STARTTLS_PORT USER_EMAIL SHOTS RIG_APP_CLIENT_ID
//      RIG_APP_CLIENT_SECRET RIG_APP_MAILBOX
import { chromium } from 'playwright-core';
/* global document -- the functions given to page.waitForFunction run in the page */

const env = (k) => { const v = process.env[k]; if (!v) throw new Error(`${k} not set`); return v; };
const server = env('SERVER_URL');
const issuer = env('RIG_ISSUER');
const user = env('USER_EMAIL');
const shots = process.env.SHOTS || '/tmp';

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = await (await browser.newContext()).newPage();
const message = () => page.locator('#message').textContent();
async function expectMessage(re, what) {
  try {
    await page.waitForFunction((src) => new RegExp(src).test(document.getElementById('message').textContent),
      re.source, { timeout: 20000 });
  } catch (e) {
    await page.screenshot({ path: `${shots}/failed.png`, fullPage: true });
    throw new Error(`${what}: expected ${re}, page says: ${await message()}`, { cause: e });
  }
  console.log(`ok   ${what}: ${await message()}`);
}

// Fill the target form: choices first (they decide which fields are shown), then the fields;
// "More settings" is opened, since overrides such as the rig's URLs are optional there.
async function fillTarget(selects, fields) {
  await page.evaluate(() => { document.getElementById('more').open = true; });
  for (const [k, v] of Object.entries(selects)) await page.selectOption(`#target-form [name="${k}"]`, v);
  for (const [k, v] of Object.entries(fields)) await page.fill(`#target-form [name="${k}"]`, v);
}

// The health rows of a target's card, as text.
async function health(name) {
  return page.evaluate((n) => Object.fromEntries([...document.querySelectorAll(`#health-${n} dd`)]
    .map((dd) => [dd.dataset.health, dd.textContent])), name);
}

try {
  await page.goto(server);
  await page.waitForSelector('body[data-ready="1"]');
  await page.fill('#token', env('TOKEN'));
  await page.click('#save-token');

  const form = {
    name: 'web1', server: 'localhost', port: env('RIG_SMTP_STARTTLS_PORT'), 'from-address': user,
    mailto: 'ops@example.test', 'oauth2-client-id': 'rig-post', 'oauth2-client-secret': 'rig-secret',
    'oauth2-tenant-id': '12345678-90ab-cdef-1234-567890abcdef',
    'oauth2-authorize-url': `${issuer}/auth`, 'oauth2-token-url': `${issuer}/token`,
  };
  await fillTarget({ 'auth-method': 'microsoft-oauth2', mode: 'starttls' }, form);
  await page.click('#save-target');
  await expectMessage(/Saved target web1/, 'create target in the form');
  await page.waitForSelector('#authorize-web1');
  await page.screenshot({ path: `${shots}/1-target-created.png`, fullPage: true });

  // an error answer without the state of the authorization started here (another window, a
  // page of an attacker's) is not taken for the provider's
  // (globalThis is the page's window: this function runs in the browser)
  await page.evaluate(() => globalThis.postMessage(
    { type: 'oxnotify-oauth2', state: 'forged', error: 'access_denied', error_description: 'forged' },
    globalThis.location.origin));
  await expectMessage(/State mismatch/, 'an error answer with a foreign state is refused');

  // first the user cancels at the provider: it redirects back with error=access_denied
  const [cancelled] = await Promise.all([page.waitForEvent('popup'), page.click('#authorize-web1')]);
  await cancelled.waitForSelector('input[name="login"]', { timeout: 20000 });
  await cancelled.click('text=[ Cancel ]');
  await expectMessage(/The provider refused the authorization: access_denied/, 'provider refusal is reported');

  const [popup] = await Promise.all([page.waitForEvent('popup'), page.click('#authorize-web1')]);
  // the rig's login page (oidc-provider's own HTML form), then its consent page
  await popup.waitForSelector('input[name="login"]', { timeout: 20000 });
  await popup.fill('input[name="login"]', user);
  await popup.fill('input[name="password"]', 'x');
  await popup.screenshot({ path: `${shots}/2-provider-login.png` });
  await popup.click('button[type="submit"]');
  await popup.waitForSelector('button[type="submit"]', { timeout: 20000 });
  await popup.click('button[type="submit"]');   // consent
  await expectMessage(/Target web1 is authorized/, 'authorize through the popup');
  await page.waitForSelector('article[data-name="web1"][data-authorized="1"]', { timeout: 20000 });
  await page.screenshot({ path: `${shots}/3-authorized.png`, fullPage: true });

  // the health an admin looks for, from the real status
  let h = await health('web1');
  const stamp = /^\d{4}-\d\d-\d\d \d\d:\d\d UTC/;
  if (!stamp.test(h.authorized)) throw new Error(`authorized since: ${h.authorized}`);
  if (!/^about \d{4}-\d\d-\d\d .* \(in (89|90) days, unless refreshed\)$/.test(h.expiry)) throw new Error(`expiry forecast: ${h.expiry}`);
  if (!stamp.test(h['access-token'])) throw new Error(`access token: ${h['access-token']}`);
  if (h.queue !== 'empty' || h['last-error'] !== 'none' || h.status !== 'OK') throw new Error(`health: ${JSON.stringify(h)}`);
  console.log(`ok   health shown: ${JSON.stringify(h)}`);

  // Verify: each step with its time
  await page.click('#verify-button-web1');
  await page.waitForSelector('#verify-web1 .verdict', { timeout: 30000 });
  const verdict = await page.locator('#verify-web1 .verdict').textContent();
  const steps = await page.locator('#verify-web1 li').allTextContents();
  if (!/^Login OK \((cached|new) token\)\.$/.test(verdict) || steps.length !== 2
      || !steps.every((st) => / \d+ ms - ok$/.test(st))) throw new Error(`verify: ${verdict} ${steps}`);
  console.log(`ok   verify shows each step: ${verdict} ${steps.join('; ')}`);
  await page.screenshot({ path: `${shots}/3b-verified.png`, fullPage: true });

  await page.click('#test-web1');
  await expectMessage(/Test notification sent through web1/, 'send test');
  await page.screenshot({ path: `${shots}/4-test-sent.png`, fullPage: true });

  // device code: the page shows where to go and the code
  await page.click('#new-target');
  const device = { ...form, name: 'web2', 'from-address': `device-${user}`,
    'oauth2-device-authorize-url': `${issuer}/device/auth` };
  delete device['oauth2-authorize-url'];   // the device flow has none: the field is hidden
  await fillTarget({ 'auth-method': 'microsoft-oauth2', mode: 'starttls', 'oauth2-flow': 'device-code' }, device);
  await page.click('#save-target');
  await expectMessage(/Saved target web2/, 'create a device-code target');
  await page.waitForSelector('#authorize-web2');
  await page.click('#authorize-web2');
  await page.waitForSelector('#device-code', { timeout: 20000 });
  const code = await page.locator('#device-code').textContent();
  const uri = await page.locator('#message a').getAttribute('href');
  console.log(`ok   device code shown: ${code} at ${uri}`);
  await page.screenshot({ path: `${shots}/5-device-code.png`, fullPage: true });
  const other = await (await browser.newContext()).newPage();   // "another device" (its own session)
  await other.goto(uri);
  await other.fill('input[name="user_code"]', code);
  await other.click('button[type="submit"]');
  // the rig's pages in turn (confirm the code, log in, consent), until one has no form left
  for (let step = 0; step < 6; step += 1) {
    await other.waitForLoadState();
    if (await other.locator('button[type="submit"]:not([name="abort"])').count() === 0) break;
    if (await other.locator('input[name="login"]').count() !== 0) {
      await other.fill('input[name="login"]', `device-${user}`);
      await other.fill('input[name="password"]', 'x');
    }
    await Promise.all([other.waitForNavigation(), other.locator('button[type="submit"]:not([name="abort"])').first().click()]);
  }
  await other.screenshot({ path: `${shots}/5b-device-approved.png`, fullPage: true });
  await expectMessage(/Target web2 is authorized/, 'device code approved');
  await page.click('#test-web2');
  await expectMessage(/Test notification sent through web2/, 'send test (device code)');

  // app-only: nothing to authorize, Send test mints a token
  await page.click('#new-target');
  const app = { name: 'web3', server: 'localhost', port: env('RIG_SMTP_STARTTLS_PORT'),
    'from-address': env('RIG_APP_MAILBOX'), mailto: 'ops@example.test', 'oauth2-client-id': env('RIG_APP_CLIENT_ID'),
    'oauth2-client-secret': env('RIG_APP_CLIENT_SECRET'), 'oauth2-tenant-id': '12345678-90ab-cdef-1234-567890abcdef',
    'oauth2-token-url': `${issuer}/token` };
  await fillTarget({ 'auth-method': 'microsoft-oauth2', mode: 'starttls', 'oauth2-flow': 'client-credentials' }, app);
  await page.click('#save-target');
  await expectMessage(/Saved target web3/, 'create an app-only target');
  await page.waitForSelector('#test-web3');
  if (await page.locator('#authorize-web3').count() !== 0) throw new Error('an app-only target has an Authorize button');
  await page.click('#test-web3');
  await expectMessage(/Test notification sent through web3/, 'send test (app-only)');
  await page.screenshot({ path: `${shots}/6-app-only.png`, fullPage: true });

  // Edit: the form shows the target's mode as it was saved; a change saved with the target's
  // digest keeps everything else, and the target keeps working
  await page.click('#edit-web3');
  await page.evaluate(() => { document.getElementById('more').open = true; });
  const shown = await page.evaluate(() => ['oauth2-flow', 'oauth2-tenant-id', 'oauth2-authorize-url']
    .map((k) => [k, document.querySelector(`.field[data-key="${k}"]`).hidden, document.getElementById(`f-${k}`).value]));
  if (JSON.stringify(shown) !== JSON.stringify([['oauth2-flow', false, 'client-credentials'],
    ['oauth2-tenant-id', false, '12345678-90ab-cdef-1234-567890abcdef'], ['oauth2-authorize-url', true, '']])) {
    throw new Error(`edit form of web3: ${JSON.stringify(shown)}`);
  }
  await page.fill('#f-comment', 'edited in the page');
  await page.click('#save-target');
  await expectMessage(/Saved target web3/, 'edit an app-only target (its digest, nothing lost)');
  await page.click('#test-web3');
  await expectMessage(/Test notification sent through web3/, 'send test after the edit');

  // a wrong client secret: Verify names the step, the kind and what to do; the real status
  // keeps the error with its kind
  await page.click('#new-target');
  await fillTarget({ 'auth-method': 'microsoft-oauth2', mode: 'starttls', 'oauth2-flow': 'client-credentials' },
    { ...app, name: 'web4', 'oauth2-client-secret': 'not-the-secret' });
  await page.click('#save-target');
  await expectMessage(/Saved target web4/, 'create an app-only target with a wrong secret');
  await page.waitForSelector('#verify-button-web4');
  await page.click('#verify-button-web4');
  await page.waitForSelector('#verify-web4 .verdict', { timeout: 30000 });
  const failed = await page.locator('#verify-web4 .verdict').textContent();
  if (!/^Login failed at step token: needs an admin fix: .+/.test(failed)) throw new Error(`verify failure: ${failed}`);
  if (!/ - failed$/.test(await page.locator('#verify-web4 li[data-step="token"]').textContent())) throw new Error('the failed step is not marked');
  console.log(`ok   verify failure names step, kind and hint: ${failed}`);
  await page.click('#reload');
  await page.waitForSelector('#health-web4 dd[data-health="last-error"]');
  h = await health('web4');
  if (!/^needs an admin fix: /.test(h['last-error'])) throw new Error(`last error: ${h['last-error']}`);
  console.log(`ok   last error with its kind: ${h['last-error']}`);

  // what the alerts and Graph parts add to the status (forecast, alert target), and an
  // Exchange Online 5.7.139 reply no rig server gives: the real status of web1 with those
  // fields added (a hand-built answer), shown as is
  const hint = '535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. '
    + 'Visit https://aka.ms/smtp_auth_disabled for more information. (use transport graph, or enable SMTP AUTH for the mailbox)';
  await page.route('**/api2/json/targets/web1/oauth2-status', async (route) => {
    const real = await (await route.fetch()).json();
    real.data.forecast = [{ text: 'the refresh token expires in 12 days unless the daily job runs' }];
    real.data.alert_target = 'ops-mail';
    real.data.last_error = { kind: 'needs-admin-fix', message: hint, time: Math.floor(Date.now() / 1000) };
    await route.fulfill({ json: real });
  });
  await page.click('#reload');
  await page.waitForFunction(() => document.querySelector('#health-web1 dd[data-health="forecast"]'), null, { timeout: 20000 });
  h = await health('web1');
  if (h.forecast !== 'the refresh token expires in 12 days unless the daily job runs') throw new Error(`forecast: ${h.forecast}`);
  if (h['alert-target'] !== 'ops-mail') throw new Error(`alert target: ${h['alert-target']}`);
  if (!h['last-error'].startsWith(`needs an admin fix: ${hint} (`)) throw new Error(`5.7.139: ${h['last-error']}`);
  console.log('ok   forecast, alert target and the 5.7.139 hint are shown as given');
  for (const [w, ht, tag] of [[1280, 900, 'desktop'], [390, 844, 'phone']]) {
    await page.setViewportSize({ width: w, height: ht });
    await page.screenshot({ path: `${shots}/7-health-${tag}.png`, fullPage: true });
  }
  await page.unroute('**/api2/json/targets/web1/oauth2-status');
} finally {
  await browser.close();
}
