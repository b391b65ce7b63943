// authorize.mjs — real-browser test of oxnotify's web page, driven by playwright-core in Debian's
// Chromium: create a target in the form, click Authorize, log in and consent at the rig's real
// OAuth2 server in the popup, let the callback hand the code back (postMessage), wait for the
// backend exchange, click "Send test". Exit 0 on success; screenshots go to $SHOTS.
// env: SERVER_URL TOKEN RIG_ISSUER RIG_SMTP_STARTTLS_PORT USER_EMAIL SHOTS
import { chromium } from 'playwright-core';

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
    throw new Error(`${what}: expected ${re}, page says: ${await message()}`);
  }
  console.log(`ok   ${what}: ${await message()}`);
}

try {
  await page.goto(server);
  await page.fill('#token', env('TOKEN'));
  await page.click('#save-token');

  const form = {
    name: 'web1', server: 'localhost', port: env('RIG_SMTP_STARTTLS_PORT'), 'from-address': user,
    mailto: 'ops@example.test', 'oauth2-client-id': 'rig-post', 'oauth2-client-secret': 'rig-secret',
    'oauth2-tenant-id': '12345678-90ab-cdef-1234-567890abcdef',
    'oauth2-authorize-url': `${issuer}/auth`, 'oauth2-token-url': `${issuer}/token`,
  };
  for (const [k, v] of Object.entries(form)) await page.fill(`#target-form [name="${k}"]`, v);
  await page.selectOption('#target-form [name="mode"]', 'starttls');
  await page.selectOption('#target-form [name="auth-method"]', 'microsoft-oauth2');
  await page.click('#save-target');
  await expectMessage(/Saved target web1/, 'create target in the form');
  await page.waitForSelector('#authorize-web1');
  await page.screenshot({ path: `${shots}/1-target-created.png`, fullPage: true });

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
  await page.waitForFunction(() => {
    const td = document.querySelector('tr[data-name="web1"] td:nth-child(5)');
    return td && td.dataset.authorized === '1';
  }, null, { timeout: 20000 });
  await page.screenshot({ path: `${shots}/3-authorized.png`, fullPage: true });

  await page.click('#test-web1');
  await expectMessage(/Test notification sent through web1/, 'send test');
  await page.screenshot({ path: `${shots}/4-test-sent.png`, fullPage: true });
} finally {
  await browser.close();
}
