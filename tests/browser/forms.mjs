// forms.mjs — real-browser test of oxnotify's target form, driven by playwright-core in Debian's
// Chromium against the real server: for each provider and flow the form shows what that mode
// needs, the optional rest under "More settings", hides the others (and the flows a provider
// does not have), and shows the registration values (redirect URI, scopes) to paste at the
// provider; every shown control has a label. A key the table gains later is rendered from the
// table alone. Screenshots of each mode at desktop and phone widths go to $SHOTS.
// env: SERVER_URL SHOTS
import { chromium } from 'playwright-core';
/* global document -- the functions given to page.evaluate run in the page */

const server = process.env.SERVER_URL;
const shots = process.env.SHOTS || '/tmp';
if (!server) throw new Error('SERVER_URL not set');

const MS_SCOPE = 'https://outlook.office.com/SMTP.Send offline_access';
const REDIRECT = `${server}/oauth2/callback`;
// mode: what is chosen, which keys must be in the main form, in "More settings", hidden;
// which flows the flow list offers; the registration values (null: no registration box)
const MODES = [
  { name: 'microsoft-code', choose: { 'auth-method': 'microsoft-oauth2', 'oauth2-flow': 'authorization-code' },
    needed: ['server', 'from-address', 'mailto', 'oauth2-tenant-id', 'oauth2-client-id', 'oauth2-client-secret', 'oauth2-flow'],
    optional: ['oauth2-authorize-url', 'oauth2-token-url', 'oauth2-scope', 'oauth2-client-auth', 'username', 'broker-allow-user'],
    hidden: ['password', 'oauth2-service-account', 'oauth2-private-key', 'oauth2-device-authorize-url', 'oauth2-certificate-thumbprint', 'allow-insecure-auth'],
    flows: ['authorization-code', 'client-credentials', 'password', 'device-code'],
    registration: { 'reg-redirect': REDIRECT, 'reg-scope': MS_SCOPE } },
  { name: 'microsoft-app-only', choose: { 'auth-method': 'microsoft-oauth2', 'oauth2-flow': 'client-credentials' },
    needed: ['oauth2-tenant-id', 'oauth2-client-id', 'oauth2-client-secret'],
    optional: ['oauth2-token-url', 'oauth2-client-auth'],
    hidden: ['oauth2-authorize-url', 'oauth2-device-authorize-url', 'password', 'oauth2-private-key'],
    registration: { 'reg-redirect': null, 'reg-scope': 'https://outlook.office365.com/.default' } },
  { name: 'microsoft-app-only-certificate',
    choose: { 'auth-method': 'microsoft-oauth2', 'oauth2-flow': 'client-credentials', 'oauth2-client-auth': 'private-key-jwt' },
    needed: ['oauth2-tenant-id', 'oauth2-client-id', 'oauth2-certificate-thumbprint', 'oauth2-private-key'],
    optional: ['oauth2-key-id'],
    hidden: ['oauth2-client-secret', 'oauth2-authorize-url'],
    registration: { 'reg-redirect': null, 'reg-scope': 'https://outlook.office365.com/.default' } },
  { name: 'microsoft-device-code', choose: { 'auth-method': 'microsoft-oauth2', 'oauth2-flow': 'device-code' },
    needed: ['oauth2-tenant-id', 'oauth2-client-id'],
    optional: ['oauth2-device-authorize-url', 'oauth2-client-secret'],
    hidden: ['oauth2-authorize-url', 'oauth2-private-key'],
    clientAuths: ['', 'client-secret-post', 'client-secret-basic'],
    registration: { 'reg-redirect': null, 'reg-scope': MS_SCOPE } },
  { name: 'microsoft-password', choose: { 'auth-method': 'microsoft-oauth2', 'oauth2-flow': 'password' },
    needed: ['oauth2-tenant-id', 'oauth2-client-id', 'oauth2-client-secret', 'password'],
    hidden: ['oauth2-authorize-url', 'oauth2-service-account'],
    registration: { 'reg-redirect': null, 'reg-scope': MS_SCOPE } },
  { name: 'google-code', choose: { 'auth-method': 'google-oauth2', 'oauth2-flow': 'authorization-code' },
    needed: ['oauth2-client-id', 'oauth2-client-secret'],
    optional: ['oauth2-authorize-url'],
    hidden: ['oauth2-tenant-id', 'oauth2-service-account', 'oauth2-certificate-thumbprint', 'password'],
    flows: ['authorization-code', 'service-account'],
    registration: { 'reg-redirect': REDIRECT, 'reg-scope': 'https://mail.google.com/' } },
  { name: 'google-service-account', choose: { 'auth-method': 'google-oauth2', 'oauth2-flow': 'service-account' },
    needed: ['oauth2-service-account', 'oauth2-private-key'],
    optional: ['oauth2-key-id', 'oauth2-token-url'],
    hidden: ['oauth2-client-id', 'oauth2-client-secret', 'oauth2-client-auth', 'oauth2-tenant-id', 'oauth2-authorize-url'],
    registration: { 'reg-redirect': null, 'reg-scope': 'https://mail.google.com/' } },
  { name: 'generic-code', choose: { 'auth-method': 'oauth2', 'oauth2-flow': 'authorization-code' },
    needed: ['oauth2-client-id', 'oauth2-client-secret', 'oauth2-authorize-url', 'oauth2-token-url', 'oauth2-scope'],
    hidden: ['oauth2-tenant-id', 'oauth2-device-authorize-url'],
    flows: ['authorization-code', 'client-credentials', 'service-account', 'password', 'device-code'],
    registration: { 'reg-redirect': REDIRECT, 'reg-scope': '(set Scopes above)' } },
  { name: 'generic-device-code', choose: { 'auth-method': 'oauth2', 'oauth2-flow': 'device-code' },
    needed: ['oauth2-device-authorize-url', 'oauth2-token-url', 'oauth2-scope'],
    hidden: ['oauth2-authorize-url'],
    registration: { 'reg-redirect': null } },
  { name: 'plain', choose: { 'auth-method': 'plain' },
    needed: ['server', 'username', 'password'],
    optional: ['author', 'comment', 'disable', 'max-connections'],
    hidden: ['oauth2-flow', 'oauth2-client-id', 'oauth2-tenant-id', 'oauth2-client-secret', 'broker-allow-user', 'allow-insecure-auth'],
    registration: null },
  { name: 'plain-insecure', choose: { 'auth-method': 'plain', mode: 'insecure' },
    needed: ['allow-insecure-auth', 'username', 'password'],
    registration: null },
  { name: 'none', choose: { 'auth-method': 'none' },
    needed: ['server', 'from-address'],
    hidden: ['username', 'password', 'oauth2-flow', 'allow-insecure-auth'],
    registration: null },
];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const fail = (what) => { throw new Error(what); };

