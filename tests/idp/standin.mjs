// TEST-ONLY STAND-IN for GitHub's and GitLab's OAuth 2.0 web flow and REST APIs, for
// regate's integration tests. It is NOT GitHub or GitLab: it implements only the endpoints
// below, following the public documentation cited next to each, with users, organizations,
// teams and groups from a JSON file. Never deploy it.
//
// Usage:
//   node standin.mjs --port 0 --config FILE.json [--host 127.0.0.1] [--exit-with-stdin]
//   (or env STANDIN_PORT, STANDIN_CONFIG, STANDIN_HOST; flags win)
// Once listening it prints exactly one line on stdout:
//   READY http://127.0.0.1:PORT
// Both services share the port. Point a client's GitHub "web" base URL (github.com) AND its
// API base URL (api.github.com) at it: the API answers at / and at /api/v3/ (GitHub Enterprise
// Server style). GitLab's base URL is it too (/oauth/..., /api/v4/...).
//
// Config JSON:
// {
//   "gitlabAccessTokenTTL": 7200,     // GitLab `expires_in` seconds (GitLab's default is 7200)
//   "clients": [{ "client_id": "regate-gh", "client_secret": "s", "redirect_uris": ["http://..."] }],
//   "users": [{
//     "login": "alice", "password": "alice-pw", "email": "alice@example.com",
//     "name": "Alice", "id": 1001,                        // id optional (auto 1001, 1002, ...)
//     "github": { "orgs": [{
//         "login": "acme", "public": false,               // public: membership is publicized
//         "role": "member",                               // or "admin"
//         "teams": ["platform", {"slug": "infra", "name": "Infra", "parent": "platform"}]
//     }]},
//     "gitlab": { "groups": [
//         {"full_path": "acme", "access_level": 30},      // 10 guest .. 50 owner; default 30
//         "acme/platform"                                 // a string = access_level 30
//     ]}
//   }]
// }
// A team is identified by org + slug; the first definition seen names it and its parent.
// A parent that is only named gets a team of its own. Users list only their direct teams.
// Membership of a GitLab group also gives access to its configured subgroups (inherited).
//
// GitHub (https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps):
//   GET  /login/oauth/authorize        login form (username, password), then 302 to
//                                      redirect_uri?code=...&state=...
//   POST /login/oauth/access_token     form or JSON; JSON answer with Accept: application/json,
//                                      else form-encoded, as GitHub does
//   GET  /user  /user/emails  /user/orgs  /user/teams
//   GET  /orgs/ORG/members/USER  /orgs/ORG/public_members/USER  /user/memberships/orgs/ORG
// GitLab (https://docs.gitlab.com/api/oauth2/, https://docs.gitlab.com/api/rest/):
//   GET  /oauth/authorize              login form, then 302 to redirect_uri?code=...&state=...
//   POST /oauth/token                  authorization_code and refresh_token grants
//   POST /oauth/revoke                 GET /oauth/token/info   GET /oauth/userinfo
//   GET  /api/v4/user  /api/v4/groups
//
// TEST-ONLY admin endpoints (no authentication: loopback tests only):
//   GET    /__test/health                                 {"ok":true}
//   POST   /__test/github/remove?user=LOGIN&org=ORG       remove from the org and its teams
//   POST   /__test/github/remove?user=LOGIN&org=ORG&team=SLUG   remove from that team only
//   POST   /__test/gitlab/remove?user=LOGIN&group=FULL_PATH     remove from that group
//   POST   /__test/users   {"login":"alice", ...fields}   merge fields into the user (or create)
//                          {"login":"alice","remove":true}  delete: its tokens then get 401
//   GET    /__test/users                                  the users as they are now
//   POST   /__test/revoke?user=LOGIN                      revoke every token, code and login
//                                                        session of the user (both services)
//   POST   /__test/expire?user=LOGIN                      expire the user's GitLab access
//                                                        tokens now (refresh tokens stay)
//   GET    /__test/requests    the API and token requests seen (method, path, query, time);
//   DELETE /__test/requests    clears it

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import process from 'node:process';

