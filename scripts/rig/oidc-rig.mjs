// oidc-rig.mjs — configuration-only launcher for panva/oidc-provider (the AS itself is the npm package).
// env: OIDC_PORT (required), OIDC_SA_KEYFILE (the Google-style service-account JSON key file of the
// JWT-bearer rig extension; without it that extension is off), AT_TTL (s, default 3600), SHORT_TTL (s, access-token TTL of client
// 'rig-short', default 3), RT_TTL (s, default 86400), OIDC_ROTATE (1 = rotate refresh tokens on every
// use, the default; 0 = oidc-provider's own policy)
import Provider, { errors } from 'oidc-provider';
import { readFileSync } from 'node:fs';
import { createPublicKey, createVerify } from 'node:crypto';
import * as querystring from 'node:querystring';

const port = Number(process.env.OIDC_PORT);
const issuer = `http://127.0.0.1:${port}`;
const AT_TTL = Number(process.env.AT_TTL || 3600);
const SHORT_TTL = Number(process.env.SHORT_TTL || 3);
const RT_TTL = Number(process.env.RT_TTL || 86400);
const ROTATE = (process.env.OIDC_ROTATE ?? '1') === '1';
const GRANTS = ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'];
// application_type 'native' => RFC 8252 loopback redirect: any port on http://127.0.0.1/callback matches
// Microsoft app-only (client credentials): the app 'rig-app' was granted one mailbox (Exchange's
// Add-MailboxPermission); its tokens carry that mailbox as `sub`, so Dovecot (username_attribute
// sub) accepts them for that mailbox only, as Exchange refuses an app for a mailbox never granted.
const APP_MAILBOX = 'app-mailbox@example.test';
const APP_SCOPE = 'https://outlook.office365.com/.default';
// Microsoft Graph (the rig's Graph stand-in, graph-standin.mjs): delegated Mail.Send and app-only .default;
// the app-only clients may ask for either resource, as an Entra app granted both
const GRAPH_SCOPES = ['https://graph.microsoft.com/Mail.Send', 'https://graph.microsoft.com/.default'];
const APP_SCOPES = `${APP_SCOPE} ${GRAPH_SCOPES[1]}`;
// Google service account with domain-wide delegation (rig extension, see below)
const SA = process.env.OIDC_SA_KEYFILE ? JSON.parse(readFileSync(process.env.OIDC_SA_KEYFILE, 'utf8')) : null;
const SA_DOMAIN = 'example.test';                 // the Workspace domain the delegation covers
const SA_SCOPES = ['https://mail.google.com/'];   // scopes the admin delegated to the client ID
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
// private_key_jwt: the certificate credential of app 'rig-app-jwt' (its public key, from OIDC_APP_JWT_KEYFILE)
const APP_JWT_KEY = process.env.OIDC_APP_JWT_KEYFILE
  ? { ...createPublicKey(readFileSync(process.env.OIDC_APP_JWT_KEYFILE, 'utf8')).export({ format: 'jwk' }), kid: 'rig-app-jwt-key', use: 'sig', alg: 'RS256' }
  : null;
// ROPC (rig extension below): the tenant's users and their passwords; 'ropc-mfa' must do MFA
const ROPC_USERS = { 'ropc-user@example.test': 'ropc-pass-123', 'ropc-mfa@example.test': 'ropc-pass-123' };
const appClient = (id, extra) => ({
  client_id: id, redirect_uris: ['http://127.0.0.1/callback', 'http://127.0.0.1/oauth2/callback'], response_types: ['code'],
  grant_types: GRANTS, application_type: 'native', ...extra,
});

