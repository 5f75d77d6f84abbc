//! [`Workers`]: the fixed set of threads that run queries and reads on the
//! runtime.
//!
//! A query is short (~50 µs of guest and router code) and CPU-bound. Run in
//! tokio's blocking pool, each one woke a parked thread of up to hundreds
//! and parked it again, and at 32 clients a third of the service's time went
//! to switching threads. A few threads taking queries from one queue stay
//! busy under load instead: `cargo xtask bench serve` at 32 clients went
//! from ~130 to ~90 µs of service CPU per answer. Writes — feedback, a
//! plugin, an engram, a workflow — may take seconds and still run in
//! tokio's blocking pool, so they never hold a query thread.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// Threads that run jobs in the order given, each to its end.
pub(crate) struct Workers {
    jobs: mpsc::Sender<Job>,
}

impl Workers {
    /// `threads` threads (at least 1), named `elex-query-<n>`; they end when
    /// the `Workers` is dropped and the queue is empty.
    pub(crate) fn start(threads: usize) -> std::io::Result<Workers> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new().name(format!("elex-query-{n}")).spawn(move || {
                loop {
                    // The lock is held only while taking the next job.
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        // A panic ends its job (the caller gets an error),
                        // not the thread.
                        Ok(job) => {
                            let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                        }
                        Err(_) => return,
                    }
                }
            })?;
        }
        Ok(Workers { jobs: tx })
    }

    /// Runs `f` on a worker; its result, or `None` if it panicked. If this
    /// future is dropped before a worker takes `f`, `f` is dropped unrun.
    pub(crate) async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // A caller that gave up (its request timed out while this
            // waited in line) needs no answer: the job is dropped unrun.
            if !tx.is_closed() {
                let _ = tx.send(f());
            }
        });
        self.jobs.send(job).ok()?;
        rx.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_and_a_panic_ends_only_its_job() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(workers.run(|| 2 + 2).await, Some(4));
        assert_eq!(workers.run(|| -> u32 { panic!("a job that panics") }).await, None);
        // The threads outlive the panic: every later job runs.
        for i in 0..8u64 {
            assert_eq!(workers.run(move || i * i).await, Some(i * i));
        }
    }

    #[tokio::test]
    async fn a_job_whose_caller_gave_up_is_not_run() {
        let workers = Workers::start(1).unwrap();
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // The only thread is busy until `release` is sent.
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let busy = workers.run(move || wait.recv().is_ok());
        tokio::pin!(busy);
        assert!(tokio::time::timeout(std::time::Duration::from_millis(10), &mut busy).await.is_err());
        // A second job waits in line; its caller gives up.
        let flag = Arc::clone(&ran);
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            workers.run(move || flag.store(true, std::sync::atomic::Ordering::SeqCst)),
        )
        .await;
        assert!(gave_up.is_err());
        release.send(()).unwrap();
        assert_eq!(busy.await, Some(true));
        // Jobs run in order: once this one has run, the abandoned one was
        // taken (and dropped) before it.
        assert_eq!(workers.run(|| 1).await, Some(1));
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }
}
