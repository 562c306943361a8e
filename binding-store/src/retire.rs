//! Replaced tables are freed on a thread of their own.
//!
//! A full reconcile from Redis or a file reload builds the table's index anew: freeing the
//! table it replaces walks every entry, 0.15–0.2 s at a million bindings when the new table
//! shares the unchanged bindings (a reconcile's does since 2026-12-06) and 1.2–1.8 s when it
//! does not (a file reload's). Whoever lets go of the last reference pays: the sync task,
//! whose next change then waits, or a request that loaded the table just before the swap.
//! [`BindingHandle::store`](crate::BindingHandle::store) hands the replaced table to a
//! [`Retirer`] instead: its thread waits until nobody else holds the table, then frees it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

/// How often the thread looks again at a table that someone still holds. Requests hold the
/// table for the time of one decision, so this is rarely more than one wait.
const RECHECK: Duration = Duration::from_millis(20);

/// A thread that frees the values handed to it once it holds their last reference.
#[derive(Debug)]
pub(crate) struct Retirer<T> {
    /// `None` when the thread could not be started: values are then dropped by the caller.
    to_thread: Option<mpsc::Sender<Arc<T>>>,
    /// How many values the thread has freed: what the tests wait for.
    #[cfg(test)]
    freed: Arc<AtomicU64>,
}

impl<T: Send + Sync + 'static> Retirer<T> {
    /// Starts the thread, named `name`.
    pub(crate) fn start(name: &str) -> Self {
        let (tx, rx) = mpsc::channel::<Arc<T>>();
        let freed = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&freed);
        let started = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(&rx, &counted));
        let to_thread = match started {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!(error = %e, thread = name,
                    "cannot start the thread that frees replaced binding tables; whoever lets go of one last frees it");
                None
            }
        };
        Self {
            to_thread,
            #[cfg(test)]
            freed,
        }
    }

    /// Hands `value` over; it is freed on the retirer's thread once no one else holds it.
    pub(crate) fn retire(&self, value: Arc<T>) {
        if let Some(tx) = &self.to_thread {
            // A send fails only if the thread has gone (it never returns while this sender
            // lives); the value then comes back and is dropped here.
            let _ = tx.send(value);
        }
    }

    /// How many values the thread has freed so far.
    #[cfg(test)]
    pub(crate) fn freed(&self) -> u64 {
        self.freed.load(Ordering::Relaxed)
    }
}

/// The thread's loop: waits for values, frees those it holds alone, looks again at the
/// others every [`RECHECK`].
fn run<T>(rx: &mpsc::Receiver<Arc<T>>, freed: &AtomicU64) {
    let mut held: Vec<Arc<T>> = Vec::new();
    loop {
        let next = if held.is_empty() {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(RECHECK)
        };
        match next {
            Ok(value) => held.push(value),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // A retired value is out of the handle: no one can take a new reference to it but
        // from one already held, so a count of one means this is the last. Counted once
        // dropped.
        let was = held.len();
        held.retain(|value| Arc::strong_count(value) > 1);
        freed.fetch_add((was - held.len()) as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Instant;

    /// Records, when dropped, the name of the thread that dropped it.
    struct Noted(Arc<Mutex<Vec<String>>>);

    impl Drop for Noted {
        fn drop(&mut self) {
            let name = std::thread::current().name().unwrap_or("?").to_owned();
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(name);
        }
    }

    fn wait_for(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_retired_value_is_freed_on_the_retirer_thread_once_its_last_reader_lets_go() {
        let retirer = Retirer::start("test-retirer");
        let drops = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::new(Noted(Arc::clone(&drops)));
        let reader = Arc::clone(&held);
        retirer.retire(held);
        // One that nobody holds, sent after: once it is freed, the thread has looked at the
        // held one too (in order), and kept it.
        retirer.retire(Arc::new(Noted(Arc::clone(&drops))));
        wait_for("the unheld value was never freed", || retirer.freed() == 1);
        assert_eq!(drops.lock().expect("lock").len(), 1, "freed while held");
        // The reader lets go; its drop is not the last, the retirer's is.
        drop(reader);
        wait_for("the retired value was never freed", || retirer.freed() == 2);
        assert_eq!(
            *drops.lock().expect("lock"),
            ["test-retirer", "test-retirer"]
        );
    }

    #[test]
    fn values_no_one_holds_are_freed_in_turn() {
        let retirer = Retirer::start("test-retirer-many");
        let drops = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..5 {
            retirer.retire(Arc::new(Noted(Arc::clone(&drops))));
        }
        wait_for("not all were freed", || retirer.freed() == 5);
        assert!(drops
            .lock()
            .expect("lock")
            .iter()
            .all(|n| n == "test-retirer-many"));
    }
}
