//! Bounded pools of plain threads for work that must never run on a shard: name resolution
//! (getaddrinfo blocks) and Argon2id (tens of milliseconds of CPU and ~19 MiB by design).
//!
//! Each kind of work has its own pool, so a storm of bogus credentials cannot hold up name
//! resolution for everyone; each queue is bounded, so a storm cannot queue without limit
//! either (a full queue refuses at once).

use std::io;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("the {0} pool's queue is full")]
    Busy(&'static str),
    #[error("the {0} pool stopped")]
    Stopped(&'static str),
}

pub struct WorkerPool {
    name: &'static str,
    jobs: flume::Sender<Job>,
}

/// Gives memory freed by finished jobs back to the system. Argon2id allocates its whole
/// memory cost (19 MiB by default) per verification; glibc keeps such blocks in the worker
/// thread's arena after the first free raised its mmap threshold, so without this each
/// password thread kept ~19 MiB, and the process grew for good after a burst of checks.
pub fn release_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory to the system; it touches no live block.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl WorkerPool {
    /// `threads` workers behind a queue of `queue` jobs. `on_idle` runs on a worker each
    /// time it finds the queue empty after a job.
    pub fn new(
        name: &'static str,
        threads: usize,
        queue: usize,
        on_idle: Option<fn()>,
    ) -> io::Result<WorkerPool> {
        let (jobs, rx) = flume::bounded::<Job>(queue);
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("zcproxy-{name}-{i}"))
                .spawn(move || {
                    // Ends when the pool (every sender) is dropped.
                    while let Ok(job) = rx.recv() {
                        job();
                        if let (Some(idle), true) = (on_idle, rx.is_empty()) {
                            idle();
                        }
                    }
                })?;
        }
        Ok(WorkerPool { name, jobs })
    }

    /// Runs `f` on the pool; the calling task waits without blocking its thread.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let (tx, rx) = flume::bounded(1);
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs.try_send(job).map_err(|e| match e {
            flume::TrySendError::Full(_) => PoolError::Busy(self.name),
            flume::TrySendError::Disconnected(_) => PoolError::Stopped(self.name),
        })?;
        rx.recv_async()
            .await
            .map_err(|_| PoolError::Stopped(self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_full_queue_refuses_instead_of_growing() {
        let pool = WorkerPool::new("test", 1, 1, Some(release_memory)).unwrap();
        let (release, blocked) = mpsc::channel::<()>();
        let (started_tx, started) = mpsc::channel::<()>();
        let both = futures_util::future::join(
            pool.run(move || {
                started_tx.send(()).unwrap();
                blocked.recv().unwrap();
                1
            }),
            async {
                started.recv_timeout(Duration::from_secs(5)).unwrap();
                // One job runs, one waits in the queue, the third is refused.
                let mut queued = Box::pin(pool.run(|| 2));
                assert!(futures_util::FutureExt::now_or_never(&mut queued).is_none());
                let refused = futures_util::FutureExt::now_or_never(pool.run(|| 3));
                assert_eq!(refused, Some(Err(PoolError::Busy("test"))));
                release.send(()).unwrap();
                queued.await
            },
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (a, b) = rt.block_on(both);
        assert_eq!((a, b), (Ok(1), Ok(2)));
    }
}
