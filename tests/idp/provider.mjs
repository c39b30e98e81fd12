// TEST-ONLY OpenID Provider for regate's integration tests. Never deploy it.
//
// A real OpenID Provider (panva's `oidc-provider` 8.x, OpenID Certified) on loopback, with
// accounts and clients from a JSON file, a minimal login page (username + password + submit),
// auto-consent or a consent page, and test-only admin endpoints under /__test/.
//
// Usage:
//   node provider.mjs --port 0 --config FILE.json [--host 127.0.0.1] [--exit-with-stdin]
//   (or env IDP_PORT, IDP_CONFIG, IDP_HOST; flags win)
//
//   --port 0          pick a free port
//   --exit-with-stdin exit when stdin reaches EOF, so a test harness that dies (and so closes
//                     the pipe it spawned us with) never leaves this process behind
//
// Once listening it prints exactly one line on stdout, and nothing else ever goes to stdout:
//   READY http://127.0.0.1:PORT
// Everything else (oidc-provider notices, errors) goes to stderr. SIGTERM/SIGINT exit 0.
//
// Config JSON (every key optional except what a test needs):
// {
//   "issuer": "http://127.0.0.1:PORT",  // default: the listening origin. Only the `iss` value
//                                       // and discovery document use it; the routes stay at /.
//   "accessTokenTTL": 60,               // seconds (default 60: short, so revalidation is testable)
//   "idTokenTTL": 3600, "refreshTokenTTL": 86400, "sessionTTL": 86400, "grantTTL": 86400,
//   "authorizationCodeTTL": 60,
//   "pkceRequired": false,              // PKCE (S256 only) is always supported; default optional,
//                                       // like Google. true makes it mandatory for every client.
//   "autoConsent": true,                // false: show a consent page with Allow / Deny buttons
//   "rotateRefreshToken": false,        // true: each refresh returns a new refresh token and
//                                       // the old one stops working (RFC 6749 10.4, 'rotation')
//   "clients": [{
//     "client_id": "regate", "client_secret": "regate-secret",
//     "redirect_uris": ["https://127.0.0.1:5050/ui/oidc/callback"],
//     "post_logout_redirect_uris": [],                         // optional
//     "grant_types": ["authorization_code", "refresh_token"],  // default: both
//     "token_endpoint_auth_method": "client_secret_basic"      // or "client_secret_post";
//   }],                  // oidc-provider accepts either form of the secret for both, like Google
//   "accounts": [{
//     "id": "alice", "password": "alice-pw", "email": "alice@example.com",
//     "email_verified": true, "groups": ["admins", "devs"], "name": "Alice",
//     "hd": "example.com"                 // Google's hosted-domain claim (Google stand-in mode)
//   }]
// }
//
// Scopes and the claims they release (in the ID Token and at UserInfo, /me):
//   openid          sub, hd (when the account has one: Google always sends it with openid)
//   email           email, email_verified
//   profile         name, preferred_username (= id)
//   groups          groups (array of strings)
//   offline_access  nothing; refresh tokens are issued whenever the client has the
//                   refresh_token grant, with or without it (docker_auth asks `openid email`)
// `nonce` from the authorization request is put in the ID Token by oidc-provider.
//
// OIDC endpoints (also in /.well-known/openid-configuration): /auth, /token, /me, /jwks,
// /token/introspection, /token/revocation, /session/end. Login pages: /interaction/:uid.
//
// TEST-ONLY admin endpoints (outside the OIDC paths; no authentication: loopback tests only):
//   GET  /__test/health                  200 {"ok":true}
//   POST /__test/revoke?account=ID       revoke every grant, token (access, refresh, code)
//                                        and browser session of the account
//                                        -> {"account":ID,"grants":N,"tokens":N,"sessions":N}
//   GET  /__test/accounts                list the accounts (passwords included: test data)
//   POST /__test/accounts                JSON body, one of:
//        {"id":"alice","groups":["devs"]}  merge these fields into the account (create if new)
//        {"id":"alice","remove":true}      delete the account (tokens stay, but refresh and
//                                          UserInfo then fail: the account is not found)
//   GET  /__test/requests                the OIDC requests seen so far (method, path, time), to
//                                        count token/UserInfo calls; DELETE it to clear

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import process from 'node:process';

import Provider from 'oidc-provider';

// stdout carries the READY line only; oidc-provider prints its notices with console.info.
console.info = console.error;
console.log = console.error;

