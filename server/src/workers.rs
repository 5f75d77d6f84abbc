//! [`Workers`]: the fixed set of threads that run queries and reads on the
//! runtime.
//!
//! A query is short (~50 µs of guest and router code) and CPU-bound. Run in
//! tokio's blocking pool, each one woke a parked thread of up to hundreds
//! and parked it again, and at 32 clients a third of the service's time went
//! to switching threads. A few threads taking queries from one queue stay
//! busy under load instead: `cargo xtask bench serve` at 32 clients went
//! from ~120 to ~95 µs of service CPU per answer.
//!
//! A query can also wait: callers of one agent take turns, and a plugin may
//! use its whole time budget. A question routed to a plugin is therefore
//! answered in tokio's blocking pool (only its routing runs here), as are a
//! cluster host's queries, which wait on other hosts; and so that a few
//! slow calls cannot hold every query thread while the others wait in line,
//! a job no query thread has taken within [`SPILL_AFTER`] runs in the
//! blocking pool too. Writes — feedback, a plugin, an engram, a workflow —
//! may take seconds and run there from the start.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send>;

/// How long a job waits for a query thread before tokio's blocking pool
/// runs it. Far above the wait under a full load of short queries (~2 ms at
/// 32 clients), far below a plugin's time budget.
pub(crate) const SPILL_AFTER: Duration = Duration::from_millis(20);

/// Threads that run jobs in the order given, each to its end.
pub(crate) struct Workers {
    jobs: mpsc::Sender<Job>,
    /// [`SPILL_AFTER`], but in tests.
    spill_after: Duration,
}

impl Workers {
    /// `threads` threads (at least 1), named `elex-query-<n>`, in the tokio
    /// runtime of the caller, if any (as blocking-pool threads are: a guest's
    /// WASI calls find it); they end when the `Workers` is dropped and the
    /// queue is empty. A job waits at most `spill_after` for one of them.
    pub(crate) fn start(threads: usize, spill_after: Duration) -> std::io::Result<Workers> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let tokio = tokio::runtime::Handle::try_current().ok();
        for n in 0..threads.max(1) {
            let (rx, tokio) = (Arc::clone(&rx), tokio.clone());
            std::thread::Builder::new().name(format!("elex-query-{n}")).spawn(move || {
                let _entered = tokio.as_ref().map(tokio::runtime::Handle::enter);
                loop {
                    // The lock is held only while taking the next job.
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        // A panic ends its job (the caller gets `None`), not
                        // the thread.
                        Ok(job) => {
                            let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                        }
                        Err(_) => return,
                    }
                }
            })?;
        }
        Ok(Workers { jobs: tx, spill_after })
    }

    /// Runs `f` on a query thread — or, if none takes it within the spill
    /// time ([`SPILL_AFTER`]), in tokio's blocking pool — and returns its result,
    /// or `None` if it panicked. If this future is dropped before `f`
    /// started, `f` is dropped unrun.
    pub(crate) async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // A caller that gave up (its request timed out while this
            // waited in line) needs no answer.
            if !tx.is_closed() {
                let _ = tx.send(f());
            }
        });
        // Whoever takes the job from here first runs it: a query thread, or
        // the blocking pool once it has waited too long.
        let slot = Arc::new(Mutex::new(Some(job)));
        let queued = Arc::clone(&slot);
        self.jobs.send(Box::new(move || take(&queued).map_or((), |job| job()))).ok()?;
        tokio::select! {
            done = &mut rx => return done.ok(),
            () = tokio::time::sleep(self.spill_after) => {}
        }
        if let Some(job) = take(&slot) {
            tokio::task::spawn_blocking(job);
        }
        rx.await.ok()
    }
}

fn take(slot: &Mutex<Option<Job>>) -> Option<Job> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).take()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Longer than any test: nothing spills unless a test says so.
    const NEVER: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn jobs_run_and_a_panic_ends_only_its_job() {
        // One thread and no spill: if the panic ended the thread, no later
        // job would run.
        let workers = Workers::start(1, NEVER).unwrap();
        assert_eq!(workers.run(|| 2 + 2).await, Some(4));
        assert_eq!(workers.run(|| -> u32 { panic!("a job that panics") }).await, None);
        for i in 0..8u64 {
            let on = workers.run(move || (i * i, std::thread::current().name().map(str::to_string))).await;
            assert_eq!(on, Some((i * i, Some(String::from("elex-query-0")))));
        }
    }

    #[tokio::test]
    async fn a_job_whose_caller_gave_up_is_not_run() {
        let workers = Workers::start(1, NEVER).unwrap();
        let ran = Arc::new(AtomicBool::new(false));
        // The only thread is busy until `release` is sent.
        let (release, wait) = mpsc::channel::<()>();
        let busy = workers.run(move || wait.recv().is_ok());
        tokio::pin!(busy);
        assert!(tokio::time::timeout(Duration::from_millis(5), &mut busy).await.is_err());
        // A second job waits in line; its caller gives up.
        let flag = Arc::clone(&ran);
        let gave_up = tokio::time::timeout(
            Duration::from_millis(5),
            workers.run(move || flag.store(true, Ordering::SeqCst)),
        )
        .await;
        assert!(gave_up.is_err());
        release.send(()).unwrap();
        assert_eq!(busy.await, Some(true));
        // Jobs run in order: once this one has run, the abandoned one was
        // taken (and dropped) before it.
        assert_eq!(workers.run(|| 1).await, Some(1));
        assert!(!ran.load(Ordering::SeqCst));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_no_query_thread_takes_runs_in_the_blocking_pool() {
        let workers = Workers::start(1, Duration::from_millis(1)).unwrap();
        // The only query thread waits until the second job has answered:
        // without the spill this would never end.
        let (release, wait) = mpsc::channel::<()>();
        let busy = workers.run(move || wait.recv().is_ok());
        tokio::pin!(busy);
        assert!(tokio::time::timeout(Duration::from_millis(5), &mut busy).await.is_err());
        let on = workers.run(|| std::thread::current().name().map(str::to_string)).await;
        assert_ne!(on, Some(Some(String::from("elex-query-0"))));
        assert!(on.is_some());
        release.send(()).unwrap();
        assert_eq!(busy.await, Some(true));
    }
}
