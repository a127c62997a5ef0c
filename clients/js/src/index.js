// DBX WebSocket client — an ES module with no dependencies.
// Runs unchanged in browsers and in Node >= 20 (global WebSocket, or the `ws` package where it is missing).
import { METHODS } from './methods.js';

export { METHODS };

const OPEN = 1;

/** Every failure the client reports is a DBXError with a `code`: the server's error codes
 * (`not_found`, `wrong_type`, `rate_limited`, ...) or the client's own (`timeout`,
 * `disconnected`, `not_connected`, `connect_failed`, `connect_timeout`, `no_websocket`). */
export class DBXError extends Error {
  constructor(code, message, extra = {}) {
    super(message);
    this.name = 'DBXError';
    this.code = code;
    for (const [k, v] of Object.entries(extra)) if (v !== undefined) this[k] = v;
  }
}

let wsImplPromise = null;
async function resolveWebSocket(explicit, needsWs = false) {
  if (explicit) return explicit;
  // Node's TLS and header options (ca, rejectUnauthorized, headers) exist only in the
  // `ws` package, not in the WHATWG WebSocket.
  if (!needsWs && typeof globalThis.WebSocket === 'function') return globalThis.WebSocket;
  if (!wsImplPromise) {
    const name = 'ws'; // a variable, so bundlers leave this import alone
    wsImplPromise = import(/* webpackIgnore: true */ /* @vite-ignore */ name)
      .then((m) => m.WebSocket || m.default)
      .catch(() => {
        wsImplPromise = null;
        throw new DBXError('no_websocket', needsWs
          ? 'The ca, rejectUnauthorized and headers options need the "ws" package (npm install ws) or options.WebSocket'
          : 'No global WebSocket in this runtime: on Node < 22 install the "ws" package (npm install ws) or pass options.WebSocket');
      });
  }
  return wsImplPromise;
}

