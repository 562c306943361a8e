//! Observing a running router from outside: which instance a tenant is routed to, and steady
//! traffic that counts every answer that was not a 200.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::edge::{Edge, BASE};
use crate::http::{get_with_token, send_raw};
use crate::keys::TestKeys;
use crate::wait;

/// The host name a tenant is addressed by in tests.
pub fn host(tenant: &str) -> String {
    format!("{tenant}.{BASE}")
}

/// The name of the instance that answered an authenticated `GET /` for `tenant`, if any did.
pub fn instance_of(edge: &Edge, keys: &TestKeys, tenant: &str) -> Option<String> {
    let r = get_with_token(edge.addr, &host(tenant), "/", &keys.token(tenant, None));
    (r.status == 200).then(|| r.json()["instance"].as_str().unwrap_or_default().to_owned())
}

/// Polls until `tenant` is routed to the instance named `want`.
pub fn wait_instance(edge: &Edge, keys: &TestKeys, tenant: &str, want: &str) {
    wait::until(
        Duration::from_secs(20),
        &format!("{tenant} routed to {want}"),
        || (instance_of(edge, keys, tenant).as_deref() == Some(want)).then_some(()),
    );
}

/// Steady requests for one tenant on a background thread, counting answers that were not 200
/// (and requests that got no answer at all) as failed. The thread is stopped and joined on
/// drop, even when the test panics.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    /// Starts sending requests for `tenant` through `edge`.
    pub fn start(edge: &Edge, keys: &TestKeys, tenant: &str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (s, o, f) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        let (addr, host) = (edge.addr, host(tenant));
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            keys.token(tenant, None)
        );
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                // A connection refused or cut is a failure to count, not a panic that would
                // end the traffic unseen.
                let answered = send_raw(addr, request.as_bytes()).is_ok_and(|r| r.status == 200);
                if answered { &o } else { &f }.fetch_add(1, Ordering::Relaxed);
            }
        });
        Traffic {
            stop,
            ok,
            failed,
            thread: Some(thread),
        }
    }

    /// Waits until `n` more requests succeeded.
    pub fn served(&self, n: u64) {
        let target = self.ok.load(Ordering::Relaxed) + n;
        wait::until(Duration::from_secs(20), "traffic to flow", || {
            (self.ok.load(Ordering::Relaxed) >= target).then_some(())
        });
    }

    /// Stops the thread; returns (ok, failed).
    pub fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("traffic thread");
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // Each request is bounded (connect 5 s, read 30 s), so this ends.
            let _ = t.join();
        }
    }
}
