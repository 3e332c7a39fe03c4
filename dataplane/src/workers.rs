//! Bounded pools of plain threads for work that must never run on a shard: name resolution
//! (getaddrinfo blocks) and Argon2id (tens of milliseconds of CPU and ~19 MiB by design).
//!
//! Each kind of work has its own pool, so a storm of bogus credentials cannot hold up name
//! resolution for everyone; each queue is bounded, so a storm cannot queue without limit
//! either (a full queue refuses at once).

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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
    queue: flume::Receiver<Job>,
    max_threads: usize,
    /// Threads started so far: a pool starts its threads as work arrives, so an idle proxy
    /// does not hold threads it has never needed.
    started: AtomicUsize,
    /// Threads waiting for a job right now.
    waiting: Arc<AtomicUsize>,
    on_idle: Option<fn()>,
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
    /// Up to `threads` workers behind a queue of `queue` jobs. `on_idle` runs on a worker
    /// each time it finds the queue empty after a job.
    pub fn new(
        name: &'static str,
        threads: usize,
        queue: usize,
        on_idle: Option<fn()>,
    ) -> io::Result<WorkerPool> {
        let (jobs, rx) = flume::bounded::<Job>(queue);
        let pool = WorkerPool {
            name,
            jobs,
            queue: rx,
            max_threads: threads.max(1),
            started: AtomicUsize::new(0),
            waiting: Arc::new(AtomicUsize::new(0)),
            on_idle,
        };
        // One thread from the start, so that a failure to start threads shows at start-up.
        pool.start_thread()?;
        Ok(pool)
    }

    fn start_thread(&self) -> io::Result<()> {
        let i = self.started.fetch_add(1, Ordering::AcqRel);
        let (rx, waiting, on_idle) = (self.queue.clone(), self.waiting.clone(), self.on_idle);
        let spawned = std::thread::Builder::new()
            .name(format!("zcproxy-{}-{i}", self.name))
            .spawn(move || loop {
                waiting.fetch_add(1, Ordering::AcqRel);
                let job = rx.recv();
                waiting.fetch_sub(1, Ordering::AcqRel);
                // Ends when the pool (every sender) is dropped.
                let Ok(job) = job else { return };
                job();
                if let (Some(idle), true) = (on_idle, rx.is_empty()) {
                    idle();
                }
            });
        spawned.map(drop).inspect_err(|_| {
            self.started.fetch_sub(1, Ordering::AcqRel);
        })
    }

    /// Threads started so far.
    pub fn threads(&self) -> usize {
        self.started.load(Ordering::Acquire)
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
        // Nobody free to take it: one more thread, up to the bound. A thread that cannot
        // start leaves the job to those that exist.
        if self.waiting.load(Ordering::Acquire) == 0 && self.threads() < self.max_threads {
            if let Err(e) = self.start_thread() {
                tracing::warn!(pool = self.name, error = %e, "worker thread not started");
            }
        }
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
    fn threads_start_as_work_arrives_up_to_the_bound() {
        let pool = WorkerPool::new("lazy", 3, 16, None).unwrap();
        assert_eq!(pool.threads(), 1);
        let (release, blocked) = mpsc::channel::<()>();
        let blocked = Arc::new(std::sync::Mutex::new(blocked));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let jobs: Vec<_> = (0..6)
                .map(|i| {
                    let blocked = blocked.clone();
                    Box::pin(pool.run(move || {
                        let _ = blocked.lock().unwrap().recv();
                        i
                    }))
                })
                .collect();
            let mut jobs = jobs;
            for j in &mut jobs {
                assert!(futures_util::FutureExt::now_or_never(j).is_none());
                // Let a started thread reach its queue before the next job is offered.
                std::thread::sleep(Duration::from_millis(20));
            }
            assert_eq!(pool.threads(), 3, "bounded");
            for _ in 0..6 {
                release.send(()).unwrap();
            }
            let mut done: Vec<i32> = Vec::new();
            for j in jobs {
                done.push(j.await.unwrap());
            }
            assert_eq!(done, [0, 1, 2, 3, 4, 5]);
        });
    }

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
