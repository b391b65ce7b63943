// graph-standin.mjs — a hand-written STAND-IN for Microsoft Graph's sendMail (no open-source Graph
// server exists; see ../shared/provider-facts.md F.6). It is not Graph: it implements the one request
// oxnotify makes, as Graph documents it, with the rig's own parts behind it:
//   * the bearer token is checked by RFC 7662 introspection at the rig's oidc-provider: active, a
//     Graph scope (delegated https://graph.microsoft.com/Mail.Send, or app-only .../.default; an
//     Outlook/SMTP token is refused as Graph refuses a wrong audience), and the mailbox it may send as
//     (delegated: the signed-in user; app-only: the token's sub, the mailbox the app's RBAC for
//     Applications scope includes);
//   * POST /v1.0/users/{mailbox}/sendMail in JSON form ({"message":{..},"saveToSentItems":..}) or MIME
//     form (base64 in a text/plain body), parsed and checked as Graph documents it; 202 Accepted with an
//     empty body, the message delivered to the rig's Maildir;
//   * every error in Graph's documented JSON ({"error":{"code","message","innerError":{..}}}).
// Mailboxes choose the documented errors (local part prefix, all @example.test):
//   missing-*   404 ErrorInvalidUser            onprem-*   404 MailboxNotEnabledForRESTAPI
//   denied-*    403 ErrorAccessDenied (Mail.Send not granted)
//   full-*      403 ErrorQuotaExceeded          large-*    413 (as if over the tenant's size limit)
//   throttle-N-* the first N requests 429 TooManyRequests, Retry-After 1.5 (fractional, as Graph)
//   busy-*      503 serviceNotAvailable, Retry-After 1, always
//   slow-*      answered after 1.5 s (concurrency: a 5th concurrent request per app and mailbox gets
//               429 ApplicationThrottled "MailboxConcurrency", as Graph's limit of 4)
// From: the mailbox itself, or alerts@example.test (Send As granted to every mailbox); any other From is
// 403 ErrorSendAsDenied. Requests over 4 MB are 413.
// env: GRAPH_PORT, GRAPH_TLS_CERT, GRAPH_TLS_KEY, INTROSPECT_URL, INTROSPECT_CLIENT_ID,
//      INTROSPECT_CLIENT_SECRET, GRAPH_MAILDIR. One log line per request on stdout, written before its
//      answer: `sendMail <mailbox> <status> <client_id>`.
import { createServer } from 'node:https';
import { readFileSync, writeFileSync, renameSync, mkdirSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';

const PORT = Number(process.env.GRAPH_PORT);
const MAILDIR = process.env.GRAPH_MAILDIR;
const DELEGATED_SCOPE = 'https://graph.microsoft.com/Mail.Send';
const APP_SCOPE = 'https://graph.microsoft.com/.default';
const SEND_AS_ANYONE = 'alerts@example.test';
const MAX_REQUEST = 4 * 1024 * 1024;
const MAX_CONCURRENT = 4;
for (const d of ['tmp', 'new', 'cur']) mkdirSync(join(MAILDIR, d), { recursive: true });

const inFlight = new Map(); // `${client}|${mailbox}` -> requests being served
const seen = new Map();     // mailbox -> requests answered so far (throttle-N)
let delivered = 0;

function graphError(res, status, code, message, extra = {}) {
  const date = new Date().toISOString().replace(/\.\d+Z$/, '');
  const innerError = { date, 'request-id': randomUUID(), 'client-request-id': randomUUID(), ...(extra.inner ?? {}) };
  const headers = { 'content-type': 'application/json', ...(extra.headers ?? {}) };
  res.writeHead(status, headers);
  res.end(JSON.stringify({ error: { code, message, innerError } }));
  return status;
}

async function introspect(token) {
  const body = new URLSearchParams({
    token, client_id: process.env.INTROSPECT_CLIENT_ID, client_secret: process.env.INTROSPECT_CLIENT_SECRET,
  });
  const r = await fetch(process.env.INTROSPECT_URL, { method: 'POST', body });
  if (!r.ok) throw new Error(`introspection answered ${r.status}`);
  return r.json();
}

const address = (r) => r?.emailAddress?.address;
const validAddress = (a) => typeof a === 'string' && /^[^\s@<>]+@[^\s@<>]+$/.test(a);
const b64 = (s) => Buffer.from(s, 'utf8').toString('base64').replace(/.{76}/g, '$&\r\n');
const encodeWord = (s) => (/^[\x20-\x7e]*$/.test(s) ? s : `=?UTF-8?B?${Buffer.from(s, 'utf8').toString('base64')}?=`);
const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

// the delivered copy: what Exchange would put on the wire for a JSON-form message
function rfc5322(mailbox, msg, save) {
  const from = msg.from?.emailAddress ?? { address: mailbox };
  const list = (k) => (msg[k] ?? []).map(address).join(', ');
  const lines = [
    `From: ${from.name ? `"${encodeWord(from.name)}" ` : ''}<${from.address}>`,
    ...(from.address.toLowerCase() !== mailbox.toLowerCase() ? [`Sender: <${mailbox}>`] : []),
    `To: ${list('toRecipients')}`,
    ...(msg.ccRecipients?.length ? [`Cc: ${list('ccRecipients')}`] : []),
    `Subject: ${encodeWord(msg.subject ?? '')}`,
    `Date: ${new Date().toUTCString()}`,
    `Message-ID: <${randomUUID()}@graph-standin.rig.localhost>`,
    ...(msg.internetMessageHeaders ?? []).map((h) => `${h.name}: ${h.value}`),
    `X-Graph-Standin-Mailbox: ${mailbox}`,
    `X-Graph-Standin-SaveToSentItems: ${save}`,
    'MIME-Version: 1.0',
    `Content-Type: ${String(msg.body?.contentType ?? 'Text').toLowerCase() === 'html' ? 'text/html' : 'text/plain'}; charset=utf-8`,
    'Content-Transfer-Encoding: base64',
  ];
  return `${lines.join('\r\n')}\r\n\r\n${b64(msg.body?.content ?? '')}\r\n`;
}

// into the Maildir with LF line ends, as a local delivery agent stores mail
function deliver(text) {
  delivered += 1;
  text = text.replace(/\r\n/g, '\n');
  const name = `${Date.now()}.${process.pid}_${delivered}.graph-standin`;
  writeFileSync(join(MAILDIR, 'tmp', name), text, { mode: 0o644 });
  renameSync(join(MAILDIR, 'tmp', name), join(MAILDIR, 'new', name));
}

async function sendMail(req, res, ctx, body) {
  const { mailbox } = ctx;
  // 1. the token (as Graph: 401 InvalidAuthenticationToken, with its challenge)
  const challenge = { 'www-authenticate': 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"' };
  const auth = req.headers.authorization ?? '';
  if (!/^Bearer \S+$/.test(auth)) return { status: graphError(res, 401, 'InvalidAuthenticationToken', 'Access token is empty.', { headers: challenge }) };
  const info = await introspect(auth.slice(7));
  if (!info.active) return { status: graphError(res, 401, 'InvalidAuthenticationToken', 'Lifetime validation failed, the token is expired.', { headers: challenge }) };
  const scopes = String(info.scope ?? '').split(' ');
  const appOnly = scopes.includes(APP_SCOPE);
  ctx.client = info.client_id ?? '-';
  if (!appOnly && !scopes.includes(DELEGATED_SCOPE)) {
    return { status: graphError(res, 401, 'InvalidAuthenticationToken', 'Access token validation failure. Invalid audience.', { headers: challenge }), client: info.client_id };
  }
  const client = info.client_id;
  ctx.client = client;
  const who = String(info.sub ?? '').toLowerCase();
  // 2. the mailbox
  const box = mailbox.toLowerCase();
  const local = box.split('@')[0];
  if (!box.endsWith('@example.test') || local.startsWith('missing-')) {
    return { status: graphError(res, 404, 'ErrorInvalidUser', `The requested user '${mailbox}' is invalid.`), client };
  }
  if (local.startsWith('onprem-')) {
    return { status: graphError(res, 404, 'MailboxNotEnabledForRESTAPI', 'The mailbox is either inactive, soft-deleted, or is hosted on-premise.'), client };
  }
  // 3. the permission: Mail.Send for this mailbox (delegated: the user's own; app-only: the RBAC scope)
  if (who !== box || local.startsWith('denied-')) {
    return { status: graphError(res, 403, 'ErrorAccessDenied', 'Access is denied. Check credentials and try again.'), client };
  }
  // 4. throttling and concurrency (per app and mailbox)
  const key = `${client}|${box}`;
  const n = (seen.get(box) ?? 0) + 1;
  seen.set(box, n);
  const throttle = /^throttle-(\d+)-/.exec(local);
  if (throttle && n <= Number(throttle[1])) {
    return { status: graphError(res, 429, 'TooManyRequests', 'Please retry again later.', { headers: { 'retry-after': '1.5' }, inner: { code: '429', status: '429', message: 'Please retry after' } }), client };
  }
  if (local.startsWith('busy-')) {
    return { status: graphError(res, 503, 'serviceNotAvailable', 'Service unavailable', { headers: { 'retry-after': '1' } }), client };
  }
  if ((inFlight.get(key) ?? 0) >= MAX_CONCURRENT) {
    return { status: graphError(res, 429, 'ApplicationThrottled', 'Application is over its MailboxConcurrency limit.', { headers: { 'retry-after': '1' } }), client };
  }
  inFlight.set(key, (inFlight.get(key) ?? 0) + 1);
  try {
    if (local.startsWith('slow-')) await sleep(1500);
    return { status: await accept(req, res, mailbox, body, local), client, appOnly };
  } finally {
    inFlight.set(key, inFlight.get(key) - 1);
  }
}

async function accept(req, res, mailbox, body, local) {
  if (body.length > MAX_REQUEST || local.startsWith('large-')) {
    return graphError(res, 413, 'ErrorMessageSizeExceeded', 'The message exceeds the maximum supported size.');
  }
  if (local.startsWith('full-')) {
    return graphError(res, 403, 'ErrorQuotaExceeded', 'The process failed to get the correct properties.');
  }
  const type = String(req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  let text;
  if (type === 'text/plain') {
    // MIME form: the whole message, base64
    const raw = body.toString('ascii').replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(raw) || raw.length % 4 !== 0) {
      return graphError(res, 400, 'ErrorMimeContentInvalidBase64String', 'Invalid base64 string for MIME content.');
    }
    text = Buffer.from(raw, 'base64').toString('utf8');
    const head = text.split(/\r?\n\r?\n/)[0];
    if (!/^(to|cc|bcc):\s*\S/im.test(head)) {
      return graphError(res, 400, 'ErrorInvalidRecipients', 'At least one recipient is required, but none were found.');
    }
    text = `X-Graph-Standin-Mailbox: ${mailbox}\r\n${text}`;
  } else if (type === 'application/json') {
    let doc;
    try { doc = JSON.parse(body.toString('utf8')); } catch {
      return graphError(res, 400, 'BadRequest', 'Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.');
    }
    const msg = doc?.message;
    if (typeof msg !== 'object' || msg === null) return graphError(res, 400, 'ErrorInvalidParameter', "The value of the parameter 'Message' is empty.");
    const headers = msg.internetMessageHeaders ?? [];
    const bad = headers.find((h) => !/^x-/i.test(String(h?.name ?? '')));
    if (bad) return graphError(res, 400, 'InvalidInternetMessageHeader', `The internet message header name '${bad.name}' should start with 'x-' or 'X-'.`);
    if (headers.length > 5) return graphError(res, 400, 'InvalidInternetMessageHeaderCollection', 'Maximum number of headers in one message should be less than or equal to 5.');
    const from = address(msg.from);
    if (from && from.toLowerCase() !== mailbox.toLowerCase() && from.toLowerCase() !== SEND_AS_ANYONE) {
      return graphError(res, 403, 'ErrorSendAsDenied', 'The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account. Cannot submit message.');
    }
    const rcpts = ['toRecipients', 'ccRecipients', 'bccRecipients'].flatMap((k) => (msg[k] ?? []).map(address));
    if (rcpts.length === 0) return graphError(res, 400, 'ErrorInvalidRecipients', 'At least one recipient is required, but none were found.');
    if (!rcpts.every(validAddress)) return graphError(res, 400, 'ErrorInvalidRecipients', "At least one recipient isn't valid.");
    const save = doc.saveToSentItems === undefined ? true : String(doc.saveToSentItems) === 'true';
    text = rfc5322(mailbox, msg, save);
  } else {
    return graphError(res, 415, 'UnsupportedMediaType', 'Content-Type must be application/json or text/plain.');
  }
  deliver(text);
  res.writeHead(202, { 'content-length': '0' });
  res.end();
  return 202;
}

const server = createServer({ cert: readFileSync(process.env.GRAPH_TLS_CERT), key: readFileSync(process.env.GRAPH_TLS_KEY) }, (req, res) => {
  const chunks = [];
  let size = 0;
  req.on('data', (c) => { size += c.length; if (size <= MAX_REQUEST + 1024 * 1024) chunks.push(c); });
  req.on('end', async () => {
    const m = /^\/v1\.0\/users\/([^/?]+)\/sendMail$/.exec(req.url.split('?')[0]);
    const ctx = { mailbox: '-', client: '-' };
    // the log line is written before the answer, so a client that got it finds it in the log
    const writeHead = res.writeHead.bind(res);
    res.writeHead = (status, headers) => {
      console.log(`sendMail ${ctx.mailbox} ${status} ${ctx.client}`);
      return writeHead(status, headers);
    };
    try {
      if (!m || req.method !== 'POST') {
        graphError(res, 400, 'Request_BadRequest', `Unsupported request: ${req.method} ${req.url.split('?')[0]} (this stand-in serves POST /v1.0/users/{id}/sendMail only)`);
      } else {
        ctx.mailbox = decodeURIComponent(m[1]);
        await sendMail(req, res, ctx, Buffer.concat(chunks));
      }
    } catch (e) {
      if (!res.headersSent) graphError(res, 503, 'serviceNotAvailable', `stand-in failure: ${e.message}`);
    }
  });
});
server.listen(PORT, '127.0.0.1', () => console.log(`graph-standin listening on https://127.0.0.1:${PORT}`));