/** Seconds-since-epoch `exp` claim of a JWT, or null. */
export function jwtExpiry(token) {
  try {
    const part = token.split('.')[1];
    if (!part) return null;
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((part.length + 3) % 4);
    const json = decodeURIComponent(Array.from(atob(b64), (c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0')).join(''));
    const exp = JSON.parse(json).exp;
    return typeof exp === 'number' ? exp : null;
  } catch {
    return null;
  }
}

const isPlainObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const OBJECT_TYPES = new Set(['map', 'fieldmap', 'any', 'obj']);

function buildParams(method, def, args) {
  const params = {};
  let i = 0;
  for (const a of def.args) {
    if (i >= args.length) break;
    const v = args[i];
    // a plain object where a non-object positional is expected, given last: it is the options object
    if (isPlainObject(v) && !OBJECT_TYPES.has(a.type) && i === args.length - 1) break;
    i++;
    if (v === undefined || v === null) continue;
    if (a.many) params[typeof v === 'string' || typeof v === 'number' ? a.one : a.many] = v;
    else params[a.one] = v;
  }
  if (i < args.length) {
    const opts = args[i++];
    if (opts !== undefined && opts !== null) {
      if (!isPlainObject(opts)) throw new TypeError(`${method}: expected an options object, got ${typeof opts}`);
      Object.assign(params, opts);
    }
  }
  if (i < args.length) throw new TypeError(`${method}: too many arguments`);
  for (const a of def.args) {
    if (!a.optional && !(a.one in params) && !(a.many && a.many in params)) {
      throw new TypeError(`${method}: missing argument '${a.one}'`);
    }
  }
  return params;
}

function redact(url) {
  try {
    const u = new URL(url);
    if (u.searchParams.has('api_key')) u.searchParams.set('api_key', '***');
    return u.toString();
  } catch {
    return String(url);
  }
}

/**
 * new DBXWebSocket(url, options)
 * options: apiKey, token (string or () => string|Promise<string>), clientId, version,
 *   requestTimeout (ms, 30000), connectTimeout (ms, 10000), reconnect (true),
 *   maxReconnectAttempts (Infinity), reconnectBaseDelay (ms, 250), reconnectMaxDelay (ms, 30000),
 *   heartbeat (true), livenessTimeout (ms, default 2 × heartbeat_interval + 2 s),
 *   refreshMargin (ms before `exp` to call auth.refresh, 30000), waitForReconnect (true),
 *   maxPendingPerConnection (100, for the pool), WebSocket (an implementation to use).
 *   Node only (with the `ws` package), for wss://: ca (PEM string/Buffer or an array of them:
 *   the CAs to trust, e.g. a private CA), rejectUnauthorized (default true: never turn it off
 *   in production), headers (extra handshake headers, e.g. { Authorization: 'Bearer …' }).
 *   Browsers use wss:// natively and check certificates themselves.
 */
export class DBXWebSocket {
  constructor(url, options = {}) {
    this.url = url;
    this.options = {
      requestTimeout: 30000, connectTimeout: 10000, reconnect: true, maxReconnectAttempts: Infinity,
      reconnectBaseDelay: 250, reconnectMaxDelay: 30000, heartbeat: true, refreshMargin: 30000,
      waitForReconnect: true, maxPendingPerConnection: 100, ...options,
    };
    this.ws = null;
    this.state = 'disconnected'; // disconnected, connecting, connected, reconnecting
    this.messageId = 0;
    this.pendingRequests = new Map();
    this.eventHandlers = new Map();
    this.hello = null;
    this.reconnectAttempts = 0;
    this._token = typeof options.token === 'string' ? options.token : null;
    this._closedByUser = false;
    this._connectPromise = null;
    this._waiters = new Set();
    this._timers = {};
    this._sleep = null;
    this._lastRx = 0;
    this._subs = { channels: new Set(), patterns: new Set() };
    this._watch = { keys: new Set(), patterns: new Set(), rev: null, epoch: null };
    for (const [method, def] of Object.entries(METHODS)) {
      const [ns, name] = method.split('.');
      if (!this[ns]) Object.defineProperty(this, ns, { value: {}, enumerable: false });
      this[ns][name] = (...args) => this.sendRequest(method, buildParams(method, def, args));
    }
  }

  // ---- state
  getState() { return this.state; }
  isConnected() { return this.state === 'connected' && !!this.ws && this.ws.readyState === OPEN; }
  isAvailable() { return this.isConnected() && this.pendingRequests.size < this.options.maxPendingPerConnection; }
  /** Highest revision seen for the live watches, and the epoch it belongs to. */
  getWatchPosition() { return { rev: this._watch.rev, epoch: this._watch.epoch }; }

  // ---- events
  on(event, handler) {
    if (!this.eventHandlers.has(event)) this.eventHandlers.set(event, []);
    this.eventHandlers.get(event).push(handler);
    return this;
  }
  off(event, handler) {
    const handlers = this.eventHandlers.get(event);
    if (handlers) {
      const index = handlers.indexOf(handler);
      if (index > -1) handlers.splice(index, 1);
    }
    return this;
  }
  once(event, handler) {
    const wrap = (d) => { this.off(event, wrap); handler(d); };
    return this.on(event, wrap);
  }
  emit(event, data) {
    const handlers = this.eventHandlers.get(event);
    if (!handlers) return;
    for (const handler of [...handlers]) {
      try { handler(data); } catch (error) { console.error(`Error in DBX event handler for ${event}:`, error); }
    }
  }

  // ---- connection
  /** Opens the connection; resolves with the server's hello message. */
  connect() {
    if (this.state === 'connected') return Promise.resolve(this.hello);
    if (this._connectPromise) return this._connectPromise;
    this._closedByUser = false;
    this.state = 'connecting';
    this._connectPromise = (async () => {
      try {
        const hello = await this._open();
        await this._afterConnect(hello, false);
        return hello;
      } catch (error) {
        if (this.state === 'connecting') this.state = 'disconnected';
        this._rejectWaiters(error);
        throw error;
      } finally {
        this._connectPromise = null;
      }
    })();
    return this._connectPromise;
  }

  /** Closes the connection (code 1000) and stops reconnecting; resolves once the socket is closed. */
  disconnect() {
    this._closedByUser = true;
    if (this._sleep) this._sleep();
    this._stopTimers();
    const ws = this.ws;
    this.ws = null;
    const err = new DBXError('disconnected', 'disconnect() was called');
    this._rejectPending(() => err);
    this._rejectWaiters(err);
    this._subs.channels.clear();
    this._subs.patterns.clear();
    this._watch = { keys: new Set(), patterns: new Set(), rev: null, epoch: null };
    const wasConnected = this.state !== 'disconnected';
    this.state = 'disconnected';
    if (wasConnected) this.emit('disconnect', { code: 1000, reason: 'Client disconnect', wasClean: true });
    if (!ws) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { clearTimeout(t); resolve(); };
      const t = setTimeout(() => { try { ws.terminate?.(); } catch {} resolve(); }, 1000);
      ws.onclose = done;
      ws.onerror = () => {};
      ws.onmessage = () => {};
      try {
        if (ws.readyState === OPEN || ws.readyState === 0) ws.close(1000, 'Client disconnect');
        else done();
      } catch { done(); }
    });
  }

  async _currentToken() {
    const src = this.options.token;
    if (typeof src !== 'function') return this._token;
    const exp = this._token ? jwtExpiry(this._token) : null;
    if (!this._token || (exp !== null && exp * 1000 - Date.now() < 1000)) this._token = await src();
    return this._token;
  }

  async _open() {
    const { ca, rejectUnauthorized, headers } = this.options;
    const nodeOpts = ca !== undefined || rejectUnauthorized !== undefined || headers !== undefined
      ? { ...(ca !== undefined && { ca }), ...(rejectUnauthorized !== undefined && { rejectUnauthorized }),
        ...(headers !== undefined && { headers }) }
      : null;
    const WS = await resolveWebSocket(this.options.WebSocket, nodeOpts !== null);
    const url = new URL(this.url);
    if (this.options.apiKey) url.searchParams.set('api_key', this.options.apiKey);
    if (this.options.clientId) url.searchParams.set('client_id', this.options.clientId);
    if (this.options.version) url.searchParams.set('version', this.options.version);
    const token = await this._currentToken();
    // Browsers cannot set headers: the token travels in the subprotocol list.
    const protocols = token ? ['dbx.v1', `bearer.${token}`] : undefined;
    const where = redact(url.toString());
    return new Promise((resolve, reject) => {
      let settled = false;
      let ws;
      const fail = (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        try { ws.close(); } catch {}
        if (this.ws === ws) this.ws = null;
        reject(err);
      };
      const timer = setTimeout(() => fail(new DBXError('connect_timeout',
        `No hello from ${where} within ${this.options.connectTimeout} ms`)), this.options.connectTimeout);
      try {
        if (nodeOpts) ws = new WS(url.toString(), protocols ?? [], nodeOpts);
        else ws = protocols ? new WS(url.toString(), protocols) : new WS(url.toString());
      } catch (error) {
        fail(new DBXError('connect_failed', `Could not open ${where}: ${error.message}`, { cause: error }));
        return;
      }
      this.ws = ws;
      ws.onmessage = (ev) => {
        const msg = this._parse(ev.data);
        if (!msg) return;
        this._lastRx = Date.now();
        if (!settled && msg.type === 'hello') {
          settled = true;
          clearTimeout(timer);
          this.hello = msg;
          resolve(msg);
          return;
        }
        this.handleMessage(msg);
      };
      ws.onerror = (ev) => {
        const detail = ev?.message || ev?.error?.message;
        if (!settled) fail(new DBXError('connect_failed', `Could not connect to ${where}${detail ? ': ' + detail : ''}`, { cause: ev?.error || ev }));
      };
      ws.onclose = (ev) => {
        if (!settled) {
          fail(new DBXError('connect_failed',
            `Connection to ${where} closed before hello (code ${ev.code}${ev.reason ? ', ' + ev.reason : ''})`,
            { closeCode: ev.code }));
        } else {
          this._onClose(ws, ev.code, ev.reason, ev.wasClean);
        }
      };
    });
  }

  _parse(data) {
    try {
      const text = typeof data === 'string' ? data : new TextDecoder().decode(data);
      return JSON.parse(text);
    } catch (error) {
      this.emit('error', new DBXError('invalid_message', `Unparseable message from server: ${error.message}`));
      return null;
    }
  }

  async _afterConnect(hello, isReconnect) {
    this.state = 'connected';
    this.reconnectAttempts = 0;
    this._startTimers(hello);
    let restored = null;
    if (isReconnect) restored = await this._restore(hello);
    if (this.state !== 'connected') return;
    for (const w of [...this._waiters]) w.resolve();
    this._waiters.clear();
    this.emit('connect', hello);
    if (isReconnect) this.emit('reconnect', { hello, ...restored });
  }

  _startTimers(hello) {
    this._stopTimers();
    const hbMs = Math.max(1, Number(hello.heartbeat_interval) || 30) * 1000;
    if (this.options.heartbeat) {
      this._timers.heartbeat = setInterval(() => {
        if (this.isConnected()) {
          try { this.ws.send(JSON.stringify({ type: 'heartbeat', timestamp: new Date().toISOString() })); } catch {}
        }
      }, hbMs);
      const liveness = this.options.livenessTimeout ?? hbMs * 2 + 2000;
      this._timers.liveness = setInterval(() => {
        if (this.ws && Date.now() - this._lastRx > liveness) {
          this._abandon(this.ws, 4000, `no message from the server for ${liveness} ms`);
        }
      }, Math.min(1000, liveness / 2));
    }
    this._scheduleRefresh();
  }

  _stopTimers() {
    clearInterval(this._timers.heartbeat);
    clearInterval(this._timers.liveness);
    clearTimeout(this._timers.refresh);
    this._timers = {};
  }

  _scheduleRefresh() {
    clearTimeout(this._timers.refresh);
    if (typeof this.options.token !== 'function' || !this._token) return;
    const exp = jwtExpiry(this._token);
    if (exp === null) return;
    const left = exp * 1000 - Date.now();
    const margin = Math.min(this.options.refreshMargin, left / 2);
    this._timers.refresh = setTimeout(() => this._refreshToken(), Math.max(0, left - margin));
  }

  async _refreshToken() {
    try {
      const token = await this.options.token();
      const result = await this.sendRequest('auth.refresh', { token });
      this._token = token;
      this.emit('token_refreshed', result);
      this._scheduleRefresh();
    } catch (error) {
      this.emit('error', new DBXError(error.code || 'refresh_failed', `auth.refresh failed: ${error.message}`, { cause: error }));
      if (this.isConnected()) this._timers.refresh = setTimeout(() => this._refreshToken(), 1000);
    }
  }

  /** Drops a socket that looks dead without waiting for a close handshake. */
  _abandon(ws, code, reason) {
    ws.onclose = ws.onmessage = ws.onerror = () => {};
    try { ws.terminate ? ws.terminate() : ws.close(4000, 'liveness'); } catch {}
    this._onClose(ws, code, reason, false);
  }

  _onClose(ws, code, reason, wasClean) {
    if (ws !== this.ws) return;
    this.ws = null;
    this._stopTimers();
    const why = `code ${code}${reason ? ', ' + reason : ''}`;
    this._rejectPending((id, p) => new DBXError('disconnected',
      `Connection lost (${why}) before the reply to ${p.method} (id ${id}); it may or may not have been applied`,
      { method: p.method, id, closeCode: code }));
    this.emit('disconnect', { code, reason, wasClean });
    if (this._closedByUser || !this.options.reconnect) {
      this.state = 'disconnected';
      this._rejectWaiters(new DBXError('disconnected', `Connection closed (${why})`, { closeCode: code }));
      return;
    }
    this.state = 'reconnecting';
    this._reconnectLoop();
  }

  _backoff(attempt) {
    const cap = Math.min(this.options.reconnectMaxDelay, this.options.reconnectBaseDelay * 2 ** attempt);
    return Math.round(cap / 2 + Math.random() * (cap / 2)); // exponential, with jitter
  }

  async _reconnectLoop() {
    for (let attempt = 0; attempt < this.options.maxReconnectAttempts; attempt++) {
      this.reconnectAttempts = attempt + 1;
      const delay = this._backoff(attempt);
      this.emit('reconnecting', { attempt: attempt + 1, delay });
      await new Promise((resolve) => {
        const t = setTimeout(resolve, delay);
        this._sleep = () => { clearTimeout(t); resolve(); };
      });
      this._sleep = null;
      if (this._closedByUser) return;
      try {
        const hello = await this._open();
        if (this._closedByUser) return;
        await this._afterConnect(hello, true);
        return;
      } catch (error) {
        if (this._closedByUser) return;
        this.emit('error', error);
      }
    }
    this.state = 'disconnected';
    const err = new DBXError('disconnected', `Gave up reconnecting after ${this.options.maxReconnectAttempts} attempts`);
    this._rejectWaiters(err);
    this.emit('reconnect_failed', err);
  }

  /** After a reconnect: subscribe again and resume the watches from the last revision seen. */
  async _restore(hello) {
    const out = { resubscribed: [], resumed: false, resync: false };
    try {
      const { channels, patterns } = this._subs;
      if (channels.size || patterns.size) {
        const params = {};
        if (channels.size) params.channels = [...channels];
        if (patterns.size) params.patterns = [...patterns];
        const r = await this.sendRequest('pubsub.subscribe', params, { internal: true });
        out.resubscribed = r?.subscribed || [];
      }
      const w = this._watch;
      if (w.keys.size || w.patterns.size) {
        const base = {};
        if (w.keys.size) base.keys = [...w.keys];
        if (w.patterns.size) base.patterns = [...w.patterns];
        let reason = w.rev == null ? 'no_revision' : 'epoch_changed';
        if (w.rev != null && w.epoch != null && w.epoch === hello.epoch) {
          const since = w.rev;
          const r = await this.sendRequest('key.watch', { ...base, since, epoch: w.epoch }, { internal: true });
          if (r && !r.gap && Array.isArray(r.replay)) {
            let n = 0;
            for (const ev of r.replay) {
              if (typeof ev.rev === 'number' && ev.rev <= since) continue;
              n++;
              this._onKeyspace({ type: 'keyspace', ...ev, replayed: true });
            }
            if (typeof r.rev === 'number' && r.rev > (w.rev ?? -1)) w.rev = r.rev;
            out.resumed = true;
            out.replayed = n;
            this.emit('resume', { since, rev: w.rev, replayed: n, watching: r.watching });
            return out;
          }
          reason = r && r.gap ? 'gap' : 'no_replay';
          if (r && !r.gap && r.values) { // a server without resume answered with fresh values
            this._resync(r, hello, reason);
            out.resync = true;
            return out;
          }
        }
        const r = await this.sendRequest('key.watch', base, { internal: true });
        this._resync(r, hello, reason);
        out.resync = true;
      }
    } catch (error) {
      this.emit('error', new DBXError(error.code || 'restore_failed',
        `Could not restore subscriptions/watches after reconnect: ${error.message}`, { cause: error }));
    }
    return out;
  }

  _resync(result, hello, reason) {
    this._watch.rev = typeof result.rev === 'number' ? result.rev : null;
    this._watch.epoch = hello.epoch ?? null;
    const payload = { reason, rev: result.rev, values: result.values || {}, watching: result.watching };
    this.emit('gap', payload);
    this.emit('resync', payload);
  }

  _rejectPending(makeError) {
    const pending = [...this.pendingRequests];
    this.pendingRequests.clear();
    for (const [id, p] of pending) {
      clearTimeout(p.timer);
      p.reject(makeError(id, p));
    }
  }

  _rejectWaiters(error) {
    for (const w of [...this._waiters]) w.reject(error);
    this._waiters.clear();
  }

  _waitConnected(timeoutMs, method) {
    return new Promise((resolve, reject) => {
      const w = {
        resolve: () => { clearTimeout(t); resolve(); },
        reject: (e) => { clearTimeout(t); reject(e); },
      };
      const t = setTimeout(() => {
        this._waiters.delete(w);
        reject(new DBXError('timeout', `Not reconnected within ${timeoutMs} ms; ${method} was not sent`, { method }));
      }, timeoutMs);
      this._waiters.add(w);
    });
  }

  // ---- requests
  /** Sends one request; resolves with its `result`, rejects with a DBXError. */
  async sendRequest(method, params = {}, { timeout, internal = false } = {}) {
    const timeoutMs = timeout ?? this.options.requestTimeout;
    if (!internal && !this.isConnected()) {
      const waiting = this.state === 'connecting' || this.state === 'reconnecting';
      if (waiting && this.options.waitForReconnect) await this._waitConnected(timeoutMs, method);
      else throw new DBXError('not_connected', `WebSocket not connected (state: ${this.state}); ${method} was not sent`, { method });
    }
    if (!this.ws || this.ws.readyState !== OPEN) {
      throw new DBXError('not_connected', `WebSocket not connected (state: ${this.state}); ${method} was not sent`, { method });
    }
    const id = `msg_${++this.messageId}`;
    const result = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pendingRequests.delete(id)) {
          reject(new DBXError('timeout', `No reply to ${method} (id ${id}) within ${timeoutMs} ms`, { method, id }));
        }
      }, timeoutMs);
      this.pendingRequests.set(id, { resolve, reject, method, params, timer });
      try {
        this.ws.send(JSON.stringify({ id, method, params, timestamp: new Date().toISOString() }));
      } catch (error) {
        clearTimeout(timer);
        this.pendingRequests.delete(id);
        reject(new DBXError('disconnected', `Could not send ${method}: ${error.message}`, { method, id }));
      }
    });
    if (!internal) this._track(method, params, result);
    return result;
  }

  /** Runs operations `[{method, params}]` in one `batch`; resolves with `{results:[{result}|{error}]}`. */
  batchOperations(operations, options) {
    return this.sendRequest('batch', { operations }, options);
  }

  _track(method, params, result) {
    const list = (v) => (Array.isArray(v) ? v : v == null ? [] : [v]);
    switch (method) {
      case 'pubsub.subscribe':
        list(params.channels).forEach((c) => this._subs.channels.add(c));
        list(params.patterns).forEach((p) => this._subs.patterns.add(p));
        break;
      case 'pubsub.unsubscribe':
        if (params.channels == null && params.patterns == null) {
          this._subs.channels.clear();
          this._subs.patterns.clear();
        }
        list(params.channels).forEach((c) => this._subs.channels.delete(c));
        list(params.patterns).forEach((p) => this._subs.patterns.delete(p));
        break;
      case 'key.watch': {
        list(params.keys).forEach((k) => this._watch.keys.add(k));
        list(params.patterns).forEach((p) => this._watch.patterns.add(p));
        if (result && Array.isArray(result.replay)) {
          for (const ev of result.replay) this._onKeyspace({ type: 'keyspace', ...ev, replayed: true });
        }
        if (result && typeof result.rev === 'number' && (this._watch.rev == null || result.rev > this._watch.rev)) {
          this._watch.rev = result.rev;
        }
        this._watch.epoch = this.hello?.epoch ?? null;
        break;
      }
      case 'key.unwatch':
        if (params.keys == null && params.patterns == null) {
          this._watch.keys.clear();
          this._watch.patterns.clear();
        }
        list(params.keys).forEach((k) => this._watch.keys.delete(k));
        list(params.patterns).forEach((p) => this._watch.patterns.delete(p));
        break;
      default:
    }
  }

  _onKeyspace(msg) {
    if (typeof msg.rev === 'number' && (this._watch.rev == null || msg.rev > this._watch.rev)) this._watch.rev = msg.rev;
    this.emit('keyspace', msg);
    this.emit('message', msg);
  }

  handleMessage(data) {
    if (!data || typeof data !== 'object') return;
    if (data.type === 'heartbeat') {
      this.emit('heartbeat', data);
      return;
    }
    if (data.id !== undefined && data.id !== null && this.pendingRequests.has(String(data.id))) {
      const id = String(data.id);
      const p = this.pendingRequests.get(id);
      this.pendingRequests.delete(id);
      clearTimeout(p.timer);
      if (data.error) {
        const e = data.error;
        p.reject(new DBXError(e.code || 'error', e.message || e.code || 'request failed', {
          method: p.method, id, retryAfterMs: e.retry_after_ms, details: e,
        }));
      } else {
        p.resolve(data.result);
      }
      return;
    }
    if (data.type === 'keyspace') return this._onKeyspace(data);
    if (data.type === 'event') this.emit('event', data);
    else if (data.type === 'hello') this.emit('hello', data);
    else if (data.error) this.emit('error', new DBXError(data.error.code || 'error', data.error.message || 'server error', { details: data.error }));
    // Handle unsolicited messages (notifications, etc.)
    this.emit('message', data);
  }
}