function parseArgs(argv) {
  const opts = {
    port: process.env.IDP_PORT ?? '0',
    config: process.env.IDP_CONFIG,
    host: process.env.IDP_HOST ?? '127.0.0.1',
    exitWithStdin: false,
  };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === '--port') opts.port = argv[(i += 1)];
    else if (arg === '--config') opts.config = argv[(i += 1)];
    else if (arg === '--host') opts.host = argv[(i += 1)];
    else if (arg === '--exit-with-stdin') opts.exitWithStdin = true;
    else throw new Error(`unknown argument ${arg}`);
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const cfg = opts.config ? JSON.parse(readFileSync(opts.config, 'utf8')) : {};

// Accounts live in a Map so the admin endpoint can change them while tokens are out.
const accounts = new Map((cfg.accounts ?? []).map((a) => [String(a.id), { ...a, id: String(a.id) }]));

// ---------------------------------------------------------------------------------------
// Storage: an in-memory adapter (the oidc-provider Adapter interface) whose entries can be
// enumerated, so /__test/revoke can find every grant and token of one account. The bundled
// MemoryAdapter is an LRU that cannot be listed.
const store = new Map(); // `${model}:${id}` -> { model, id, payload, expiresAt }

function nowSeconds() {
  return Math.floor(Date.now() / 1000);
}

function live(entry) {
  if (entry && entry.expiresAt !== null && entry.expiresAt <= Date.now()) {
    store.delete(`${entry.model}:${entry.id}`);
    return undefined;
  }
  return entry;
}

class TestAdapter {
  constructor(model) {
    this.model = model;
  }

  async upsert(id, payload, expiresIn) {
    store.set(`${this.model}:${id}`, {
      model: this.model,
      id,
      payload: structuredClone(payload),
      expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : null,
    });
  }

  async find(id) {
    const entry = live(store.get(`${this.model}:${id}`));
    return entry ? structuredClone(entry.payload) : undefined;
  }

  async findBy(field, value) {
    for (const entry of store.values()) {
      if (entry.model === this.model && entry.payload[field] === value && live(entry)) {
        return structuredClone(entry.payload);
      }
    }
    return undefined;
  }

  async findByUid(uid) {
    return this.findBy('uid', uid);
  }

  async findByUserCode(userCode) {
    return this.findBy('userCode', userCode);
  }

  async consume(id) {
    const entry = store.get(`${this.model}:${id}`);
    if (entry) entry.payload.consumed = nowSeconds();
  }

  async destroy(id) {
    store.delete(`${this.model}:${id}`);
  }

  async revokeByGrantId(grantId) {
    for (const [key, entry] of store) {
      if (entry.model === this.model && entry.payload.grantId === grantId) store.delete(key);
    }
  }
}

function revokeAccount(accountId) {
  const grantIds = new Set();
  for (const entry of store.values()) {
    if (entry.payload.accountId !== accountId) continue;
    if (entry.model === 'Grant') grantIds.add(entry.id);
    if (entry.payload.grantId) grantIds.add(entry.payload.grantId);
  }
  const counts = { account: accountId, grants: 0, tokens: 0, sessions: 0 };
  for (const [key, entry] of store) {
    if (entry.model === 'Grant' && grantIds.has(entry.id)) {
      counts.grants += 1;
    } else if (entry.model === 'Session' && entry.payload.accountId === accountId) {
      counts.sessions += 1;
    } else if (entry.payload.grantId && grantIds.has(entry.payload.grantId)) {
      counts.tokens += 1;
    } else {
      continue;
    }
    store.delete(key);
  }
  return counts;
}

// ---------------------------------------------------------------------------------------
// Provider configuration.

function signingKeys() {
  // Fresh keys per run: RS256 is what Google and most IdPs sign ID Tokens with; ES256 is
  // offered too so a client that asks for it (id_token_signed_response_alg) gets it.
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  return {
    keys: [
      { ...rsa, kid: `rs-${randomBytes(4).toString('hex')}`, alg: 'RS256', use: 'sig' },
      { ...ec, kid: `ec-${randomBytes(4).toString('hex')}`, alg: 'ES256', use: 'sig' },
    ],
  };
}

function clientMetadata(c) {
  return {
    client_id: c.client_id,
    client_secret: c.client_secret,
    redirect_uris: c.redirect_uris ?? [],
    post_logout_redirect_uris: c.post_logout_redirect_uris ?? [],
    grant_types: c.grant_types ?? ['authorization_code', 'refresh_token'],
    response_types: c.response_types ?? ['code'],
    token_endpoint_auth_method: c.token_endpoint_auth_method ?? 'client_secret_basic',
    ...(c.id_token_signed_response_alg ? { id_token_signed_response_alg: c.id_token_signed_response_alg } : {}),
  };
}

