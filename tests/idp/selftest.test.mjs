// Self-test of the test identity providers and the browser driver (node's test runner):
//   node --test selftest.test.mjs        (or: npm test)
// It starts provider.mjs and standin.mjs on free ports, a redirect catcher, drives each login
// page in Chromium through browser.mjs, and checks the token, API and admin endpoints the
// way regate's Rust tests will use them.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, createPublicKey, randomBytes, verify } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'idp-selftest-'));
const children = [];

// Starts `node FILE --port 0 --config CFG` and resolves with the URL of its READY line.
function startServer(file, config) {
  const cfgPath = join(work, `${file}.json`);
  writeFileSync(cfgPath, JSON.stringify(config));
  const child = spawn(process.execPath, [join(HERE, file), '--port', '0', '--config', cfgPath, '--exit-with-stdin'], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const m = /^READY (\S+)$/m.exec(out);
      if (m) resolve(m[1]);
    });
    child.on('exit', (code) => reject(new Error(`${file} exited with ${code} before READY`)));
  });
}

function runBrowser(script) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(HERE, 'browser.mjs'), '-'], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk) => { out += chunk; });
    child.on('error', reject);
    child.on('exit', (code) => {
      const result = JSON.parse(out);
      if (code !== 0) reject(new Error(`browser.mjs exited ${code}: ${JSON.stringify(result.error)}`));
      else resolve(result);
    });
    child.stdin.end(JSON.stringify(script));
  });
}

function pkce() {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

function form(params) {
  return { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(params) };
}

function basic(id, secret) {
  return `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`;
}

function decodeJwt(jwt) {
  const [h, p] = jwt.split('.');
  return { header: JSON.parse(Buffer.from(h, 'base64url')), claims: JSON.parse(Buffer.from(p, 'base64url')) };
}

let catcher;
let callback;

before(async () => {
  catcher = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html' });
    res.end('<!DOCTYPE html><html lang="en"><title>callback</title><h1 id="got">callback received</h1></html>');
  });
  await new Promise((r) => catcher.listen(0, '127.0.0.1', r));
  callback = `http://127.0.0.1:${catcher.address().port}/cb`;
});

after(() => {
  for (const child of children) child.kill('SIGTERM');
  catcher?.close();
  rmSync(work, { recursive: true, force: true });
});

describe('provider.mjs (OpenID Provider)', () => {
  let P;
  const client = 'regate';
  const secret = 'regate-secret';

  before(async () => {
    P = await startServer('provider.mjs', {
      accessTokenTTL: 30,
      clients: [{ client_id: client, client_secret: secret, redirect_uris: [callback] }],
      accounts: [
        { id: 'alice', password: 'alice-pw', email: 'alice@example.com', groups: ['admins', 'devs'], hd: 'example.com', name: 'Alice' },
        { id: 'bob', password: 'bob-pw', email: 'bob@example.com', groups: ['devs'] },
      ],
    });
  });

  async function signIn(user, password) {
    const { verifier, challenge } = pkce();
    const nonce = randomBytes(8).toString('hex');
    const state = randomBytes(8).toString('hex');
    const auth = new URL(`${P}/auth`);
    for (const [k, v] of Object.entries({
      response_type: 'code', client_id: client, redirect_uri: callback, scope: 'openid email profile groups',
      state, nonce, code_challenge: challenge, code_challenge_method: 'S256',
    })) auth.searchParams.set(k, v);
    const result = await runBrowser({
      steps: [
        { goto: auth.toString() },
        { axe: true, as: 'axe', failOn: ['serious', 'critical'] },
        { fill: '#username', value: user },
        { fill: '#password', value: 'wrong' },
        { click: '#submit' },
        { expect: '#error', contains: 'Invalid username or password' },
        { fill: '#password', value: password },
        { click: '#submit' },
        { waitForURL: { regex: `^${callback.replace(/[.]/g, '\\.')}\\?` }, as: 'callback' },
      ],
    });
    const params = new URL(result.results.callback).searchParams;
    assert.equal(params.get('state'), state);
    const tokenResponse = await fetch(`${P}/token`, {
      ...form({ grant_type: 'authorization_code', code: params.get('code'), redirect_uri: callback, code_verifier: verifier }),
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', Authorization: basic(client, secret) },
    });
    assert.equal(tokenResponse.status, 200);
    return { tokens: await tokenResponse.json(), nonce };
  }

  const refresh = (rt) => fetch(`${P}/token`, {
    ...form({ grant_type: 'refresh_token', refresh_token: rt, client_id: client, client_secret: secret }),
  });

  test('discovery lists the endpoints and the groups scope', async () => {
    const d = await (await fetch(`${P}/.well-known/openid-configuration`)).json();
    assert.equal(d.issuer, P);
    assert.ok(d.scopes_supported.includes('groups'));
    assert.deepEqual(d.code_challenge_methods_supported, ['S256']);
  });

  test('code + PKCE in the browser, ID Token claims, refresh, group change, revoke', async () => {
    const { tokens, nonce } = await signIn('alice', 'alice-pw');
    assert.equal(tokens.expires_in, 30);
    assert.ok(tokens.refresh_token, 'a refresh token without offline_access');
    const { header, claims } = decodeJwt(tokens.id_token);
    assert.equal(claims.nonce, nonce);
    assert.equal(claims.email, 'alice@example.com');
    assert.deepEqual(claims.groups, ['admins', 'devs']);
    assert.equal(claims.hd, 'example.com');
    assert.equal(claims.iss, P);
    assert.equal(claims.aud, client);

    const jwks = await (await fetch(`${P}/jwks`)).json();
    const jwk = jwks.keys.find((k) => k.kid === header.kid);
    const [h, p, s] = tokens.id_token.split('.');
    assert.ok(verify('sha256', Buffer.from(`${h}.${p}`), createPublicKey({ key: jwk, format: 'jwk' }), Buffer.from(s, 'base64url')));

    const me = await (await fetch(`${P}/me`, { headers: { Authorization: `Bearer ${tokens.access_token}` } })).json();
    assert.deepEqual(me.groups, ['admins', 'devs']);

    const refreshed = await refresh(tokens.refresh_token);
    assert.equal(refreshed.status, 200);

    await fetch(`${P}/__test/accounts`, { method: 'POST', body: JSON.stringify({ id: 'alice', groups: ['devs'] }) });
    const changed = await (await refresh(tokens.refresh_token)).json();
    assert.deepEqual(decodeJwt(changed.id_token).claims.groups, ['devs']);

    const revoked = await (await fetch(`${P}/__test/revoke?account=alice`, { method: 'POST' })).json();
    assert.ok(revoked.grants >= 1 && revoked.tokens >= 1);
    const denied = await refresh(tokens.refresh_token);
    assert.equal(denied.status, 400);
    assert.equal((await denied.json()).error, 'invalid_grant');
    assert.equal((await fetch(`${P}/me`, { headers: { Authorization: `Bearer ${changed.access_token}` } })).status, 401);
  });

  test('a removed account can no longer refresh', async () => {
    const { tokens } = await signIn('bob', 'bob-pw');
    await fetch(`${P}/__test/accounts`, { method: 'POST', body: JSON.stringify({ id: 'bob', remove: true }) });
    const denied = await refresh(tokens.refresh_token);
    assert.equal(denied.status, 400);
    assert.match((await denied.json()).error, /invalid_grant/);
  });
});

