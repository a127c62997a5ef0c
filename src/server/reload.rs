//! Signals other than the stopping ones (issue 17): SIGHUP reloads what can be reloaded
//! and never stops the server; SIGUSR1 is logged and otherwise ignored. SIGPIPE is
//! ignored by the Rust runtime before `main` (a write to a closed socket returns EPIPE),
//! which the tests check.
//!
//! `Server::reload` is the one place that re-reads files: the TLS certificate, key and
//! client CA, and the credentials that come from files (DBX_API_KEYS_FILE,
//! DBX_JWT_SECRET_FILE, DBX_JWT_PUBLIC_KEY). Each item keeps its old settings when its
//! new file is bad and says so in the log. Open connections keep what they started with.

use super::Server;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use std::sync::atomic::Ordering;

/// Every signal the reactor takes through its `Poll`.
pub const HANDLED: [i32; 4] = [SIGTERM, SIGINT, SIGHUP, SIGUSR1];

impl Server {
    pub(super) fn on_signal(&mut self, sig: i32) {
        match sig {
            SIGHUP => {
                log::info!("SIGHUP received: reloading");
                self.reload();
            }
            SIGUSR1 => log::info!("SIGUSR1 received: ignored"),
            s => {
                log::info!("signal {s} received: shutting down");
                self.shutdown_flag.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Re-read what comes from files. Open connections keep what they started with.
    /// Returns how many items were reloaded.
    pub fn reload(&mut self) -> usize {
        let mut done = 0;
        let mut tried = 0;
        if let Some(tls) = self.tls.as_mut() {
            tried += 1;
            match tls.reload() {
                Ok(what) => {
                    done += 1;
                    log::info!("reload: TLS {what}; new connections use it");
                }
                Err(e) => log::error!("reload: keeping the previous TLS certificate: {e}"),
            }
            self.tls_check_expiry();
        }
        let cfg = &self.cfg;
        if cfg.api_keys_file.is_some() || cfg.jwt_secret_file.is_some() || cfg.jwt_public_key.is_some() {
            tried += 1;
            match crate::auth::Authenticator::from_config(cfg) {
                Ok(a) => {
                    done += 1;
                    log::info!("reload: credentials re-read ({a:?}); new connections use them");
                    let a = std::rc::Rc::new(a);
                    self.engine.set_auth(a.clone());
                    self.auth = a;
                }
                Err(e) => log::error!("reload: keeping the previous credentials: {e}"),
            }
        }
        if tried == 0 {
            log::info!("reload: nothing to reload (no TLS or credential files configured)");
        }
        done
    }
}
