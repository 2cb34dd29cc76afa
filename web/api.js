// REST calls to the gateway. Every answer comes back as { status, body, ok }:
// callers decide what a 400, 404 or 412 means for them.

const TOKEN_KEY = 'users-demo-token';

/** The bearer token for this tab: taken once from ?token=, then kept in sessionStorage. */
export function bearerToken() {
  const url = new URL(location.href);
  const fromUrl = url.searchParams.get('token');
  if (fromUrl) {
    sessionStorage.setItem(TOKEN_KEY, fromUrl);
    url.searchParams.delete('token');
    history.replaceState(null, '', url);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function headers(extra = {}) {
  const result = { Accept: 'application/json', ...extra };
  const token = bearerToken();
  if (token) result.Authorization = `Bearer ${token}`;
  return result;
}

async function call(method, path, { body, ifMatch } = {}) {
  const extra = {};
  if (body !== undefined) extra['Content-Type'] = 'application/json';
  if (ifMatch !== undefined) extra['If-Match'] = `"${ifMatch}"`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: headers(extra),
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (error) {
    return { ok: false, status: 0, body: { detail: 'The server cannot be reached.' } };
  }
  let parsed = null;
  const text = await response.text();
  if (text) {
    try { parsed = JSON.parse(text); } catch { parsed = { detail: text }; }
  }
  return { ok: response.ok, status: response.status, body: parsed };
}

export function getUser(id) {
  return call('GET', `/api/users/${id}/`);
}

export function patchUser(id, fields, version) {
  return call('PATCH', `/api/users/${id}/`, { body: fields, ifMatch: version });
}

export function createUser(fields) {
  return call('POST', '/api/users/', { body: fields });
}
