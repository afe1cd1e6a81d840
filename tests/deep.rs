//! Trees deeper than the stack or the descriptor limit. A stored tree may
//! have any shape, and anyone who can write to the cache can plant an
//! orphan: measuring and removing must neither overflow the stack nor run
//! out of descriptors, whatever the depth.

mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;

use common::*;
use fscache::{Commit, Eviction, FsCache, MaxSize};
use rustix::fs::{fstat, mkdirat, openat, statat, AtFlags, Dir, FileType, Mode, OFlags};

const APP: &str = "fscache-tests";

/// A stack far too small for one frame per level of the trees below.
const SMALL_STACK: usize = 256 * 1024;

fn open_dir(parent: impl AsFd, name: &str) -> OwnedFd {
    openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .expect("open a directory of the chain")
}

/// Make a chain of `depth` directories named `d` in `dir`, with a file of
/// `bytes` at the bottom, holding one descriptor at a time.
fn plant_chain(dir: &Path, depth: usize, bytes: usize) {
    let mut fd = open_dir(rustix::fs::CWD, dir.to_str().expect("UTF-8 path"));
    for _ in 0..depth {
        mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).expect("mkdir");
        fd = open_dir(&fd, "d");
    }
    let file = openat(
        &fd,
        "bottom",
        OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .expect("create the bottom file");
    rustix::io::write(&file, &vec![5u8; bytes]).expect("write the bottom file");
}

/// What `dir` and everything below it occupies, counted the way FORMAT.md
/// says, for a tree whose only subdirectories form a chain of `d`s.
fn chain_usage(dir: &Path) -> u64 {
    let mut fd = open_dir(rustix::fs::CWD, dir.to_str().expect("UTF-8 path"));
    let mut total = 0;
    loop {
        total += fstat(&fd).expect("fstat").st_blocks as u64 * 512;
        let mut deeper = false;
        for entry in Dir::read_from(&fd).expect("list") {
            let entry = entry.expect("entry");
            let name = entry.file_name();
            match name.to_bytes() {
                b"." | b".." => {}
                b"d" => deeper = true,
                _ => {
                    let st = statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW).expect("stat");
                    assert_ne!(FileType::from_raw_mode(st.st_mode), FileType::Directory);
                    total += st.st_blocks as u64 * 512;
                }
            }
        }
        if !deeper {
            return total;
        }
        fd = open_dir(&fd, "d");
    }
}

/// Run `f` on a thread with [`SMALL_STACK`]; a stack overflow aborts the
/// whole test binary, which fails the test as loudly as anything can.
fn on_a_small_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(SMALL_STACK)
            .spawn_scoped(s, f)
            .expect("spawn")
            .join()
            .expect("no panic")
    })
}

#[test]
fn a_tree_deeper_than_the_stack_allows_is_measured_evicted_and_swept() -> TestResult {
    const DEPTH: usize = 5_000;
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let cache = FsCache::open(APP, &root)?;

    let guard = cache.store("deep")?;
    plant_chain(guard.path(), DEPTH, 3000);
    let expected = chain_usage(guard.path());
    let outcome = on_a_small_stack(|| guard.commit().map_err(fscache::Error::from))?;
    assert_eq!(outcome, Commit::Stored { size: expected });
    assert!(cache.load("deep")?.is_some());
    assert_exact(&root);

    let evicted = on_a_small_stack(|| cache.evict("deep"))?;
    assert_eq!(evicted, Eviction::Removed { size: expected });
    assert!(names(&root.join("objects")).is_empty());

    // An orphan nobody holds, as a crashed or hostile writer leaves it.
    let orphan = root.join("objects/uuid-00000000000000000000000000000000");
    std::fs::create_dir_all(orphan.join("data"))?;
    std::fs::write(orphan.join("object.lock"), "")?;
    plant_chain(&orphan.join("data"), DEPTH, 1);
    let swept = on_a_small_stack(|| cache.sweep_orphans())?;
    assert_eq!(swept.orphan_dirs, 1);
    assert!(names(&root.join("objects")).is_empty());
    assert_exact(&root);
    Ok(())
}

#[test]
fn a_tree_deeper_than_the_descriptor_limit_is_measured_evicted_and_swept() {
    const DEPTH: usize = 400;
    const HEADROOM: usize = 24;
    let Some(prlimit) = prlimit() else {
        println!("SKIPPED deep-tree descriptor test: `prlimit` is not installed");
        return;
    };
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let mut w = {
        let mut cmd = Worker::command(&root);
        cmd.stderr(Stdio::piped());
        Worker::from_command(cmd)
    };
    assert_eq!(w.next_line(), "ready");
    // Far fewer descriptors than the tree has levels.
    w.limit_descriptors(&prlimit, HEADROOM);

    let data = w.ask("store deep 1000");
    let data = data.strip_prefix("storing ").expect("a store guard");
    plant_chain(Path::new(data), DEPTH, 3000);
    let expected = chain_usage(Path::new(data));
    assert_eq!(w.ask("commit"), format!("stored {expected}"));
    assert_exact(&root);
    assert_eq!(w.ask("evict deep"), format!("evicted {expected}"));
    assert!(names(&root.join("objects")).is_empty());

    let orphan = root.join("objects/uuid-00000000000000000000000000000000");
    std::fs::create_dir_all(orphan.join("data")).expect("plant an orphan");
    std::fs::write(orphan.join("object.lock"), "").expect("plant a lock");
    plant_chain(&orphan.join("data"), DEPTH, 1);
    assert_eq!(w.ask("sweep"), "swept 1 0 0 0 0");
    assert!(names(&root.join("objects")).is_empty());
    assert_exact(&root);
    let (status, stderr) = w.finish();
    assert!(status.success(), "{status:?} {stderr}");
}