function parseArgs(argv) {
  const opts = {
    port: process.env.STANDIN_PORT ?? '0',
    config: process.env.STANDIN_CONFIG,
    host: process.env.STANDIN_HOST ?? '127.0.0.1',
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
const GITLAB_TTL = Number(cfg.gitlabAccessTokenTTL ?? 7200);
const CODE_TTL_MS = 10 * 60 * 1000; // both services: codes expire after 10 minutes

// ---------------------------------------------------------------------------------------
// Data: users, and the orgs/teams/groups derived from them.

const clients = new Map((cfg.clients ?? []).map((c) => [c.client_id, c]));
const users = new Map();
let nextUserId = 1001;

function normalizeUser(u) {
  const id = u.id ?? nextUserId;
  nextUserId = Math.max(nextUserId, id + 1);
  return { ...u, id, github: { orgs: u.github?.orgs ?? [] }, gitlab: { groups: u.gitlab?.groups ?? [] } };
}
for (const u of cfg.users ?? []) users.set(u.login, normalizeUser(u));

// Stable ids: the same config always yields the same numbers.
function stableId(kind, key) {
  return 1 + (createHash('sha256').update(`${kind}:${key}`).digest().readUInt32BE(0) % 9000000);
}

function teamSpec(t) {
  return typeof t === 'string' ? { slug: t } : t;
}

// org login -> Map(slug -> {slug, name, parent})
function allTeams() {
  const orgs = new Map();
  for (const user of users.values()) {
    for (const org of user.github.orgs) {
      if (!orgs.has(org.login)) orgs.set(org.login, new Map());
      const teams = orgs.get(org.login);
      for (const t of (org.teams ?? []).map(teamSpec)) {
        if (!teams.has(t.slug)) teams.set(t.slug, { slug: t.slug, name: t.name ?? t.slug, parent: t.parent ?? null });
        if (t.parent && !teams.has(t.parent)) teams.set(t.parent, { slug: t.parent, name: t.parent, parent: null });
      }
    }
  }
  return orgs;
}

function groupSpec(g) {
  return typeof g === 'string' ? { full_path: g, access_level: 30 } : { access_level: 30, ...g };
}

function allGroupPaths() {
  const paths = new Set();
  for (const user of users.values()) {
    for (const g of user.gitlab.groups.map(groupSpec)) {
      const parts = g.full_path.split('/');
      for (let i = 1; i <= parts.length; i += 1) paths.add(parts.slice(0, i).join('/'));
    }
  }
  return paths;
}

// ---------------------------------------------------------------------------------------
// Tokens, codes and sessions.

const codes = new Map(); // code -> {service, clientId, login, redirectUri, scope, challenge, method, expires}
const tokens = new Map(); // access token -> {service, login, clientId, scope, expires|null, refresh?}
const refreshTokens = new Map(); // GitLab refresh token -> {login, clientId, scope, redirectUri}
const sessions = new Map(); // session cookie -> {service, login}
const requestLog = [];

function randomToken(bytes = 32) {
  return randomBytes(bytes).toString('hex');
}

function ghToken() {
  // GitHub OAuth app user tokens start with gho_ (https://github.blog/2021-04-05-behind-githubs-new-authentication-token-formats/)
  return `gho_${randomBytes(27).toString('base64url').replace(/[-_]/g, 'A').slice(0, 36)}`;
}

function safeEqual(a, b) {
  const x = Buffer.from(String(a ?? ''));
  const y = Buffer.from(String(b ?? ''));
  return x.length === y.length && timingSafeEqual(x, y);
}

function pkceOk(record, verifier) {
  if (!record.challenge) return true;
  if (!verifier) return false;
  if (record.method === 'plain') return safeEqual(verifier, record.challenge);
  return safeEqual(createHash('sha256').update(verifier).digest('base64url'), record.challenge);
}

function revokeUser(login) {
  const counts = { user: login, tokens: 0, refresh_tokens: 0, codes: 0, sessions: 0 };
  for (const [map, name] of [[tokens, 'tokens'], [refreshTokens, 'refresh_tokens'], [codes, 'codes'], [sessions, 'sessions']]) {
    for (const [k, v] of map) {
      if (v.login === login) {
        map.delete(k);
        counts[name] += 1;
      }
    }
  }
  return counts;
}

// ---------------------------------------------------------------------------------------
// HTTP helpers.

function send(res, status, type, body, headers = {}) {
  res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store', ...headers });
  res.end(body);
}

function sendJson(res, status, value, headers = {}) {
  send(res, status, 'application/json; charset=utf-8', `${JSON.stringify(value)}\n`, headers);
}

function redirect(res, location, headers = {}) {
  res.writeHead(302, { Location: location, 'Cache-Control': 'no-store', ...headers });
  res.end();
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

// Form or JSON body, merged over the query string (both services accept either).
async function readParams(req, url) {
  const params = Object.fromEntries(url.searchParams);
  const raw = await readBody(req);
  if (!raw) return params;
  const type = String(req.headers['content-type'] ?? '');
  if (type.includes('application/json')) return { ...params, ...JSON.parse(raw) };
  return { ...params, ...Object.fromEntries(new URLSearchParams(raw)) };
}

function basicAuth(req) {
  const h = String(req.headers.authorization ?? '');
  if (!h.toLowerCase().startsWith('basic ')) return {};
  const decoded = Buffer.from(h.slice(6), 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  return i < 0 ? {} : {
    client_id: decodeURIComponent(decoded.slice(0, i)),
    client_secret: decodeURIComponent(decoded.slice(i + 1)),
  };
}

function cookies(req) {
  const out = {};
  for (const part of String(req.headers.cookie ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}

function escapeHtml(s) {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

function loginPage({ service, action, params, error, login }) {
  const hidden = Object.entries(params)
    .filter(([k]) => k !== 'username' && k !== 'password')
    .map(([k, v]) => `<input type="hidden" name="${escapeHtml(k)}" value="${escapeHtml(v)}">`)
    .join('\n  ');
  const client = clients.get(params.client_id);
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in to ${escapeHtml(service)} (test stand-in)</title>
<style>
  body { font-family: system-ui, sans-serif; background: #f6f8fa; margin: 0; color: #1f2328; }
  main { max-width: 22rem; margin: 4rem auto; background: #fff; padding: 2rem;
         border: 1px solid #d0d7de; border-radius: 6px; }
  h1 { font-size: 1.4rem; margin-top: 0; }
  label { display: block; margin-top: 1rem; font-weight: 600; }
  input[type=text], input[type=password] { width: 100%; box-sizing: border-box; padding: .5rem;
         margin-top: .25rem; border: 1px solid #6e7781; border-radius: 6px; font-size: 1rem; }
  button { margin-top: 1.5rem; width: 100%; padding: .6rem; font-size: 1rem; border: 0;
           border-radius: 6px; background: #1f883d; color: #fff; cursor: pointer; }
  .error { color: #b3261e; margin-top: 1rem; }
  .note { color: #57606a; font-size: .85rem; margin-top: 1.5rem; }
</style>
</head>
<body>
<main>
<h1>Sign in to ${escapeHtml(service)}</h1>
<p>to authorize <strong>${escapeHtml(client?.name ?? params.client_id)}</strong></p>
<form method="post" action="${escapeHtml(action)}">
  ${hidden}
  <label for="username">Username</label>
  <input id="username" name="username" type="text" autocomplete="username" required autofocus value="${escapeHtml(login)}">
  <label for="password">Password</label>
  <input id="password" name="password" type="password" autocomplete="current-password" required>
  ${error ? `<p class="error" role="alert" id="error">${escapeHtml(error)}</p>` : ''}
  <button type="submit" id="submit">Sign in</button>
</form>
<p class="note">Test stand-in for ${escapeHtml(service)}, for regate's tests. Not ${escapeHtml(service)}.</p>
</main>
</body>
</html>`;
}

function errorPage(res, status, message) {
  send(res, status, 'text/html; charset=utf-8', `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Error</title></head>
<body><main><h1>Error</h1><p id="error">${escapeHtml(message)}</p></main></body></html>`);
}

function withQuery(base, params) {
  const u = new URL(base);
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) u.searchParams.set(k, v);
  return u.toString();
}

// The shared part of both authorize endpoints: sign the user in (form or session cookie),
// then issue a code and redirect. `checkRedirect` returns the redirect URI to use or null.
async function authorize(req, res, url, { service, action, cookieName, params, redirectUri }) {
  const sessionId = cookies(req)[cookieName];
  let login = sessionId && sessions.get(sessionId)?.login;
  if (login && !users.has(login)) login = undefined;
  const headers = {};

  if (req.method === 'POST') {
    const user = users.get(params.username ?? '');
    if (!user || !safeEqual(user.password, params.password)) {
      return send(res, 200, 'text/html; charset=utf-8', loginPage({
        service, action, params, error: 'Incorrect username or password.', login: params.username,
      }));
    }
    login = user.login;
    const sid = randomToken(16);
    sessions.set(sid, { service, login });
    headers['Set-Cookie'] = `${cookieName}=${sid}; Path=/; HttpOnly; SameSite=Lax`;
  } else if (!login) {
    // GitHub's `login` parameter suggests an account to sign in with.
    return send(res, 200, 'text/html; charset=utf-8', loginPage({
      service, action, params, login: params.login,
    }));
  }

  const code = randomToken(10);
  codes.set(code, {
    service,
    clientId: params.client_id,
    login,
    redirectUri,
    scope: params.scope ?? '',
    challenge: params.code_challenge,
    method: params.code_challenge_method ?? 'plain',
    expires: Date.now() + CODE_TTL_MS,
  });
  return redirect(res, withQuery(redirectUri, { code, state: params.state }), headers);
}

function takeCode(code, service, clientId) {
  const record = codes.get(code);
  codes.delete(code); // single use, success or not
  if (!record || record.service !== service || record.clientId !== clientId || record.expires < Date.now()) return null;
  return record;
}

// ---------------------------------------------------------------------------------------
// GitHub.

// Callback URL rule, https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps#redirect-urls :
// same scheme, host and port as a registered callback URL, and a path at or below its path.
function githubRedirectAllowed(client, uri) {
  let candidate;
  try {
    candidate = new URL(uri);
  } catch {
    return false;
  }
  return (client.redirect_uris ?? []).some((registered) => {
    const r = new URL(registered);
    if (r.protocol !== candidate.protocol || r.host !== candidate.host) return false;
    const base = r.pathname.endsWith('/') ? r.pathname : `${r.pathname}/`;
    return candidate.pathname === r.pathname || candidate.pathname.startsWith(base);
  });
}

// Scopes: space- or comma-separated in the request; GitHub reports them comma-separated.
function githubScopes(scope) {
  return [...new Set(String(scope ?? '').split(/[\s,]+/).filter(Boolean))];
}

async function githubAuthorize(req, res, url) {
  const params = req.method === 'POST' ? await readParams(req, url) : Object.fromEntries(url.searchParams);
  const client = clients.get(params.client_id);
  if (!client) return errorPage(res, 404, 'Not Found: unknown client_id');
  const registered = client.redirect_uris?.[0];
  if (params.redirect_uri && !githubRedirectAllowed(client, params.redirect_uri)) {
    // "GitHub redirects to the registered callback URL with ... error=redirect_uri_mismatch"
    return redirect(res, withQuery(registered, {
      error: 'redirect_uri_mismatch',
      error_description: 'The redirect_uri MUST match the registered callback URL for this application.',
      error_uri: 'https://docs.github.com/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#redirect-uri-mismatch',
      state: params.state,
    }));
  }
  if (params.code_challenge && (params.code_challenge_method ?? 'S256') !== 'S256') {
    return errorPage(res, 400, 'code_challenge_method must be S256');
  }
  if (params.code_challenge) params.code_challenge_method = 'S256';
  return authorize(req, res, url, {
    service: 'GitHub', action: '/login/oauth/authorize', cookieName: 'standin_github_session',
    params, redirectUri: params.redirect_uri ?? registered,
  });
}

// https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps#2-users-are-redirected-back-to-your-site-by-github
// Errors are answered 200 with an `error` field, as GitHub does
// (https://docs.github.com/en/apps/oauth-apps/maintaining-oauth-apps/troubleshooting-oauth-app-access-token-request-errors).
async function githubAccessToken(req, res, url) {
  const params = { ...basicAuth(req), ...(await readParams(req, url)) };
  const wantsJson = String(req.headers.accept ?? '').includes('json');
  const reply = (value) => (wantsJson
    ? sendJson(res, 200, value)
    : send(res, 200, 'application/x-www-form-urlencoded; charset=utf-8', new URLSearchParams(value).toString()));
  const fail = (error, description) => reply({
    error, error_description: description,
    error_uri: `https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#${error.replace(/_/g, '-')}`,
  });

  const client = clients.get(params.client_id);
  if (!client || !safeEqual(client.client_secret, params.client_secret)) {
    return fail('incorrect_client_credentials', 'The client_id and/or client_secret passed are incorrect.');
  }
  if (params.grant_type && params.grant_type !== 'authorization_code') {
    return fail('unsupported_grant_type', 'OAuth app tokens do not expire and have no refresh token.');
  }
  const record = takeCode(params.code, 'GitHub', client.client_id);
  if (!record) return fail('bad_verification_code', 'The code passed is incorrect or expired.');
  if (params.redirect_uri && params.redirect_uri !== record.redirectUri) {
    return fail('redirect_uri_mismatch', 'The redirect_uri MUST match the registered callback URL for this application.');
  }
  if (!pkceOk(record, params.code_verifier)) {
    return fail('bad_verification_code', 'The code_verifier does not match the code_challenge.');
  }
  const scope = githubScopes(record.scope).join(',');
  const token = ghToken();
  tokens.set(token, { service: 'GitHub', login: record.login, clientId: client.client_id, scope, expires: null });
  return reply({ access_token: token, token_type: 'bearer', scope });
}

function githubUserJson(user, base) {
  return {
    login: user.login,
    id: user.id,
    node_id: Buffer.from(`04:User${user.id}`).toString('base64'),
    avatar_url: `${base}/avatars/${user.login}`,
    url: `${base}/users/${user.login}`,
    html_url: `${base}/${user.login}`,
    type: 'User',
    site_admin: false,
    name: user.name ?? null,
    email: user.public_email === false ? null : (user.email ?? null),
  };
}

function githubOrgJson(login, base) {
  return { login, id: stableId('org', login), url: `${base}/orgs/${login}`, description: null };
}

function githubTeamJson(org, team, teams, base) {
  const summary = (t) => ({
    id: stableId('team', `${org}/${t.slug}`),
    node_id: Buffer.from(`04:Team${stableId('team', `${org}/${t.slug}`)}`).toString('base64'),
    url: `${base}/teams/${stableId('team', `${org}/${t.slug}`)}`,
    html_url: `${base}/orgs/${org}/teams/${t.slug}`,
    name: t.name,
    slug: t.slug,
    description: null,
    privacy: 'closed',
    permission: 'pull',
  });
  const parent = team.parent ? teams.get(team.parent) : null;
  return {
    ...summary(team),
    parent: parent ? summary(parent) : null,
    organization: githubOrgJson(org, base),
  };
}

// GitHub-style errors: https://docs.github.com/en/rest/using-the-rest-api/troubleshooting-the-rest-api
function githubError(res, status, message, doc = 'https://docs.github.com/rest', headers = {}) {
  sendJson(res, status, { message, documentation_url: doc, status: String(status) }, headers);
}

// Pagination: https://docs.github.com/en/rest/using-the-rest-api/using-pagination-in-the-rest-api
// per_page default 30, max 100; Link: <...>; rel="prev|next|first|last".
function githubPage(items, url, base) {
  const perPage = Math.min(Math.max(Number(url.searchParams.get('per_page') ?? 30) || 30, 1), 100);
  const page = Math.max(Number(url.searchParams.get('page') ?? 1) || 1, 1);
  const last = Math.max(Math.ceil(items.length / perPage), 1);
  const link = (p) => {
    const u = new URL(`${base}${url.pathname}${url.search}`);
    u.searchParams.set('per_page', String(perPage));
    u.searchParams.set('page', String(p));
    return `<${u}>`;
  };
  const rels = [];
  if (page > 1) rels.push(`${link(Math.min(page - 1, last))}; rel="prev"`);
  if (page < last) rels.push(`${link(page + 1)}; rel="next"`, `${link(last)}; rel="last"`);
  if (page > 1) rels.push(`${link(1)}; rel="first"`);
  return {
    slice: items.slice((page - 1) * perPage, page * perPage),
    headers: rels.length ? { Link: rels.join(', ') } : {},
  };
}

function githubAuth(req, res) {
  // "Authorization: Bearer TOKEN" or "Authorization: token TOKEN"
  // https://docs.github.com/en/rest/authentication/authenticating-to-the-rest-api
  const m = /^(?:bearer|token)\s+(\S+)$/i.exec(String(req.headers.authorization ?? ''));
  if (!m) {
    githubError(res, 401, 'Requires authentication');
    return null;
  }
  const record = tokens.get(m[1]);
  const user = record && record.service === 'GitHub' ? users.get(record.login) : undefined;
  if (!user) {
    githubError(res, 401, 'Bad credentials');
    return null;
  }
  return { user, scopes: githubScopes(record.scope), scopeHeader: { 'X-OAuth-Scopes': record.scope.split(',').filter(Boolean).join(', ') } };
}

function githubApi(req, res, url, base) {
  const path = url.pathname.replace(/^\/api\/v3(?=\/)/, '');
  if (req.method !== 'GET') return githubError(res, 404, 'Not Found');
  const auth = githubAuth(req, res);
  if (!auth) return undefined;
  const { user, scopes, scopeHeader } = auth;
  const has = (...wanted) => wanted.some((s) => scopes.includes(s));
  const teamsByOrg = allTeams();

  // https://docs.github.com/en/rest/users/users#get-the-authenticated-user
  if (path === '/user') return sendJson(res, 200, githubUserJson(user, base), scopeHeader);

  // https://docs.github.com/en/rest/users/emails#list-email-addresses-for-the-authenticated-user
  if (path === '/user/emails') {
    if (!has('user', 'user:email')) {
      return githubError(res, 404, 'Not Found', 'https://docs.github.com/rest/users/emails#list-email-addresses-for-the-authenticated-user', scopeHeader);
    }
    const emails = user.email ? [{ email: user.email, primary: true, verified: user.email_verified ?? true, visibility: 'private' }] : [];
    const { slice, headers } = githubPage(emails, url, base);
    return sendJson(res, 200, slice, { ...scopeHeader, ...headers });
  }

  // https://docs.github.com/en/rest/orgs/orgs#list-organizations-for-the-authenticated-user
  // "this endpoint only lists organizations that your authorization allows you to operate on"
  if (path === '/user/orgs') {
    const orgs = has('read:org', 'user', 'admin:org', 'write:org')
      ? user.github.orgs.map((o) => githubOrgJson(o.login, base))
      : [];
    const { slice, headers } = githubPage(orgs, url, base);
    return sendJson(res, 200, slice, { ...scopeHeader, ...headers });
  }

  // https://docs.github.com/en/rest/teams/teams#list-teams-for-the-authenticated-user
  // "OAuth app tokens ... need the user, repo, or read:org scope"
  if (path === '/user/teams') {
    if (!has('read:org', 'user', 'repo', 'admin:org', 'write:org')) {
      return githubError(res, 403, 'You need at least read:org scope or user scope to list your teams.',
        'https://docs.github.com/rest/teams/teams#list-teams-for-the-authenticated-user',
        { ...scopeHeader, 'X-Accepted-OAuth-Scopes': 'read:org, repo, user' });
    }
    const list = [];
    for (const org of user.github.orgs) {
      const teams = teamsByOrg.get(org.login) ?? new Map();
      for (const t of (org.teams ?? []).map(teamSpec)) list.push(githubTeamJson(org.login, teams.get(t.slug), teams, base));
    }
    const { slice, headers } = githubPage(list, url, base);
    return sendJson(res, 200, slice, { ...scopeHeader, ...headers });
  }

  // https://docs.github.com/en/rest/orgs/members#get-an-organization-membership-for-the-authenticated-user
  let m = /^\/user\/memberships\/orgs\/([^/]+)$/.exec(path);
  if (m) {
    const org = user.github.orgs.find((o) => o.login.toLowerCase() === m[1].toLowerCase());
    if (!org) return githubError(res, 404, 'Not Found', 'https://docs.github.com/rest/orgs/members#get-an-organization-membership-for-the-authenticated-user', scopeHeader);
    return sendJson(res, 200, {
      url: `${base}/orgs/${org.login}/memberships/${user.login}`,
      state: 'active',
      role: org.role ?? 'member',
      organization_url: `${base}/orgs/${org.login}`,
      organization: githubOrgJson(org.login, base),
      user: githubUserJson(user, base),
    }, scopeHeader);
  }

  // https://docs.github.com/en/rest/orgs/members#check-organization-membership-for-a-user
  //   204 requester is an org member and user is a member; 404 requester is an org member and
  //   user is not; 302 requester is not an org member (to the public membership check)
  m = /^\/orgs\/([^/]+)\/members\/([^/]+)$/.exec(path);
  if (m) {
    const [, orgLogin, target] = m;
    const inOrg = (u) => u?.github.orgs.some((o) => o.login.toLowerCase() === orgLogin.toLowerCase());
    if (!teamsByOrg.has(orgLogin) && ![...users.values()].some(inOrg)) return githubError(res, 404, 'Not Found', undefined, scopeHeader);
    if (!inOrg(user)) {
      res.writeHead(302, { Location: `${base}/orgs/${orgLogin}/public_members/${target}`, ...scopeHeader });
      return res.end();
    }
    if (inOrg(users.get(target))) {
      res.writeHead(204, scopeHeader);
      return res.end();
    }
    return githubError(res, 404, 'User does not exist or is not a member of the organization', 'https://docs.github.com/rest/orgs/members#check-organization-membership-for-a-user', scopeHeader);
  }

  // https://docs.github.com/en/rest/orgs/members#check-public-organization-membership-for-a-user
  m = /^\/orgs\/([^/]+)\/public_members\/([^/]+)$/.exec(path);
  if (m) {
    const member = users.get(m[2])?.github.orgs.find((o) => o.login.toLowerCase() === m[1].toLowerCase());
    if (member?.public) {
      res.writeHead(204, scopeHeader);
      return res.end();
    }
    return githubError(res, 404, 'Not Found', 'https://docs.github.com/rest/orgs/members#check-public-organization-membership-for-a-user', scopeHeader);
  }

  return githubError(res, 404, 'Not Found', undefined, scopeHeader);
}

// ---------------------------------------------------------------------------------------
// GitLab (Doorkeeper-based OAuth 2.0 provider).

const GITLAB_INVALID_GRANT = 'The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.';
const GITLAB_INVALID_CLIENT = 'Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.';

function gitlabScopes(scope) {
  // Doorkeeper default scope in GitLab is `api` (https://docs.gitlab.com/integration/oauth_provider/)
  const list = String(scope ?? '').split(/\s+/).filter(Boolean);
  return list.length ? list : ['api'];
}

async function gitlabAuthorize(req, res, url) {
  const params = req.method === 'POST' ? await readParams(req, url) : Object.fromEntries(url.searchParams);
  const client = clients.get(params.client_id);
  // RFC 6749 4.1.2.1: an unknown client or a bad redirect_uri is shown, not redirected to.
  if (!client) return errorPage(res, 401, 'Client authentication failed due to unknown client.');
  if (!params.redirect_uri || !(client.redirect_uris ?? []).includes(params.redirect_uri)) {
    return errorPage(res, 400, 'The redirect URI included is not valid.');
  }
  if (params.response_type !== 'code') {
    return redirect(res, withQuery(params.redirect_uri, {
      error: 'unsupported_response_type',
      error_description: 'The authorization server does not support this response type.',
      state: params.state,
    }));
  }
  if (params.code_challenge && !['S256', 'plain', undefined].includes(params.code_challenge_method)) {
    return redirect(res, withQuery(params.redirect_uri, {
      error: 'invalid_request', error_description: 'Code challenge method is not supported.', state: params.state,
    }));
  }
  params.scope = gitlabScopes(params.scope).join(' ');
  return authorize(req, res, url, {
    service: 'GitLab', action: '/oauth/authorize', cookieName: 'standin_gitlab_session',
    params, redirectUri: params.redirect_uri,
  });
}

function issueGitlabTokens(login, clientId, scope, redirectUri) {
  const access = randomToken(32);
  const refresh = randomToken(32);
  const createdAt = Math.floor(Date.now() / 1000);
  tokens.set(access, { service: 'GitLab', login, clientId, scope, expires: Date.now() + GITLAB_TTL * 1000, refresh, createdAt });
  refreshTokens.set(refresh, { login, clientId, scope, redirectUri, access });
  return { access_token: access, token_type: 'Bearer', expires_in: GITLAB_TTL, refresh_token: refresh, scope, created_at: createdAt };
}

// https://docs.gitlab.com/api/oauth2/#authorization-code-with-proof-key-for-code-exchange-pkce
// https://docs.gitlab.com/api/oauth2/#authorization-code-flow (refresh: "grant_type=refresh_token")
async function gitlabToken(req, res, url) {
  const params = { ...basicAuth(req), ...(await readParams(req, url)) };
  const client = clients.get(params.client_id);
  if (!client || !safeEqual(client.client_secret, params.client_secret)) {
    return sendJson(res, 401, { error: 'invalid_client', error_description: GITLAB_INVALID_CLIENT });
  }
  const invalidGrant = () => sendJson(res, 400, { error: 'invalid_grant', error_description: GITLAB_INVALID_GRANT });

  if (params.grant_type === 'authorization_code') {
    const record = takeCode(params.code, 'GitLab', client.client_id);
    if (!record || params.redirect_uri !== record.redirectUri || !pkceOk(record, params.code_verifier)) return invalidGrant();
    return sendJson(res, 200, issueGitlabTokens(record.login, client.client_id, record.scope, record.redirectUri));
  }
  if (params.grant_type === 'refresh_token') {
    const record = refreshTokens.get(params.refresh_token);
    if (!record || record.clientId !== client.client_id || !users.has(record.login)) return invalidGrant();
    // GitLab rotates: the old refresh token and its access token are revoked.
    refreshTokens.delete(params.refresh_token);
    tokens.delete(record.access);
    return sendJson(res, 200, issueGitlabTokens(record.login, client.client_id, record.scope, record.redirectUri));
  }
  return sendJson(res, 400, {
    error: 'unsupported_grant_type',
    error_description: 'The authorization grant type is not supported by the authorization server.',
  });
}

// RFC 7009 as Doorkeeper implements it: 200 {} whatever the token.
async function gitlabRevoke(req, res, url) {
  const params = { ...basicAuth(req), ...(await readParams(req, url)) };
  const access = tokens.get(params.token);
  if (access?.service === 'GitLab') {
    tokens.delete(params.token);
    refreshTokens.delete(access.refresh);
  }
  const refresh = refreshTokens.get(params.token);
  if (refresh) {
    refreshTokens.delete(params.token);
    tokens.delete(refresh.access);
  }
  return sendJson(res, 200, {});
}

// Returns {user, record} or sends GitLab's 401 and returns null.
// Token: "Authorization: Bearer", "PRIVATE-TOKEN" header or access_token query parameter
// (https://docs.gitlab.com/api/rest/authentication/).
function gitlabAuth(req, res, url) {
  const m = /^bearer\s+(\S+)$/i.exec(String(req.headers.authorization ?? ''));
  const token = m?.[1] ?? req.headers['private-token'] ?? url.searchParams.get('access_token');
  const record = token ? tokens.get(token) : undefined;
  if (!record || record.service !== 'GitLab' || !users.has(record.login)) {
    sendJson(res, 401, { message: '401 Unauthorized' });
    return null;
  }
  if (record.expires <= Date.now()) {
    sendJson(res, 401, {
      error: 'invalid_token',
      error_description: 'Token is expired. You can either do re-authorization or token refresh.',
    }, { 'WWW-Authenticate': 'Bearer realm="Doorkeeper", error="invalid_token", error_description="Token is expired."' });
    return null;
  }
  return { user: users.get(record.login), record, scopes: record.scope.split(' ') };
}

function insufficientScope(res, needed) {
  return sendJson(res, 403, {
    error: 'insufficient_scope',
    error_description: 'The request requires higher privileges than provided by the access token.',
    scope: needed.join(' '),
  });
}

function gitlabUserJson(user, base) {
  return {
    id: user.id,
    username: user.login,
    name: user.name ?? user.login,
    state: 'active',
    avatar_url: `${base}/uploads/${user.login}.png`,
    web_url: `${base}/${user.login}`,
    email: user.email ?? null,
    public_email: user.public_email ?? null,
  };
}

// Groups visible to the user: direct memberships and, by inheritance, their subgroups.
function gitlabUserGroups(user, minAccess) {
  const direct = user.gitlab.groups.map(groupSpec).filter((g) => g.access_level >= minAccess);
  const paths = new Set();
  const known = allGroupPaths();
  for (const g of direct) {
    for (const p of known) if (p === g.full_path || p.startsWith(`${g.full_path}/`)) paths.add(p);
  }
  return [...paths];
}

function gitlabGroupJson(fullPath, base) {
  const parts = fullPath.split('/');
  const path = parts.at(-1);
  const parent = parts.slice(0, -1).join('/');
  return {
    id: stableId('group', fullPath),
    web_url: `${base}/groups/${fullPath}`,
    name: path,
    path,
    description: '',
    visibility: 'private',
    full_name: parts.join(' / '),
    full_path: fullPath,
    parent_id: parent ? stableId('group', parent) : null,
  };
}

// https://docs.gitlab.com/api/rest/#pagination : page (default 1), per_page (default 20,
// max 100); X-Page, X-Per-Page, X-Next-Page, X-Prev-Page, X-Total, X-Total-Pages, and Link.
function gitlabPage(items, url, base) {
  const perPage = Math.min(Math.max(Number(url.searchParams.get('per_page') ?? 20) || 20, 1), 100);
  const page = Math.max(Number(url.searchParams.get('page') ?? 1) || 1, 1);
  const totalPages = Math.max(Math.ceil(items.length / perPage), 1);
  const link = (p) => {
    const u = new URL(`${base}${url.pathname}${url.search}`);
    u.searchParams.set('page', String(p));
    u.searchParams.set('per_page', String(perPage));
    return `<${u}>`;
  };
  const rels = [];
  if (page > 1) rels.push(`${link(page - 1)}; rel="prev"`);
  if (page < totalPages) rels.push(`${link(page + 1)}; rel="next"`);
  rels.push(`${link(1)}; rel="first"`, `${link(totalPages)}; rel="last"`);
  return {
    slice: items.slice((page - 1) * perPage, page * perPage),
    headers: {
      'X-Page': String(page),
      'X-Per-Page': String(perPage),
      'X-Next-Page': page < totalPages ? String(page + 1) : '',
      'X-Prev-Page': page > 1 ? String(page - 1) : '',
      'X-Total': String(items.length),
      'X-Total-Pages': String(totalPages),
      Link: rels.join(', '),
    },
  };
}

function gitlabApi(req, res, url, base) {
  if (req.method !== 'GET') return sendJson(res, 404, { message: '404 Not Found' });
  const auth = gitlabAuth(req, res, url);
  if (!auth) return undefined;
  const { user, scopes } = auth;
  const has = (...wanted) => wanted.some((s) => scopes.includes(s));

  // https://docs.gitlab.com/api/users/#retrieve-the-current-user : read_user, read_api or api
  if (url.pathname === '/api/v4/user') {
    if (!has('read_user', 'read_api', 'api')) return insufficientScope(res, ['api', 'read_user', 'read_api']);
    return sendJson(res, 200, gitlabUserJson(user, base));
  }
  // https://docs.gitlab.com/api/groups/#list-groups : for a user, the groups they belong to
  // (all_available defaults to false for non-administrators); order_by name, sort asc.
  if (url.pathname === '/api/v4/groups') {
    if (!has('read_api', 'api')) return insufficientScope(res, ['api', 'read_api']);
    const minAccess = Number(url.searchParams.get('min_access_level') ?? 0);
    const groups = gitlabUserGroups(user, minAccess)
      .map((p) => gitlabGroupJson(p, base))
      .sort((a, b) => a.name.localeCompare(b.name) || a.full_path.localeCompare(b.full_path));
    const { slice, headers } = gitlabPage(groups, url, base);
    return sendJson(res, 200, slice, headers);
  }
  return sendJson(res, 404, { message: '404 Not Found' });
}

// https://docs.gitlab.com/integration/openid_connect_provider/ : userinfo with `openid` scope.
function gitlabUserinfo(req, res, url) {
  const auth = gitlabAuth(req, res, url);
  if (!auth) return undefined;
  const { user, scopes } = auth;
  if (!scopes.includes('openid')) return insufficientScope(res, ['openid']);
  return sendJson(res, 200, {
    sub: String(user.id),
    name: user.name ?? user.login,
    nickname: user.login,
    preferred_username: user.login,
    email: user.email,
    email_verified: user.email_verified ?? true,
    groups: gitlabUserGroups(user, 0),
    groups_direct: user.gitlab.groups.map((g) => groupSpec(g).full_path),
  });
}

// Doorkeeper token info: https://docs.gitlab.com/api/oauth2/#retrieve-the-token-information
function gitlabTokenInfo(req, res, url) {
  const auth = gitlabAuth(req, res, url);
  if (!auth) return undefined;
  const { record } = auth;
  return sendJson(res, 200, {
    resource_owner_id: auth.user.id,
    scope: record.scope.split(' '),
    expires_in: Math.max(0, Math.round((record.expires - Date.now()) / 1000)),
    application: { uid: record.clientId },
    created_at: record.createdAt,
  });
}

// ---------------------------------------------------------------------------------------
// TEST-ONLY admin endpoints.

async function handleTestAdmin(req, res, url) {
  const route = `${req.method} ${url.pathname}`;
  const q = (k) => url.searchParams.get(k);
  const userOr404 = () => {
    const user = users.get(q('user') ?? '');
    if (!user) sendJson(res, 404, { error: `no user ${q('user')}` });
    return user;
  };

  if (route === 'GET /__test/health') return sendJson(res, 200, { ok: true });
  if (route === 'GET /__test/users') return sendJson(res, 200, [...users.values()]);
  if (route === 'POST /__test/users') {
    const body = JSON.parse(await readBody(req));
    if (!body.login) return sendJson(res, 400, { error: 'login required' });
    if (body.remove) {
      const removed = users.delete(body.login);
      return sendJson(res, removed ? 200 : 404, { login: body.login, removed });
    }
    const { remove, ...fields } = body;
    const merged = normalizeUser({ ...(users.get(body.login) ?? {}), ...fields });
    users.set(body.login, merged);
    return sendJson(res, 200, merged);
  }
  if (route === 'POST /__test/github/remove') {
    const user = userOr404();
    if (!user) return undefined;
    const org = q('org');
    const team = q('team');
    if (team) {
      const o = user.github.orgs.find((x) => x.login === org);
      if (o) o.teams = (o.teams ?? []).filter((t) => teamSpec(t).slug !== team);
    } else {
      user.github.orgs = user.github.orgs.filter((x) => x.login !== org);
    }
    return sendJson(res, 200, user.github);
  }
  if (route === 'POST /__test/gitlab/remove') {
    const user = userOr404();
    if (!user) return undefined;
    user.gitlab.groups = user.gitlab.groups.filter((g) => groupSpec(g).full_path !== q('group'));
    return sendJson(res, 200, user.gitlab);
  }
  if (route === 'POST /__test/revoke') {
    if (!q('user')) return sendJson(res, 400, { error: 'user query parameter required' });
    return sendJson(res, 200, revokeUser(q('user')));
  }
  if (route === 'POST /__test/expire') {
    let expired = 0;
    for (const record of tokens.values()) {
      if (record.login === q('user') && record.service === 'GitLab') {
        record.expires = Date.now() - 1000;
        expired += 1;
      }
    }
    return sendJson(res, 200, { user: q('user'), expired });
  }
  if (route === 'GET /__test/requests') return sendJson(res, 200, requestLog);
  if (route === 'DELETE /__test/requests') {
    requestLog.length = 0;
    return sendJson(res, 200, { cleared: true });
  }
  return sendJson(res, 404, { error: `no test endpoint ${route}` });
}

// ---------------------------------------------------------------------------------------

async function route(req, res, url, base) {
  const p = url.pathname;
  if (p.startsWith('/__test/')) return handleTestAdmin(req, res, url);
  if (p === '/favicon.ico') {
    res.writeHead(204);
    return res.end();
  }
  const isLogin = p === '/login/oauth/authorize' || p === '/oauth/authorize';
  if (!isLogin) requestLog.push({ method: req.method, path: p, query: url.search, time: Date.now() });

  if (p === '/login/oauth/authorize' && (req.method === 'GET' || req.method === 'POST')) return githubAuthorize(req, res, url);
  if (p === '/login/oauth/access_token' && req.method === 'POST') return githubAccessToken(req, res, url);
  if (p === '/oauth/authorize' && (req.method === 'GET' || req.method === 'POST')) return gitlabAuthorize(req, res, url);
  if (p === '/oauth/token' && req.method === 'POST') return gitlabToken(req, res, url);
  if (p === '/oauth/revoke' && req.method === 'POST') return gitlabRevoke(req, res, url);
  if (p === '/oauth/token/info' && req.method === 'GET') return gitlabTokenInfo(req, res, url);
  if (p === '/oauth/userinfo' && (req.method === 'GET' || req.method === 'POST')) return gitlabUserinfo(req, res, url);
  if (p.startsWith('/api/v4/')) return gitlabApi(req, res, url, base);
  return githubApi(req, res, url, base);
}

const server = http.createServer();
server.on('request', async (req, res) => {
  const base = `http://${req.headers.host}`;
  const url = new URL(req.url, base);
  try {
    await route(req, res, url, base);
  } catch (err) {
    console.error(`${req.method} ${url.pathname}:`, err);
    if (!res.headersSent) send(res, 500, 'text/plain', `${err.message}\n`);
    else res.end();
  }
});
server.listen(Number(opts.port), opts.host, () => {
  const { port } = server.address();
  const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  process.stdout.write(`READY http://${host}:${port}\n`);
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