function configuration() {
  const ttl = (key, fallback) => Number(cfg[key] ?? fallback);
  return {
    adapter: TestAdapter,
    clients: (cfg.clients ?? []).map(clientMetadata),
    jwks: signingKeys(),
    cookies: { keys: [randomBytes(32).toString('hex')] },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    claims: {
      openid: ['sub', 'hd'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    // OIDC Core 5.4 returns scope claims at UserInfo only when an access token is issued;
    // regate (like docker_auth) reads them from the ID Token, as Google also sends them there.
    conformIdTokenClaims: false,
    features: {
      devInteractions: { enabled: false },
      introspection: { enabled: true },
      revocation: { enabled: true },
      rpInitiatedLogout: { enabled: true },
    },
    pkce: { methods: ['S256'], required: () => cfg.pkceRequired === true },
    // Refresh tokens whenever the client may use them, not only with offline_access: the
    // clients under test ask `openid email` and still expect one (as Google with
    // access_type=offline, GitLab, Keycloak do).
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: () => cfg.rotateRefreshToken === true,
    ttl: {
      AccessToken: ttl('accessTokenTTL', 60),
      AuthorizationCode: ttl('authorizationCodeTTL', 60),
      IdToken: ttl('idTokenTTL', 3600),
      RefreshToken: ttl('refreshTokenTTL', 86400),
      Session: ttl('sessionTTL', 86400),
      Grant: ttl('grantTTL', 86400),
      Interaction: 3600,
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    async findAccount(ctx, sub) {
      const account = accounts.get(sub);
      if (!account) return undefined;
      return {
        accountId: sub,
        async claims() {
          const current = accounts.get(sub) ?? account;
          const claims = {
            sub,
            email: current.email,
            email_verified: current.email_verified ?? true,
            name: current.name ?? sub,
            preferred_username: sub,
            groups: current.groups ?? [],
          };
          if (current.hd) claims.hd = current.hd;
          return claims;
        },
      };
    },
  };
}

// ---------------------------------------------------------------------------------------
// Login and consent pages (replace oidc-provider's devInteractions, which accept any
// username without a password).

function escapeHtml(s) {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>
  body { font-family: system-ui, sans-serif; background: #f3f4f6; margin: 0; color: #111827; }
  main { max-width: 22rem; margin: 4rem auto; background: #fff; padding: 2rem;
         border-radius: 8px; box-shadow: 0 1px 4px rgba(0,0,0,.15); }
  h1 { font-size: 1.4rem; margin-top: 0; }
  label { display: block; margin-top: 1rem; font-weight: 600; }
  input { width: 100%; box-sizing: border-box; padding: .5rem; margin-top: .25rem;
          border: 1px solid #6b7280; border-radius: 4px; font-size: 1rem; }
  button { margin-top: 1.5rem; padding: .6rem 1.2rem; font-size: 1rem; border: 0;
           border-radius: 4px; background: #1d4ed8; color: #fff; cursor: pointer; }
  button.secondary { background: #4b5563; margin-left: .5rem; }
  .error { color: #b91c1c; margin-top: 1rem; }
  .note { color: #4b5563; font-size: .85rem; margin-top: 1.5rem; }
</style>
</head>
<body>
<main>
${body}
</main>
</body>
</html>`;
}

function loginPage(uid, clientId, error, login) {
  return page('Sign in - Test OpenID Provider', `
<h1>Sign in</h1>
<p>to continue to <strong>${escapeHtml(clientId)}</strong></p>
<form method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
  <label for="username">Username</label>
  <input id="username" name="username" type="text" autocomplete="username" required autofocus value="${escapeHtml(login)}">
  <label for="password">Password</label>
  <input id="password" name="password" type="password" autocomplete="current-password" required>
  ${error ? `<p class="error" role="alert" id="error">${escapeHtml(error)}</p>` : ''}
  <button type="submit" id="submit">Sign in</button>
</form>
<p class="note">Test OpenID Provider (oidc-provider) for regate's tests.</p>`);
}

function consentPage(uid, clientId, scopes) {
  const items = scopes.map((s) => `<li>${escapeHtml(s)}</li>`).join('');
  return page('Authorize - Test OpenID Provider', `
<h1>Authorize access</h1>
<p><strong>${escapeHtml(clientId)}</strong> asks for:</p>
<ul id="scopes">${items}</ul>
<form method="post" action="/interaction/${escapeHtml(uid)}/confirm">
  <button type="submit" id="allow" name="decision" value="allow">Allow</button>
  <button type="submit" id="deny" class="secondary" name="decision" value="deny">Deny</button>
</form>`);
}

function send(res, status, type, body, headers = {}) {
  res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store', ...headers });
  res.end(body);
}

function sendJson(res, status, value) {
  send(res, status, 'application/json', `${JSON.stringify(value)}\n`);
}

async function readBody(req, limit = 64 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function grantConsent(provider, details) {
  const { prompt, params, session, grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details ?? {};
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  return { consent: { grantId: await grant.save() } };
}

async function handleInteraction(provider, req, res, url) {
  const [, , uid, action] = url.pathname.split('/');
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction uid does not match its cookie');
  const clientId = details.params.client_id;

  if (req.method === 'GET' && !action) {
    if (details.prompt.name === 'login') {
      return send(res, 200, 'text/html; charset=utf-8', loginPage(uid, clientId));
    }
    if (details.prompt.name === 'consent') {
      if (cfg.autoConsent !== false) {
        return provider.interactionFinished(req, res, await grantConsent(provider, details), {
          mergeWithLastSubmission: true,
        });
      }
      const scopes = String(details.params.scope ?? '').split(' ').filter(Boolean);
      return send(res, 200, 'text/html; charset=utf-8', consentPage(uid, clientId, scopes));
    }
    return send(res, 400, 'text/plain', `unsupported prompt ${details.prompt.name}\n`);
  }

  if (req.method === 'POST' && action === 'login') {
    const form = new URLSearchParams(await readBody(req));
    const username = form.get('username') ?? '';
    const account = accounts.get(username);
    if (!account || account.password !== form.get('password')) {
      return send(res, 200, 'text/html; charset=utf-8',
        loginPage(uid, clientId, 'Invalid username or password.', username));
    }
    return provider.interactionFinished(req, res, { login: { accountId: account.id } }, {
      mergeWithLastSubmission: false,
    });
  }

  if (req.method === 'POST' && action === 'confirm') {
    const form = new URLSearchParams(await readBody(req));
    if (form.get('decision') !== 'allow') {
      return provider.interactionFinished(req, res, {
        error: 'access_denied',
        error_description: 'End-User denied the authorization request',
      }, { mergeWithLastSubmission: false });
    }
    return provider.interactionFinished(req, res, await grantConsent(provider, details), {
      mergeWithLastSubmission: true,
    });
  }

  return send(res, 405, 'text/plain', 'method not allowed\n');
}

// ---------------------------------------------------------------------------------------
// TEST-ONLY admin endpoints.

const requestLog = [];

async function handleTestAdmin(req, res, url) {
  const route = `${req.method} ${url.pathname}`;
  if (route === 'GET /__test/health') return sendJson(res, 200, { ok: true });
  if (route === 'POST /__test/revoke') {
    const account = url.searchParams.get('account');
    if (!account) return sendJson(res, 400, { error: 'account query parameter required' });
    return sendJson(res, 200, revokeAccount(account));
  }
  if (route === 'GET /__test/accounts') return sendJson(res, 200, [...accounts.values()]);
  if (route === 'POST /__test/accounts') {
    const body = JSON.parse(await readBody(req));
    if (!body.id) return sendJson(res, 400, { error: 'id required' });
    const id = String(body.id);
    if (body.remove) {
      const removed = accounts.delete(id);
      return sendJson(res, removed ? 200 : 404, { id, removed });
    }
    const { remove, ...fields } = body;
    const merged = { ...(accounts.get(id) ?? {}), ...fields, id };
    accounts.set(id, merged);
    return sendJson(res, 200, merged);
  }
  if (route === 'GET /__test/requests') return sendJson(res, 200, requestLog);
  if (route === 'DELETE /__test/requests') {
    requestLog.length = 0;
    return sendJson(res, 200, { cleared: true });
  }
  return sendJson(res, 404, { error: `no test endpoint ${route}` });
}

// ---------------------------------------------------------------------------------------

const server = http.createServer();
server.listen(Number(opts.port), opts.host, () => {
  const { port } = server.address();
  const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  const origin = `http://${host}:${port}`;
  const provider = new Provider(cfg.issuer ?? origin, configuration());
  provider.on('server_error', (ctx, err) => console.error('oidc-provider server_error', err));
  const oidc = provider.callback();

  server.on('request', async (req, res) => {
    const url = new URL(req.url, origin);
    try {
      if (url.pathname.startsWith('/__test/')) return await handleTestAdmin(req, res, url);
      if (url.pathname === '/favicon.ico') return send(res, 204, 'image/x-icon', '');
      if (url.pathname.startsWith('/interaction/')) return await handleInteraction(provider, req, res, url);
      requestLog.push({ method: req.method, path: url.pathname, time: Date.now() });
      return oidc(req, res);
    } catch (err) {
      console.error(`${req.method} ${url.pathname}:`, err);
      // oidc-provider's errors carry their HTTP status (e.g. 400 for an expired interaction).
      if (!res.headersSent) return send(res, err.status ?? 500, 'text/plain', `${err.message}\n`);
      return res.end();
    }
  });

  process.stdout.write(`READY ${origin}\n`);
});

function stop() {
  server.close();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
if (opts.exitWithStdin) {
  process.stdin.on('end', stop);
  process.stdin.on('close', stop);
  process.stdin.resume();
}
