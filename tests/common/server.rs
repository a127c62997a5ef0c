//! An in-process `dbx::server::Server` on 127.0.0.1:0, on its own thread.

use super::client::Client;
use super::IO_TIMEOUT;
use dbx::config::Config;
use dbx::server::{Server, Shutdown};
use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;
use std::time::Duration;

/// A server running on its own thread; stopped (trigger + join) by `stop()` or on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: Shutdown,
    /// Kernel thread id of the reactor thread (for its CPU time).
    pub tid: i64,
    /// Read timeout of the clients made by `client()` and friends.
    pub client_timeout: Duration,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    /// `DBX_TEST_BACKEND=redis`: the Redis this gateway fronts (stopped after it).
    pub redis: Option<super::redis::Redis>,
}

impl TestServer {
    /// Start a server with `cfg` on 127.0.0.1:0.
    ///
    /// The server is built inside its thread (it holds `Rc`s, it is not `Send`); its
    /// shutdown handle comes back through a channel, or the start-up error.
    pub fn start(mut cfg: Config) -> TestServer {
        cfg.host = "127.0.0.1".into();
        // The suites run against a gateway too: DBX_TEST_BACKEND=redis gives each server
        // a fresh redis-server of its own (.ci/run runs the data-type suites that way).
        let mut redis = None;
        if cfg.backend == dbx::config::Backend::Embedded && super::redis::suites_on_redis() {
            let r = super::redis::Redis::start();
            cfg.backend = dbx::config::parse_backend(&r.url()).expect("redis url");
            redis = Some(r);
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("dbx-test-server".into())
            .spawn(move || {
                let mut server = match Server::with_listener(cfg, listener) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return Ok(());
                    }
                };
                // SAFETY: gettid has no preconditions.
                let tid = unsafe { libc::gettid() } as i64;
                let _ = tx.send(Ok((tid, server.shutdown_handle())));
                server.run()
            })
            .expect("spawn server thread");
        let (tid, handle) = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => panic!("server did not start: {e}"),
            Err(e) => panic!("server did not start: {e}"),
        };
        let srv = TestServer { addr, handle, tid, client_timeout: IO_TIMEOUT, thread: Some(thread), redis };
        if srv.redis.is_some() {
            super::redis::wait_ready(&srv);
        }
        srv
    }

    /// Start with `Config::for_tests()` changed by `f`.
    pub fn with(f: impl FnOnce(&mut Config)) -> TestServer {
        let mut cfg = Config::for_tests();
        f(&mut cfg);
        TestServer::start(cfg)
    }

    /// Clients made by `client()` and friends read with this timeout.
    pub fn timeout(mut self, d: Duration) -> TestServer {
        self.client_timeout = d;
        self
    }

    /// A client on `/ws` (anonymous: no credential configured, loopback).
    pub fn client(&self) -> Client {
        self.client_query("")
    }

    /// A client on `/ws?query`; panics if refused.
    pub fn client_query(&self, query: &str) -> Client {
        Client::open(self.addr, &ws_target(query), &[], self.client_timeout).expect("connect").0
    }

    /// A client with the credential in `?api_key=`; panics if refused.
    pub fn client_key(&self, api_key: &str) -> Client {
        Client::open(self.addr, &ws_target(&format!("api_key={api_key}")), &[], self.client_timeout)
            .expect("connect with api key")
            .0
    }

    /// A client with `Authorization: Bearer <token>`; panics if refused.
    pub fn client_bearer(&self, token: &str) -> Client {
        let auth = format!("Bearer {token}");
        Client::open(self.addr, "/ws", &[("Authorization", &auth)], self.client_timeout).expect("connect with bearer").0
    }

    /// CPU time (user + system) of the reactor thread, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        super::process::stat_ticks(&format!("/proc/self/task/{}/stat", self.tid))
    }

    /// True while the server thread is alive (a panic ends it).
    pub fn alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stop the server and fail if its thread panicked or returned an error.
    pub fn stop(mut self) {
        self.join();
    }

    fn join(&mut self) {
        self.handle.trigger();
        if let Some(t) = self.thread.take() {
            // The server's shutdown grace is bounded (2 s); a failure in the server
            // thread fails the test, but must not double-panic during unwinding.
            let res = t.join();
            if std::thread::panicking() {
                return;
            }
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("server loop failed: {e}"),
                Err(_) => panic!("server thread panicked"),
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.join();
    }
}

/// Start a server with `Config::for_tests()` changed by `f`.
pub fn start(f: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::with(f)
}

/// A server with the default test config.
pub fn start_default() -> TestServer {
    start(|_| {})
}

/// `/ws` plus `?query` when `query` is not empty.
pub fn ws_target(query: &str) -> String {
    if query.is_empty() {
        "/ws".to_string()
    } else {
        format!("/ws?{query}")
    }
}