describe('standin.mjs (GitHub and GitLab stand-in)', () => {
  let S;

  before(async () => {
    S = await startServer('standin.mjs', {
      gitlabAccessTokenTTL: 60,
      clients: [{ client_id: 'app', client_secret: 'app-secret', redirect_uris: [callback] }],
      users: [
        {
          login: 'alice', password: 'alice-pw', email: 'alice@example.com',
          github: { orgs: [{ login: 'acme', teams: ['platform', { slug: 'infra', parent: 'platform' }, 'security'] }, { login: 'other', teams: ['docs', 'web'] }] },
          gitlab: { groups: ['acme', 'acme/platform/infra', 'other'] },
        },
        { login: 'bob', password: 'bob-pw', github: { orgs: [{ login: 'acme', teams: ['platform'] }] }, gitlab: { groups: ['acme/web'] } },
        { login: 'carol', password: 'carol-pw' },
      ],
    });
  });

  async function browserCode(authorizeUrl) {
    const result = await runBrowser({
      steps: [
        { goto: authorizeUrl },
        { axe: true, failOn: ['serious', 'critical'] },
        { fill: '#username', value: 'alice' },
        { fill: '#password', value: 'alice-pw' },
        { click: '#submit' },
        { waitForURL: { regex: '/cb\\?code=' }, as: 'callback' },
      ],
    });
    return new URL(result.results.callback).searchParams;
  }

  async function githubToken(login, password, scope) {
    const r = await fetch(`${S}/login/oauth/authorize`, { ...form({ client_id: 'app', scope, username: login, password }), redirect: 'manual' });
    const code = new URL(r.headers.get('location')).searchParams.get('code');
    const t = await fetch(`${S}/login/oauth/access_token`, {
      method: 'POST', headers: { Accept: 'application/json', 'Content-Type': 'application/json' },
      body: JSON.stringify({ client_id: 'app', client_secret: 'app-secret', code }),
    });
    return (await t.json()).access_token;
  }

  test('GitHub: browser login, token, /user, teams paging, org membership, removal, revoke', async () => {
    const params = await browserCode(`${S}/login/oauth/authorize?client_id=app&scope=read:org&state=st1&redirect_uri=${encodeURIComponent(callback)}`);
    assert.equal(params.get('state'), 'st1');
    const tok = await (await fetch(`${S}/login/oauth/access_token`, {
      ...form({ client_id: 'app', client_secret: 'app-secret', code: params.get('code'), redirect_uri: callback }),
      headers: { Accept: 'application/json', 'Content-Type': 'application/x-www-form-urlencoded' },
    })).json();
    assert.equal(tok.token_type, 'bearer');
    assert.equal(tok.scope, 'read:org');
    const auth = { headers: { Authorization: `token ${tok.access_token}` } };

    const user = await (await fetch(`${S}/user`, auth)).json();
    assert.equal(user.login, 'alice');
    assert.equal(user.email, 'alice@example.com');

    const teams = [];
    let next = `${S}/user/teams?per_page=2`;
    let pages = 0;
    while (next) {
      const r = await fetch(next, auth);
      teams.push(...await r.json());
      pages += 1;
      next = /<([^>]+)>; rel="next"/.exec(r.headers.get('link') ?? '')?.[1];
    }
    assert.equal(pages, 3);
    assert.deepEqual(teams.map((t) => `${t.organization.login}/${t.slug}:${t.parent?.slug ?? ''}`),
      ['acme/platform:', 'acme/infra:platform', 'acme/security:', 'other/docs:', 'other/web:']);

    assert.equal((await fetch(`${S}/orgs/acme/members/bob`, auth)).status, 204);
    assert.equal((await fetch(`${S}/orgs/acme/members/carol`, auth)).status, 404);
    const carol = await githubToken('carol', 'carol-pw', '');
    const outsider = await fetch(`${S}/orgs/acme/members/alice`, { headers: { Authorization: `Bearer ${carol}` }, redirect: 'manual' });
    assert.equal(outsider.status, 302);
    assert.equal((await fetch(`${S}/user/teams`, { headers: { Authorization: `Bearer ${carol}` } })).status, 403);

    await fetch(`${S}/__test/github/remove?user=alice&org=other`, { method: 'POST' });
    const after = await (await fetch(`${S}/user/teams`, auth)).json();
    assert.deepEqual(after.map((t) => t.organization.login), ['acme', 'acme', 'acme']);

    await fetch(`${S}/__test/revoke?user=alice`, { method: 'POST' });
    assert.equal((await fetch(`${S}/user`, auth)).status, 401);
  });

  test('GitLab: browser login with PKCE, token, user, groups paging, refresh, expire, revoke', async () => {
    const { verifier, challenge } = pkce();
    const params = await browserCode(`${S}/oauth/authorize?client_id=app&response_type=code&scope=read_user+read_api&state=st2&code_challenge=${challenge}&code_challenge_method=S256&redirect_uri=${encodeURIComponent(callback)}`);
    assert.equal(params.get('state'), 'st2');
    const tokenReq = (body) => fetch(`${S}/oauth/token`, {
      ...form(body), headers: { 'Content-Type': 'application/x-www-form-urlencoded', Authorization: basic('app', 'app-secret') },
    });
    const tok = await (await tokenReq({ grant_type: 'authorization_code', code: params.get('code'), redirect_uri: callback, code_verifier: verifier })).json();
    assert.equal(tok.expires_in, 60);
    assert.ok(tok.refresh_token && tok.created_at);
    const auth = { headers: { Authorization: `Bearer ${tok.access_token}` } };

    assert.equal((await (await fetch(`${S}/api/v4/user`, auth)).json()).username, 'alice');
    const groups = [];
    let page = '1';
    while (page) {
      const r = await fetch(`${S}/api/v4/groups?per_page=2&page=${page}`, auth);
      groups.push(...await r.json());
      page = r.headers.get('x-next-page');
    }
    assert.deepEqual(groups.map((g) => g.full_path).sort(), ['acme', 'acme/platform', 'acme/platform/infra', 'acme/web', 'other']);

    const refreshed = await (await tokenReq({ grant_type: 'refresh_token', refresh_token: tok.refresh_token })).json();
    assert.ok(refreshed.access_token);
    assert.equal((await fetch(`${S}/api/v4/user`, auth)).status, 401, 'rotation revokes the old access token');
    assert.equal((await tokenReq({ grant_type: 'refresh_token', refresh_token: tok.refresh_token })).status, 400);

    await fetch(`${S}/__test/gitlab/remove?user=alice&group=acme`, { method: 'POST' });
    const auth2 = { headers: { Authorization: `Bearer ${refreshed.access_token}` } };
    const left = await (await fetch(`${S}/api/v4/groups`, auth2)).json();
    assert.deepEqual(left.map((g) => g.full_path).sort(), ['acme/platform/infra', 'other']);

    await fetch(`${S}/__test/expire?user=alice`, { method: 'POST' });
    const expired = await fetch(`${S}/api/v4/user`, auth2);
    assert.equal(expired.status, 401);
    assert.equal((await expired.json()).error, 'invalid_token');

    await fetch(`${S}/__test/revoke?user=alice`, { method: 'POST' });
    assert.equal((await tokenReq({ grant_type: 'refresh_token', refresh_token: refreshed.refresh_token })).status, 400);
  });
});
