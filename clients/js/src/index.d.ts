import type { DBXMethods, KeyspaceEvent, MethodName, WatchValue } from './methods.js';
export * from './methods.js';

export type ConnectionState = 'disconnected' | 'connecting' | 'connected' | 'reconnecting';

export interface DBXOptions {
  /** Sent as `?api_key=`. */
  apiKey?: string;
  /** A JWT, or a function returning one (then `auth.refresh` is sent before it expires).
   *  Sent in the subprotocol list `dbx.v1, bearer.<token>`, which works in browsers. */
  token?: string | (() => string | Promise<string>);
  clientId?: string;
  version?: string;
  /** ms, default 30000 */
  requestTimeout?: number;
  /** ms until the server's hello, default 10000 */
  connectTimeout?: number;
  /** reconnect after an unexpected close, default true */
  reconnect?: boolean;
  maxReconnectAttempts?: number;
  /** ms, default 250; the delay doubles per attempt up to reconnectMaxDelay, with jitter */
  reconnectBaseDelay?: number;
  /** ms, default 30000 */
  reconnectMaxDelay?: number;
  /** send heartbeats and drop a silent connection, default true */
  heartbeat?: boolean;
  /** ms without any message after which the connection counts as dead (default 2 × heartbeat_interval + 2 s) */
  livenessTimeout?: number;
  /** ms before the token's `exp` to refresh it, default 30000 (at most half its remaining life) */
  refreshMargin?: number;
  /** requests made while reconnecting wait for the connection (up to their timeout), default true */
  waitForReconnect?: boolean;
  maxPendingPerConnection?: number;
  /** a WebSocket implementation (e.g. the `ws` package); default globalThis.WebSocket, else `ws` */
  WebSocket?: unknown;
  /** Node (`ws` package), wss://: CA certificate(s) to trust, PEM */
  ca?: string | Uint8Array | Array<string | Uint8Array>;
  /** Node (`ws` package), wss://: check the server certificate (default true) */
  rejectUnauthorized?: boolean;
  /** Node (`ws` package): extra handshake headers, e.g. { Authorization: 'Bearer …' } */
  headers?: Record<string, string>;
}

export interface Hello {
  type: 'hello'; version: string; connection_id: string; heartbeat_interval: number; rate_limit: number;
  max_message_size: number; epoch: string; rev: number; timestamp: string;
}
export interface PubSubEvent { type: 'event'; channel: string; pattern: string | null; data: unknown; timestamp?: string }
export interface HeartbeatMessage { type: 'heartbeat'; timestamp: string }
export interface DisconnectInfo { code: number; reason: string; wasClean: boolean }
export interface ResyncInfo { reason: 'gap' | 'epoch_changed' | 'no_revision' | 'no_replay'; rev: number; values: Record<string, WatchValue>; watching: string[] }
export interface ResumeInfo { since: number; rev: number; replayed: number; watching: string[] }
export interface ReconnectInfo { hello: Hello; resubscribed: string[]; resumed: boolean; resync: boolean; replayed?: number }

export interface DBXEvents {
  connect: Hello;
  disconnect: DisconnectInfo;
  reconnecting: { attempt: number; delay: number };
  reconnect: ReconnectInfo;
  reconnect_failed: DBXError;
  heartbeat: HeartbeatMessage;
  hello: Hello;
  event: PubSubEvent;
  keyspace: KeyspaceEvent;
  resume: ResumeInfo;
  resync: ResyncInfo;
  gap: ResyncInfo;
  token_refreshed: { expires_at: number | null };
  message: Record<string, unknown>;
  error: DBXError;
}

export declare class DBXError extends Error {
  constructor(code: string, message: string, extra?: Record<string, unknown>);
  /** server codes (not_found, wrong_type, rate_limited, ...) or the client's own:
   *  timeout, disconnected, not_connected, connect_failed, connect_timeout, no_websocket */
  code: string;
  method?: string;
  id?: string;
  closeCode?: number;
  retryAfterMs?: number;
  details?: Record<string, unknown>;
}

export interface RequestOptions { timeout?: number }
export interface BatchOperation { method: MethodName | string; params?: Record<string, unknown> }
export interface BatchResult { results: Array<{ result: any } | { error: { code: string; message: string } }> }

export interface DBXWebSocket extends DBXMethods {}
export declare class DBXWebSocket {
  constructor(url: string, options?: DBXOptions);
  readonly url: string;
  readonly state: ConnectionState;
  readonly hello: Hello | null;
  readonly pendingRequests: Map<string, unknown>;
  connect(): Promise<Hello>;
  disconnect(): Promise<void>;
  getState(): ConnectionState;
  isConnected(): boolean;
  isAvailable(): boolean;
  getWatchPosition(): { rev: number | null; epoch: string | null };
  on<E extends keyof DBXEvents>(event: E, handler: (data: DBXEvents[E]) => void): this;
  off<E extends keyof DBXEvents>(event: E, handler: (data: DBXEvents[E]) => void): this;
  once<E extends keyof DBXEvents>(event: E, handler: (data: DBXEvents[E]) => void): this;
  sendRequest<T = any>(method: MethodName | string, params?: Record<string, unknown>, options?: RequestOptions): Promise<T>;
  batchOperations(operations: BatchOperation[], options?: RequestOptions): Promise<BatchResult>;
}
export { DBXWebSocket as DBXClient };

export declare class DBXWebSocketPool {
  constructor(url: string, options?: DBXOptions & { maxConnections?: number });
  readonly pool: DBXWebSocket[];
  maxConnections: number;
  getConnection(timeoutMs?: number): Promise<DBXWebSocket>;
  sendRequest<T = any>(method: MethodName | string, params?: Record<string, unknown>, options?: RequestOptions): Promise<T>;
  disconnect(): Promise<void>;
}

export declare const METHODS: Record<string, { args: Array<{ one: string; many: string | null; type: string; optional: boolean }>; opts: string[] }>;
export declare function jwtExpiry(token: string): number | null;
export default DBXWebSocket;
