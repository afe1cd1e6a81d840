//! Removing evicted entries off the committing thread's path.
//!
//! A store into a full cache evicts about one entry, and most of what that
//! costs is removing the victim's files (on a disk that discards freed
//! blocks, a millisecond). By then the victim is already out of the cache:
//! its `object.info` is unlinked and its bytes moved, so nothing but disk
//! space waits on the rest. A handle therefore hands such victims, still
//! locked, to a thread of its own, which removes them in the protocol's
//! order while the store returns.
//!
//! The thread is woken for a batch of [`WAKE_AT`] victims, not for each
//! one (waking a sleeping thread is the dearest part of a handover); a
//! smaller batch waits at most [`LINGER`], and the first victim after a
//! quiet spell wakes it at once.
//!
//! Bounds, so that the thread can never be what a store waits for:
//! - The queue holds [`QUEUE`] victims. When it is full (the disk removes
//!   slower than the caller stores), the caller removes its own victims,
//!   and the disk space freed late is never more than [`QUEUE`] entries.
//! - The thread starts on the first handover; if it cannot be started, the
//!   caller removes its own victims.
//! - After a `fork`, the child has the handle but not the thread, nor any
//!   lock the thread held at that moment: a handle that finds itself in
//!   another process removes its own victims and never touches the queue,
//!   not even to drop it.
//!
//! Dropping the handle waits for the queue to drain, so that when the last
//! clone of a cache is gone, so are its victims. A process that exits
//! with victims queued leaves entries without `object.info` and, once its
//! locks go with it, unlocked: an invalid entry, which a sweep (ours or
//! osbuild's) removes.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::process::{getpid, Pid};

use crate::atomic::Dir;
use crate::maint::victim::Victim;

/// How many victims may wait for the thread.
const QUEUE: usize = 8;

/// How many waiting victims make a store wake the thread. Waking a thread
/// asleep on the other core costs the waker more than anything else in
/// the handover (8% of a full store on this machine, `perf record`), so
/// the thread is woken for a batch, not for each victim.
const WAKE_AT: usize = 4;

/// How long fewer victims than [`WAKE_AT`] wait for the thread, which
/// then wakes by itself: the most a victim's name stays taken and its
/// space used after the store that evicted it.
const LINGER: Duration = Duration::from_millis(10);

/// A handle's remover thread, started when first needed.
#[derive(Debug)]
pub(crate) struct Remover {
    /// The process that opened the handle: the only one the thread, the
    /// queue and the lock around starting them belong to.
    owner: Pid,
    /// The thread and its queue, or `None` if it could not be started.
    worker: OnceLock<Option<Worker>>,
}

#[derive(Debug)]
struct Worker {
    shared: Arc<Shared>,
    thread: JoinHandle<()>,
}

/// What the handle and its thread share.
#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when [`WAKE_AT`] victims wait, and when the handle goes.
    ready: Condvar,
}

#[derive(Debug, Default)]
struct Queue {
    victims: Vec<Victim>,
    thread: Thread,
    /// The handle is gone: remove what is left and end.
    closed: bool,
}

/// What the thread is doing, which says when a handover must wake it: a
/// wake is a system call, and waking a sleeping thread the dearest one.
#[derive(Debug, Default)]
enum Thread {
    /// Removing: it looks at the queue again when done.
    #[default]
    Busy,
    /// Waiting at most [`LINGER`] for a batch: wake it for [`WAKE_AT`].
    Lingering,
    /// Waiting for anything, after a [`LINGER`] with nothing to do: wake
    /// it for the first victim.
    Idle,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Remover {
    pub(crate) fn new() -> Remover {
        Remover {
            owner: getpid(),
            worker: OnceLock::new(),
        }
    }

    /// Remove `victims` (taken out of the cache in `objects`): in the
    /// thread if it has room, else here.
    pub(crate) fn remove(&self, objects: &Arc<Dir>, mut victims: Vec<Victim>) {
        if !victims.is_empty() && self.owner == getpid() {
            let worker = self
                .worker
                .get_or_init(|| Worker::start(Arc::clone(objects)));
            if let Some(w) = worker {
                let mut q = w.shared.queue();
                let room = QUEUE.saturating_sub(q.victims.len()).min(victims.len());
                q.victims.extend(victims.drain(..room));
                let wake = match q.thread {
                    Thread::Busy => false,
                    Thread::Lingering => q.victims.len() >= WAKE_AT,
                    Thread::Idle => true,
                };
                if wake {
                    q.thread = Thread::Busy;
                    w.shared.ready.notify_one();
                }
            }
        }
        for v in victims {
            v.remove_rest(objects);
        }
    }
}

impl Worker {
    fn start(objects: Arc<Dir>) -> Option<Worker> {
        let shared = Arc::new(Shared::default());
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("fscache-remover".into())
            .spawn(move || drain(&objects, &theirs))
            .ok()?;
        Some(Worker { shared, thread })
    }
}

/// The thread: remove victims a batch at a time, or whatever waits after
/// [`LINGER`], until the handle is gone and nothing is left.
fn drain(objects: &Dir, shared: &Shared) {
    let mut q = shared.queue();
    let mut lingered = false;
    loop {
        let due = q.victims.len() >= WAKE_AT || ((lingered || q.closed) && !q.victims.is_empty());
        if due {
            let batch = std::mem::take(&mut q.victims);
            q.thread = Thread::Busy;
            drop(q);
            for v in batch {
                crate::failpoint!("remover-before-remove");
                v.remove_rest(objects);
            }
            q = shared.queue();
            lingered = false;
            continue;
        }
        if q.closed {
            return;
        }
        if lingered {
            // A whole LINGER and nothing came.
            q.thread = Thread::Idle;
            q = shared.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            continue;
        }
        q.thread = Thread::Lingering;
        let (woken, waited) = shared
            .ready
            .wait_timeout(q, LINGER)
            .unwrap_or_else(|p| p.into_inner());
        q = woken;
        lingered = waited.timed_out();
    }
}

impl Drop for Remover {
    fn drop(&mut self) {
        let Some(Some(w)) = self.worker.take() else {
            return;
        };
        if self.owner != getpid() {
            // A forked child's copy: the thread is not here, and the
            // queue's lock is in whatever state the parent's was.
            std::mem::forget(w);
            return;
        }
        {
            let mut q = w.shared.queue();
            q.closed = true;
            w.shared.ready.notify_one();
        }
        let _ = w.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FsCache, MaxSize};

    #[test]
    fn a_handle_used_in_a_forked_child_removes_its_victims_itself_and_starts_no_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = FsCache::open("fscache-tests", dir.path()).expect("open");
        cache.set_maximum_size(MaxSize::Unlimited).expect("max");
        for name in ["a", "b"] {
            let e = cache.store(name).expect("store");
            assert!(e.commit().expect("commit").is_stored());
        }
        let victims = cache.unlink_lru(u64::MAX).into_taken();
        assert_eq!(victims.len(), 2);
        // What a child sees after `fork`: a handle another process opened.
        let in_child = Remover {
            owner: Pid::INIT,
            worker: OnceLock::new(),
        };
        in_child.remove(cache.objects(), victims);
        assert!(in_child.worker.get().is_none(), "a thread was started");
        for name in ["a", "b"] {
            assert!(!dir.path().join("objects").join(name).exists(), "{name}");
        }
    }
}
