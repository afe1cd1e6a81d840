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

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use rustix::process::{getpid, Pid};

use crate::atomic::Dir;
use crate::maint::victim::Victim;

/// How many victims may wait for the thread.
const QUEUE: usize = 8;

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
    queue: SyncSender<Victim>,
    thread: JoinHandle<()>,
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
    pub(crate) fn remove(&self, objects: &Arc<Dir>, victims: Vec<Victim>) {
        let mut pending = victims.into_iter().peekable();
        if pending.peek().is_some() && self.owner == getpid() {
            let worker = self
                .worker
                .get_or_init(|| Worker::start(Arc::clone(objects)));
            if let Some(w) = worker {
                for v in pending.by_ref() {
                    if let Err(TrySendError::Full(v) | TrySendError::Disconnected(v)) =
                        w.queue.try_send(v)
                    {
                        v.remove_rest(objects);
                        break;
                    }
                }
            }
        }
        for v in pending {
            v.remove_rest(objects);
        }
    }
}

impl Worker {
    fn start(objects: Arc<Dir>) -> Option<Worker> {
        let (queue, victims) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("fscache-remover".into())
            .spawn(move || drain(&objects, victims))
            .ok()?;
        Some(Worker { queue, thread })
    }
}

/// The thread: remove each victim handed over until the queue is dropped.
fn drain(objects: &Dir, victims: Receiver<Victim>) {
    for v in victims {
        crate::failpoint!("remover-before-remove");
        v.remove_rest(objects);
    }
}

impl Drop for Remover {
    fn drop(&mut self) {
        let Some(Some(w)) = self.worker.take() else {
            return;
        };
        if self.owner != getpid() {
            // A forked child's copy: the thread is not here, and the
            // queue's state is whatever it was mid-operation in the parent.
            std::mem::forget(w);
            return;
        }
        drop(w.queue);
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