const provider = new Provider(issuer, {
  clients: [
    appClient('rig-client', { client_secret: 'rig-secret', token_endpoint_auth_method: 'client_secret_basic' }),
    appClient('rig-post', { client_secret: 'rig-secret', token_endpoint_auth_method: 'client_secret_post' }),
    appClient('rig-public', { token_endpoint_auth_method: 'none' }),            // PKCE mandatory
    // strict about the client authentication method (see the rig extension below)
    appClient('rig-post-only', { client_secret: 'rig-secret', token_endpoint_auth_method: 'client_secret_post' }),
    appClient('rig-short', { client_secret: 'rig-secret', token_endpoint_auth_method: 'client_secret_basic' }),
    // Google-style: refresh tokens are NOT rotated for this client (refreshed in place)
    appClient('rig-inplace', { client_secret: 'rig-secret', token_endpoint_auth_method: 'client_secret_post' }),
    { // Microsoft app-only: client credentials with a client secret (Entra's "client secret")
      client_id: 'rig-app', client_secret: 'rig-app-secret', redirect_uris: [], response_types: [],
      grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_post', scope: APP_SCOPES,
    },
    ...(APP_JWT_KEY ? [{ // Microsoft app-only with a certificate credential (private_key_jwt)
      client_id: 'rig-app-jwt', redirect_uris: [], response_types: [], grant_types: ['client_credentials'],
      token_endpoint_auth_method: 'private_key_jwt', token_endpoint_auth_signing_alg: 'RS256',
      jwks: { keys: [APP_JWT_KEY] }, scope: APP_SCOPES,
    }] : []),
    { // Microsoft ROPC: a confidential client sends its secret with the user's password
      client_id: 'rig-ropc', client_secret: 'rig-secret', redirect_uris: [], response_types: [],
      grant_types: ['password'], token_endpoint_auth_method: 'client_secret_post',
    },
    ...(SA ? [{ // the service account: Google authenticates the JWT-bearer request by the assertion alone
      client_id: SA.client_email, redirect_uris: [], response_types: [], grant_types: [JWT_BEARER],
      token_endpoint_auth_method: 'none', scope: SA_SCOPES.join(' '),
    }] : []),
    { // the resource server (Dovecot) calling the introspection endpoint
      client_id: 'dovecot', client_secret: 'dovecot-secret', redirect_uris: [], response_types: [],
      grant_types: [], token_endpoint_auth_method: 'client_secret_post',
    },
    { // the Graph stand-in, the other resource server
      client_id: 'graph-standin', client_secret: 'graph-standin-secret', redirect_uris: [], response_types: [],
      grant_types: [], token_endpoint_auth_method: 'client_secret_post',
    },
  ],
  // the dev login form accepts any login name; it becomes sub and email
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id, email: id, email_verified: true }; } };
  },
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  // the provider scopes oxnotify requests for Google / Microsoft are accepted as plain OAuth2 scopes
  scopes: ['openid', 'offline_access', 'email', 'https://mail.google.com/', 'https://outlook.office.com/SMTP.Send', APP_SCOPE, ...GRAPH_SCOPES],
  // app-only and service-account tokens name the mailbox they may send as (see APP_MAILBOX, the
  // JWT-bearer extension); introspection returns extra claims, so Dovecot sees it as `sub`
  extraTokenClaims: async (ctx, token) => {
    if (token.kind !== 'ClientCredentials') return undefined;
    if (ctx?.oidc?.rigSubject) return { sub: ctx.oidc.rigSubject };
    if (token.clientId === 'rig-app' || token.clientId === 'rig-app-jwt') return { sub: APP_MAILBOX };
    return undefined;
  },
  features: {
    devInteractions: { enabled: true }, // stock login + consent HTML forms
    introspection: {
      enabled: true,
      // a refresh token must never pass as a bearer token at the resource server
      allowedPolicy: async (ctx, client, token) => token.kind !== 'RefreshToken' || client.clientId === token.clientId,
    },
    revocation: { enabled: true },
    deviceFlow: { enabled: true },
    clientCredentials: { enabled: true },
  },
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  ...(ROTATE ? { rotateRefreshToken: (ctx) => ctx.oidc.client.clientId !== 'rig-inplace' } : {}),
  expiresWithSession: async () => false,
  ttl: {
    AccessToken: (ctx, token, client) => (client?.clientId === 'rig-short' ? SHORT_TTL : AT_TTL),
    RefreshToken: RT_TTL, Grant: RT_TTL, Session: RT_TTL,
    ClientCredentials: (ctx, token, client) => (client?.clientId === 'rig-short' ? SHORT_TTL : AT_TTL),
    AuthorizationCode: 60, DeviceCode: 600, Interaction: 600, IdToken: 3600,
  },
  cookies: { keys: ['peer-rig-cookie-key'] },
  // rig-app's tokens are 4500 characters: Office 365 tokens can be longer than 4 KB, and the
  // whole path (cache, state file, XOAUTH2 two-step AUTH, Dovecot) must carry them
  formats: { bitsOfOpaqueRandomness: (ctx, token) => (token.clientId === 'rig-app' ? 4500 * 6 : 256) },
});
// Entra accepts prompt=select_account (oxnotify's Microsoft authorize URL sends it instead of
// prompt=consent) and issues a refresh token for offline_access whatever the prompt. oidc-provider
// follows OpenID Connect Core here: it knows no select_account prompt and drops offline_access
// unless prompt=consent. To stand in for Entra, the rig maps select_account to consent on the
// authorize endpoint (its login form is the account selection).
provider.use(async (ctx, next) => {
  if (ctx.path === '/auth' && typeof ctx.query.prompt === 'string') {
    const prompts = ctx.query.prompt.split(' ').map((p) => (p === 'select_account' ? 'consent' : p));
    ctx.query = { ...ctx.query, prompt: [...new Set(prompts)].join(' ') };
  }
  await next();
});
// ---- rig extension: Google's JWT-bearer grant (RFC 7523) for service accounts ----
// Emulates https://oauth2.googleapis.com/token as Google documents it: the assertion is an RS256 JWT
// signed with the service account's key (header kid = private_key_id), iss = client_email, sub = the
// Workspace mailbox, scope, aud = the token URL, exp <= iat + 3600. No client authentication, no
// refresh token. Errors as Google answers them: a bad signature or unknown key is invalid_grant
// "Invalid JWT Signature.", iat/exp out of range is invalid_grant "Invalid JWT: Token must be a
// short-lived token ...", a mailbox outside the delegated domain or an undelegated scope is
// unauthorized_client.
if (SA) {
  const saKey = createPublicKey(SA.private_key);
  const googleError = (error, description) => new errors.CustomOIDCProviderError(error, description);
  const b64json = (part) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  // oidc-provider authenticates a client on every token request; Google's endpoint has no client
  // authentication for this grant, so the client is named by the assertion's iss
  provider.use(async (ctx, next) => {
    if (ctx.method === 'POST' && ctx.path === '/token' && ctx.is('application/x-www-form-urlencoded')) {
      const chunks = [];
      for await (const c of ctx.req) chunks.push(c);
      const params = querystring.parse(Buffer.concat(chunks).toString('utf8'));
      if (params.grant_type === JWT_BEARER && !params.client_id && typeof params.assertion === 'string') {
        try { params.client_id = b64json(params.assertion.split('.')[1]).iss; } catch { /* the grant reports it */ }
      }
      ctx.req.body = querystring.stringify(params);
    }
    await next();
  });
  provider.registerGrantType(JWT_BEARER, async (ctx) => {
    const parts = String(ctx.oidc.params.assertion || '').split('.');
    if (parts.length !== 3) throw googleError('invalid_grant', 'Invalid JWT Signature.');
    let header; let claims;
    try { header = b64json(parts[0]); claims = b64json(parts[1]); } catch { throw googleError('invalid_grant', 'Invalid JWT Signature.'); }
    const verify = createVerify('RSA-SHA256');
    verify.update(`${parts[0]}.${parts[1]}`);
    if (header.alg !== 'RS256' || (header.kid && header.kid !== SA.private_key_id)
      || !verify.verify(saKey, Buffer.from(parts[2], 'base64url'))) {
      throw googleError('invalid_grant', 'Invalid JWT Signature.');
    }
    const now = Math.floor(Date.now() / 1000);
    if (claims.iss !== SA.client_email) throw googleError('invalid_grant', 'Invalid issuer.');
    if (claims.aud !== `${issuer}/token`) throw googleError('invalid_grant', 'Invalid JWT audience.');
    if (typeof claims.iat !== 'number' || typeof claims.exp !== 'number' || claims.exp - claims.iat > 3600
      || claims.exp <= claims.iat || claims.iat > now + 300 || claims.exp < now - 300) {
      throw googleError('invalid_grant', 'Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.');
    }
    const scopes = String(claims.scope || '').split(' ').filter(Boolean);
    if (typeof claims.sub !== 'string' || !claims.sub.endsWith(`@${SA_DOMAIN}`) || scopes.length === 0
      || !scopes.every((s) => SA_SCOPES.includes(s))) {
      throw googleError('unauthorized_client', 'Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.');
    }
    const token = new provider.ClientCredentials({ client: ctx.oidc.client, scope: scopes.join(' ') });
    ctx.oidc.rigSubject = claims.sub;
    ctx.oidc.entity('ClientCredentials', token);
    const value = await token.save();
    ctx.body = { access_token: value, expires_in: token.expiration, token_type: 'Bearer' };
  }, ['assertion', 'scope']);
}
// ---- rig extension: Entra's resource owner password credentials grant (ROPC) ----
// As login.microsoftonline.com documents it (v2-oauth-ropc): grant_type=password, username, password,
// scope, plus the client's own authentication. A wrong password is invalid_grant AADSTS50126, a user
// who must do MFA is invalid_grant AADSTS50076. The access token belongs to the user (sub = username).
provider.registerGrantType('password', async (ctx) => {
  const { username, password, scope } = ctx.oidc.params;
  const entra = (code, text) => new errors.CustomOIDCProviderError('invalid_grant', `AADSTS${code}: ${text}`);
  if (!username || ROPC_USERS[username] === undefined || ROPC_USERS[username] !== password) {
    throw entra(50126, 'Error validating credentials due to invalid username or password.');
  }
  if (username.startsWith('ropc-mfa')) {
    throw entra(50076, 'Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access this resource.');
  }
  const grant = new provider.Grant({ accountId: username, clientId: ctx.oidc.client.clientId });
  grant.addOIDCScope('openid');
  const grantId = await grant.save();
  const token = new provider.AccessToken({ accountId: username, client: ctx.oidc.client, grantId, scope: scope || undefined });
  ctx.oidc.entity('AccessToken', token);
  const value = await token.save();
  ctx.body = { access_token: value, expires_in: token.expiration, token_type: 'Bearer', scope: token.scope };
}, ['username', 'password', 'scope']);
// ---- rig extension: a provider strict about client_secret_post ----
// oidc-provider accepts a client secret by HTTP Basic or in the form whatever the client registered;
// some providers accept only the registered one. For client 'rig-post-only' the rig answers a
// Basic-authenticated token request as such a provider does.
provider.use(async (ctx, next) => {
  const auth = ctx.get('authorization');
  if (ctx.method === 'POST' && ctx.path === '/token' && /^basic /i.test(auth)) {
    const user = decodeURIComponent(Buffer.from(auth.slice(6).trim(), 'base64').toString('utf8').split(':')[0]);
    if (user === 'rig-post-only') {
      ctx.status = 401;
      ctx.body = { error: 'invalid_client', error_description: 'this client must authenticate with client_secret_post' };
      return;
    }
  }
  await next();
});
// one line per issued token set: tests count token requests server-side from this log (per
// account: the last field, so that tests sharing a client can count their own)
provider.on('grant.success', (ctx) => {
  const e = ctx.oidc.entities ?? {};
  const account = e.Account?.accountId ?? e.RefreshToken?.accountId ?? e.AuthorizationCode?.accountId ?? e.Grant?.accountId ?? '-';
  console.log('grant.success', ctx.oidc.params?.grant_type, ctx.oidc.client?.clientId, account);
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.on('grant.error', (ctx, err) => console.error('grant.error', err.message, err.error_description ?? ''));
provider.listen(port, '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