export { DBXWebSocket as DBXClient };

/** A small pool of connections, as in the original document. */
export class DBXWebSocketPool {
  constructor(url, options = {}) {
    this.url = url;
    this.options = options;
    this.pool = [];
    this.maxConnections = options.maxConnections || 5;
    this.currentConnections = 0;
  }

  async getConnection(timeoutMs = this.options.requestTimeout ?? 30000) {
    // Return existing available connection
    for (const conn of this.pool) if (conn.isAvailable()) return conn;
    // Create new connection if under limit
    if (this.currentConnections < this.maxConnections) {
      this.currentConnections++;
      const conn = new DBXWebSocket(this.url, this.options);
      try {
        await conn.connect();
      } catch (error) {
        this.currentConnections--;
        throw error;
      }
      this.pool.push(conn);
      return conn;
    }
    // Wait for available connection
    const deadline = Date.now() + timeoutMs;
    return new Promise((resolve, reject) => {
      const checkPool = () => {
        for (const conn of this.pool) {
          if (conn.isAvailable()) return resolve(conn);
        }
        if (Date.now() > deadline) return reject(new DBXError('timeout', `No pooled connection free within ${timeoutMs} ms`));
        setTimeout(checkPool, 50);
      };
      checkPool();
    });
  }

  async sendRequest(method, params, options) {
    const conn = await this.getConnection();
    return conn.sendRequest(method, params, options);
  }

  async disconnect() {
    const conns = this.pool.splice(0);
    this.currentConnections = 0;
    await Promise.all(conns.map((c) => c.disconnect()));
  }
}

export default DBXWebSocket;
