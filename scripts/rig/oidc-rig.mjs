// oidc-rig.mjs — configuration-only launcher for panva/oidc-provider (the AS itself is the npm package).
// env: OIDC_PORT (required), AT_TTL (s, default 3600), SHORT_TTL (s, access-token TTL of client
// 'rig-short', default 3), RT_TTL (s, default 86400), OIDC_ROTATE (1 = rotate refresh tokens on every
// use, the default; 0 = oidc-provider's own policy)
import Provider from 'oidc-provider';

const port = Number(process.env.OIDC_PORT);
const issuer = `http://127.0.0.1:${port}`;
const AT_TTL = Number(process.env.AT_TTL || 3600);
const SHORT_TTL = Number(process.env.SHORT_TTL || 3);
const RT_TTL = Number(process.env.RT_TTL || 86400);
const ROTATE = (process.env.OIDC_ROTATE ?? '1') === '1';
const GRANTS = ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'];
// application_type 'native' => RFC 8252 loopback redirect: any port on http://127.0.0.1/callback matches
const appClient = (id, extra) => ({
  client_id: id, redirect_uris: ['http://127.0.0.1/callback', 'http://127.0.0.1/oauth2/callback'], response_types: ['code'],
  grant_types: GRANTS, application_type: 'native', ...extra,
});

const provider = new Provider(issuer, {
  clients: [
    appClient('rig-client', { client_secret: 'rig-secret', token_endpoint_auth_method: 'client_secret_basic' }),
    appClient('rig-post', { client_secret: 'rig-secret', token_endpoint_auth_method: 'client_secret_post' }),
    appClient('rig-public', { token_endpoint_auth_method: 'none' }),            // PKCE mandatory
    appClient('rig-short', { client_secret: 'rig-secret', token_endpoint_auth_method: 'client_secret_basic' }),
    // Google-style: refresh tokens are NOT rotated for this client (refreshed in place)
    appClient('rig-inplace', { client_secret: 'rig-secret', token_endpoint_auth_method: 'client_secret_post' }),
    { // the resource server (Dovecot) calling the introspection endpoint
      client_id: 'dovecot', client_secret: 'dovecot-secret', redirect_uris: [], response_types: [],
      grant_types: [], token_endpoint_auth_method: 'client_secret_post',
    },
  ],
  // the dev login form accepts any login name; it becomes sub and email
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id, email: id, email_verified: true }; } };
  },
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  // the provider scopes oxnotify requests for Google / Microsoft are accepted as plain OAuth2 scopes
  scopes: ['openid', 'offline_access', 'email', 'https://mail.google.com/', 'https://outlook.office.com/SMTP.Send'],
  features: {
    devInteractions: { enabled: true }, // stock login + consent HTML forms
    introspection: {
      enabled: true,
      // a refresh token must never pass as a bearer token at the resource server
      allowedPolicy: async (ctx, client, token) => token.kind !== 'RefreshToken' || client.clientId === token.clientId,
    },
    revocation: { enabled: true },
    deviceFlow: { enabled: true },
  },
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  ...(ROTATE ? { rotateRefreshToken: (ctx) => ctx.oidc.client.clientId !== 'rig-inplace' } : {}),
  expiresWithSession: async () => false,
  ttl: {
    AccessToken: (ctx, token, client) => (client?.clientId === 'rig-short' ? SHORT_TTL : AT_TTL),
    RefreshToken: RT_TTL, Grant: RT_TTL, Session: RT_TTL,
    AuthorizationCode: 60, DeviceCode: 600, Interaction: 600, IdToken: 3600,
  },
  cookies: { keys: ['peer-rig-cookie-key'] },
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
// one line per issued token set: tests count token requests server-side from this log
provider.on('grant.success', (ctx) => console.log('grant.success', ctx.oidc.params?.grant_type, ctx.oidc.client?.clientId));
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.on('grant.error', (ctx, err) => console.error('grant.error', err.message, err.error_description ?? ''));
provider.listen(port, '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