// Where each key's field is now: 'needed', 'optional' or 'hidden'.
const placement = (page) => page.evaluate(() => Object.fromEntries([...document.querySelectorAll('.field[data-key]')]
  .map((d) => [d.dataset.key, d.hidden ? 'hidden' : d.parentElement.id === 'needed-fields' ? 'needed' : 'optional'])));

// Every shown control of the form and the guide has a label with text (screen readers).
const unlabelled = (page) => page.evaluate(() => [...document.querySelectorAll('input, select, textarea')]
  .filter((c) => c.type !== 'hidden' && !c.closest('[hidden]'))
  .filter((c) => !c.labels || !c.labels.length || !c.labels[0].textContent.trim())
  .map((c) => c.name || c.id));

async function choose(page, values) {
  // auth-method first: the rest depends on it
  for (const k of ['auth-method', 'mode', 'oauth2-flow', 'oauth2-client-auth']) {
    if (values[k] !== undefined) await page.selectOption(`#f-${k}`, values[k]);
  }
}

try {
  for (const [tag, width, height] of [['desktop', 1280, 900], ['phone', 390, 844]]) {
    const page = await (await browser.newContext({ viewport: { width, height } })).newPage();
    await page.goto(server);
    await page.waitForSelector('body[data-ready="1"]');
    const table = await page.evaluate(async () => (await (await fetch('/form.json')).json()).keys);
    for (const m of MODES) {
      await page.click('#new-target');
      await choose(page, m.choose);
      const at = await placement(page);
      for (const [where, list] of [['needed', m.needed], ['optional', m.optional], ['hidden', m.hidden]]) {
        for (const k of list || []) {
          if (at[k] !== where) fail(`${m.name}: ${k} is ${at[k]}, expected ${where}`);
        }
      }
      if (table.some((k) => !(k.name in at))) fail(`${m.name}: a key of the table has no field`);
      // the Graph choice, once the table has it: Microsoft targets only
      if ('transport' in at) {
        const want = m.choose['auth-method'] === 'microsoft-oauth2' ? 'needed' : 'hidden';
        if (at.transport !== want) fail(`${m.name}: transport is ${at.transport}, expected ${want}`);
      }
      const visibleFlows = await page.evaluate(() => [...document.getElementById('f-oauth2-flow').options]
        .filter((o) => !o.hidden).map((o) => o.value));
      if (m.flows && visibleFlows.join() !== m.flows.join()) fail(`${m.name}: flows offered ${visibleFlows}`);
      if (m.clientAuths) {
        const auths = await page.evaluate(() => [...document.getElementById('f-oauth2-client-auth').options]
          .filter((o) => !o.hidden).map((o) => o.value));
        if (auths.join() !== m.clientAuths.join()) fail(`${m.name}: client authentications offered ${auths}`);
      }
      const reg = await page.evaluate(() => (document.getElementById('registration').hidden ? null
        : Object.fromEntries([...document.querySelectorAll('#registration-values code')].map((c) => [c.id, c.textContent]))));
      if (m.registration === null && reg !== null) fail(`${m.name}: a registration box without a provider`);
      for (const [id, want] of Object.entries(m.registration || {})) {
        const got = reg ? (reg[id] === undefined ? null : reg[id]) : null;
        if (got !== want) fail(`${m.name}: ${id} is ${got}, expected ${want}`);
      }
      // the help follows the chosen provider
      const heading = { 'microsoft-oauth2': '# Microsoft', 'google-oauth2': '# Google', oauth2: '# Other OAuth2' }[m.choose['auth-method']];
      if (heading) {
        await page.waitForFunction((h) => document.getElementById('guide-text').textContent.startsWith(h), heading, { timeout: 10000 })
          .catch(() => fail(`${m.name}: the guide shown is not the provider's (${heading})`));
      }
      const missing = await unlabelled(page);
      if (missing.length) fail(`${m.name}: controls without a label: ${missing}`);
      await page.evaluate(() => { document.getElementById('more').open = true; });
      await page.screenshot({ path: `${shots}/form-${m.name}-${tag}.png`, fullPage: true });
      if (tag === 'desktop') console.log(`ok   form ${m.name}: ${m.needed.join(', ')}`);
    }
    // the guide of the chosen provider is the page's help
    await choose(page, { 'auth-method': 'google-oauth2' });
    await page.click('#show-guide');
    await page.waitForFunction(() => /Domain-wide delegation/i.test(document.getElementById('guide-text').textContent));
    await page.screenshot({ path: `${shots}/guide-google-${tag}.png`, fullPage: true });
    if (tag === 'desktop') console.log('ok   the guide of the chosen provider is shown');
    const wide = await page.evaluate(() => document.documentElement.scrollWidth);
    if (wide > width + 1) fail(`${tag}: the page is ${wide} px wide in a ${width} px window`);
    console.log(`ok   ${tag} (${width} px): no sideways scrolling`);
    await page.context().close();
  }

  // a key the table gains later (another part appends it at the end) is rendered from the
  // table alone: label, choices, and where it applies (a hand-built table entry)
  const page = await (await browser.newContext()).newPage();
  await page.route('**/form.json', async (route) => {
    const real = await (await route.fetch()).json();
    const ms = [[{ key: 'auth-method', values: ['microsoft-oauth2'] }]];
    real.keys.push({ name: 'x-later-key', kind: 'choice', private: false, multi: false, deletable: true,
      applies: ms, needed: ms, choices: [{ value: 'one', applies: [[]] }, { value: 'two', applies: ms }] });
    await route.fulfill({ json: real });
  });
  await page.goto(server);
  await page.waitForSelector('body[data-ready="1"]');
  await choose(page, { 'auth-method': 'microsoft-oauth2' });
  let at = await placement(page);
  if (at['x-later-key'] !== 'needed') fail(`a later key for Microsoft: ${at['x-later-key']}`);
  if (await page.locator('label[for="f-x-later-key"]').textContent() !== 'x-later-key') fail('a later key has no label');
  await choose(page, { 'auth-method': 'google-oauth2' });
  at = await placement(page);
  if (at['x-later-key'] !== 'hidden') fail(`a later key for Google: ${at['x-later-key']}`);
  console.log('ok   a key the table gains later is shown where the table says');
} finally {
  await browser.close();
}
