//! Trees in and out: `store_tree`, `copy_in`, `copy_out` and
//! `StageGuard::promote`. A copy keeps the tree's shape, modes, times,
//! links and hard links, never follows a link out of it, refuses what it
//! cannot copy, and leaves nothing behind when it fails; on a file system
//! with reflinks its blocks are shared (a root-only test on an XFS or
//! Btrfs loop image, skipped with a message otherwise). A promotion that
//! fails on a full file system (a root-only tmpfs) gives its stage back.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use fscache::{Commit, ErrorKind, FsCache, MaxSize, Op};
use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};

const APP: &str = "fscache-tests";

fn open(root: &Path) -> fscache::Result<FsCache> {
    FsCache::open(APP, root)
}

/// Nothing anonymous is left in `objects/` or `stage/`, and `cache.size`
/// is exactly the sum of the entries.
#[track_caller]
fn assert_clean(root: &Path, context: &str) {
    for dir in ["objects", "stage"] {
        let left: Vec<_> = names(&root.join(dir))
            .into_iter()
            .filter(|n| n.starts_with("uuid-"))
            .collect();
        assert!(left.is_empty(), "{context}: left in {dir}/: {left:?}");
    }
    assert_exact(root);
}

fn ts(sec: i64, nsec: i64) -> Timespec {
    Timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

/// The access time every node of the sample tree is given.
const ATIME: (i64, i64) = (1_500_000_000, 111_111_111);

/// Give `path` (not following a link) the sample atime and a modification
/// time of its own.
fn stamp(path: &Path, mtime: i64) -> std::io::Result<()> {
    let times = Timestamps {
        last_access: ts(ATIME.0, ATIME.1),
        last_modification: ts(mtime, 123_456_789),
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// The sample tree's nodes, children before their directories (a
/// directory's times are set after what is put into it), with the mode
/// each gets (`None` for links).
const NODES: &[(&str, Option<u32>)] = &[
    ("top.txt", Some(0o644)),
    ("private", Some(0o600)),
    ("a/b/c/deep.txt", Some(0o640)),
    ("a/b/c", Some(0o755)),
    ("a/b/tool", Some(0o755)),
    ("a/b", Some(0o755)),
    ("a/first", Some(0o644)),
    ("a", Some(0o755)),
    ("ro/inside", Some(0o444)),
    ("ro", Some(0o555)),
    ("shared", Some(0o2775)),
    ("other/second", None), // a hard link to a/first
    ("other", Some(0o700)),
    ("escape", None),      // -> the outside directory, absolute
    ("escape-file", None), // -> ../outside/precious, relative
    ("loop", None),        // -> loop
    ("", Some(0o755)),     // the root itself
];

/// Build the sample tree at `src`, next to an `outside` directory that its
/// links point into.
fn sample(src: &Path, outside: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(outside)?;
    std::fs::write(outside.join("precious"), b"outside the tree")?;
    std::fs::create_dir_all(src.join("a/b/c"))?;
    std::fs::create_dir_all(src.join("ro"))?;
    std::fs::create_dir_all(src.join("shared"))?;
    std::fs::create_dir_all(src.join("other"))?;
    std::fs::write(src.join("top.txt"), b"top")?;
    std::fs::write(src.join("private"), b"secret")?;
    std::fs::write(src.join("a/b/c/deep.txt"), vec![7u8; 70_000])?;
    std::fs::write(src.join("a/b/tool"), b"#!/bin/sh\necho hi\n")?;
    std::fs::write(src.join("a/first"), b"one inode, two names")?;
    std::fs::hard_link(src.join("a/first"), src.join("other/second"))?;
    std::fs::write(src.join("ro/inside"), b"read only")?;
    symlink(outside, src.join("escape"))?;
    symlink("../outside/precious", src.join("escape-file"))?;
    symlink("loop", src.join("loop"))?;
    restamp(src)
}

/// Set every mode and time of the sample tree (again: reading a tree
/// moves its access times).
fn restamp(src: &Path) -> std::io::Result<()> {
    for (i, (rel, mode)) in NODES.iter().enumerate() {
        let path = src.join(rel);
        if let Some(mode) = mode {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))?;
        }
        stamp(&path, 1_600_000_000 + i as i64 * 1000)?;
    }
    Ok(())
}

/// What a node is, without its content: kind, mode, times, link target.
#[derive(Debug, PartialEq)]
struct Node {
    kind: &'static str,
    mode: u32,
    mtime: (i64, i64),
    /// Not for directories: listing one moves it, and committing an entry
    /// lists every directory in it (to measure it).
    atime: Option<(i64, i64)>,
    target: Option<PathBuf>,
}

/// Every node below `root` (the root as ""), each looked at before it is
/// listed, so that the listing does not move the access time recorded.
/// Also the groups of names that share an inode.
fn snapshot(root: &Path) -> (BTreeMap<PathBuf, Node>, Vec<Vec<PathBuf>>) {
    let mut nodes = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let path = root.join(&rel);
        let md = std::fs::symlink_metadata(&path).expect("stat a node of the copy");
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "link"
        } else if ft.is_file() {
            "file"
        } else {
            "other"
        };
        let target = ft
            .is_symlink()
            .then(|| std::fs::read_link(&path).expect("read a link"));
        nodes.insert(
            rel.clone(),
            Node {
                kind,
                mode: if ft.is_symlink() {
                    0
                } else {
                    md.mode() & 0o7777
                },
                mtime: (md.mtime(), md.mtime_nsec()),
                atime: (!ft.is_dir()).then(|| (md.atime(), md.atime_nsec())),
                target,
            },
        );
        if !ft.is_dir() {
            inodes.entry(md.ino()).or_default().push(rel.clone());
        }
        if ft.is_dir() {
            for e in std::fs::read_dir(&path).expect("list a directory of the copy") {
                todo.push(rel.join(e.expect("list").file_name()));
            }
        }
    }
    let mut groups: Vec<Vec<PathBuf>> = inodes
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    groups.sort();
    (nodes, groups)
}

/// Every regular file below `a` has the same content below `b`.
#[track_caller]
fn assert_same_content(a: &Path, b: &Path, nodes: &BTreeMap<PathBuf, Node>) {
    for (rel, node) in nodes {
        if node.kind == "file" {
            assert_eq!(
                std::fs::read(a.join(rel)).ok(),
                std::fs::read(b.join(rel)).ok(),
                "{} differs",
                rel.display()
            );
        }
    }
}

/// The names in `dir` and the content and mtime of the file `precious`.
fn outside_state(dir: &Path) -> (Vec<String>, Vec<u8>, i64) {
    let precious = dir.join("precious");
    (
        names(dir),
        std::fs::read(&precious).unwrap_or_default(),
        std::fs::metadata(&precious).map(|m| m.mtime()).unwrap_or(0),
    )
}

#[test]
fn a_tree_comes_out_as_it_went_in_with_its_links_hard_links_modes_and_times() -> TestResult {
    let (t, root) = new_cache(MaxSize::Unlimited);
    let src = t.path().join("src");
    let outside = t.path().join("outside");
    sample(&src, &outside)?;
    let before_outside = outside_state(&outside);
    let (want, want_groups) = snapshot(&src);
    restamp(&src)?;
    assert_eq!(
        want_groups,
        vec![vec![
            PathBuf::from("a/first"),
            PathBuf::from("other/second")
        ]],
        "the sample has one hard-linked pair"
    );

    let cache = open(&root)?;
    let outcome = cache.store_tree("tree", &src)?;
    assert!(outcome.is_stored(), "stored: {outcome}");
    let dest = t.path().join("dest");
    let copied = cache
        .copy_out("tree", &dest)?
        .expect("the entry was just stored");

    let (got, got_groups) = snapshot(&dest);
    for (rel, node) in &want {
        assert!(
            node.atime.is_none_or(|a| a == ATIME),
            "{}: the sample's access times are the ones it was given",
            rel.display()
        );
        let copy = got.get(rel);
        assert_eq!(copy, Some(node), "{} in the copy", rel.display());
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the copy has exactly the tree's names"
    );
    assert_eq!(
        got_groups, want_groups,
        "the hard-linked pair is one inode in the copy"
    );
    assert_same_content(&src, &dest, &want);
    assert_eq!(
        (
            copied.files,
            copied.directories,
            copied.symlinks,
            copied.hard_links
        ),
        (6, 6, 3, 1),
        "{copied:?}"
    );
    assert_eq!(
        outside_state(&outside),
        before_outside,
        "nothing outside the tree was followed into or touched"
    );
    assert_eq!(
        std::fs::read_link(dest.join("escape"))?,
        outside,
        "the link out is still a link, to where it pointed"
    );
    assert_clean(&root, "after store_tree and copy_out");
    Ok(())
}

#[test]
fn a_single_file_is_stored_under_its_file_name_and_comes_out_in_a_new_directory() -> TestResult {
    let (t, root) = new_cache(MaxSize::Unlimited);
    let file = t.path().join("report.txt");
    std::fs::write(&file, b"all green")?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640))?;
    stamp(&file, 1_234_567_890)?;
    let cache = open(&root)?;
    assert!(cache.store_tree("report", &file)?.is_stored());
    let hit = cache.load("report")?.expect("just stored");
    assert_eq!(
        names(hit.path()),
        vec!["report.txt".to_owned()],
        "data/ holds the file under its name"
    );
    let dest = t.path().join("out");
    let copied = hit.copy_out(&dest)?;
    assert_eq!((copied.files, copied.bytes), (1, 9), "{copied:?}");
    let md = std::fs::metadata(dest.join("report.txt"))?;
    assert_eq!(std::fs::read(dest.join("report.txt"))?, b"all green");
    assert_eq!(md.mode() & 0o7777, 0o640, "the mode is kept");
    assert_eq!(
        (md.mtime(), md.mtime_nsec()),
        (1_234_567_890, 123_456_789),
        "the mtime is kept"
    );
    drop(hit);
    assert_clean(&root, "after a single file");
    Ok(())
}

#[test]
fn a_source_that_is_a_link_is_stored_as_that_link() -> TestResult {
    let (t, root) = new_cache(MaxSize::Unlimited);
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside)?;
    std::fs::write(outside.join("precious"), b"not to be copied")?;
    let link = t.path().join("link");
    symlink(&outside, &link)?;
    let cache = open(&root)?;
    assert!(cache.store_tree("link", &link)?.is_stored());
    let hit = cache.load("link")?.expect("just stored");
    let stored = hit.path().join("link");
    assert!(
        std::fs::symlink_metadata(&stored)?.file_type().is_symlink(),
        "stored as a link, not as the directory it points to"
    );
    assert_eq!(std::fs::read_link(&stored)?, outside);
    Ok(())
}

#[test]
fn copying_out_refuses_a_destination_that_exists_and_leaves_it_as_it_was() -> TestResult {
    let (t, root) = new_cache(MaxSize::Unlimited);
    let cache = open(&root)?;
    let entry = cache.store("e")?;
    std::fs::write(entry.path().join("f"), b"entry")?;
    assert!(entry.commit()?.is_stored());

    let dest = t.path().join("dest");
    std::fs::create_dir(&dest)?;
    std::fs::write(dest.join("mine"), b"the caller's")?;
    let dangling = t.path().join("dangling");
    let target = t.path().join("made-through-the-link");
    symlink(&target, &dangling)?;
    for existing in [&dest, &dangling] {
        let e = cache
            .copy_out("e", existing)
            .expect_err("the destination exists");
        assert_eq!(e.kind(), ErrorKind::Io, "{e:?}");
        assert_eq!(
            e.io_error().and_then(std::io::Error::raw_os_error),
            Some(rustix::io::Errno::EXIST.raw_os_error()),
            "{e:?}"
        );
        assert_eq!(e.path(), Some(existing.as_path()), "names the destination");
        assert!(e.to_string().contains("create directory"), "{e}");
    }
    assert_eq!(names(&dest), vec!["mine".to_owned()], "left as it was");
    assert!(!target.exists(), "the dangling link was not followed");

    assert!(
        cache.copy_out("missing", t.path().join("none"))?.is_none(),
        "a miss copies nothing"
    );
    assert!(!t.path().join("none").exists(), "a miss creates nothing");
    let fresh = t.path().join("fresh");
    assert!(cache.copy_out("e", &fresh)?.is_some());
    assert_eq!(std::fs::read(fresh.join("f"))?, b"entry");
    assert_clean(&root, "after the refusals");
    Ok(())
}

/// Put a fifo at `path`.
fn mkfifo(path: &Path) -> std::io::Result<()> {
    rustix::fs::mknodat(
        CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )?;
    Ok(())
}

#[test]
fn fifos_sockets_and_devices_are_refused_by_name_and_nothing_is_left() -> TestResult {
    let (t, root) = new_cache(MaxSize::Unlimited);
    let cache = open(&root)?;
    let mut specials = vec!["fifo", "socket"];
    if is_root() {
        specials.push("device");
    } else {
        println!("SKIPPED the device-file case: mknod of a device needs root");
    }
    for special in specials {
        let src = t.path().join(format!("src-{special}"));
        std::fs::create_dir_all(src.join("sub"))?;
        std::fs::write(src.join("sub/fine"), b"a regular file")?;
        let bad = src.join("sub").join(special);
        let _listener;
        match special {
            "fifo" => mkfifo(&bad)?,
            "socket" => _listener = std::os::unix::net::UnixListener::bind(&bad)?,
            _ => rustix::fs::mknodat(
                CWD,
                &bad,
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::from_raw_mode(0o600),
                rustix::fs::makedev(1, 3),
            )?,
        }
        let e = cache
            .store_tree(special, &src)
            .expect_err("a special file is refused");
        assert_eq!(e.path(), Some(bad.as_path()), "{special}: {e}");
        assert!(
            matches!(e, fscache::Error::Io { op: Op::Copy, .. }),
            "{special}: {e:?}"
        );
        let why = std::error::Error::source(&e).map(ToString::to_string);
        assert!(
            why.as_deref().is_some_and(|w| w.contains("not copied")),
            "{special}: {why:?}"
        );
        assert!(cache.load(special)?.is_none(), "{special}: nothing stored");
        assert_clean(&root, special);
    }
    Ok(())
}

#[test]
fn a_copy_out_that_fails_removes_what_it_made() -> TestResult {
    let (t, root) = new_cache(MaxSize::Unlimited);
    let cache = open(&root)?;
    // Only a hand can put a fifo into an entry: store one so.
    let entry = cache.store("with-fifo")?;
    std::fs::create_dir_all(entry.path().join("ro/deeper"))?;
    std::fs::write(entry.path().join("ro/deeper/f"), b"x")?;
    std::fs::set_permissions(
        entry.path().join("ro"),
        std::fs::Permissions::from_mode(0o555),
    )?;
    mkfifo(&entry.path().join("zz-fifo"))?;
    assert!(entry.commit()?.is_stored());
    let dest = t.path().join("dest");
    let e = cache
        .copy_out("with-fifo", &dest)
        .expect_err("the fifo is refused");
    assert!(
        e.path().is_some_and(|p| p.ends_with("data/zz-fifo")),
        "names the fifo in the entry: {e}"
    );
    assert!(!dest.exists(), "the partial copy is removed: {e}");
    assert_clean(&root, "after the failed copy");
    Ok(())
}

#[test]
fn a_destination_inside_the_tree_stops_the_copy_before_it_grows() -> TestResult {
    let (t, root) = new_cache(MaxSize::Unlimited);
    // The cache lives inside the tree to store: the entry's data/ is met
    // on the way down.
    let cache = open(&root)?;
    std::fs::write(t.path().join("file"), b"x")?;
    let e = cache
        .store_tree("itself", t.path())
        .expect_err("the entry is inside the tree");
    let why = std::error::Error::source(&e).map(ToString::to_string);
    assert!(
        why.as_deref()
            .is_some_and(|w| w.contains("inside the tree")),
        "{e}: {why:?}"
    );
    assert_clean(&root, "after the refusal");
    Ok(())
}

#[test]
fn a_promoted_stage_is_stored_under_its_name_without_a_copy() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let cache = open(&root)?;
    let stage = cache.stage()?;
    std::fs::create_dir(stage.path().join("out"))?;
    std::fs::write(stage.path().join("out/result"), b"42")?;
    let ino = std::fs::metadata(stage.path().join("out/result"))?.ino();
    let outcome = stage.promote("answer")?;
    let Commit::Stored { size } = outcome else {
        panic!("promoted: {outcome}")
    };
    let hit = cache.load("answer")?.expect("just promoted");
    assert_eq!(std::fs::read(hit.path().join("out/result"))?, b"42");
    assert_eq!(
        std::fs::metadata(hit.path().join("out/result"))?.ino(),
        ino,
        "moved, not copied"
    );
    assert_eq!(hit.info().size, size);
    assert_eq!(cache.counters().stored, 1);
    drop(hit);
    assert_clean(&root, "after promote");
    Ok(())
}

#[test]
fn a_stage_promoted_onto_a_taken_name_is_removed_and_the_other_entry_wins() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let cache = open(&root)?;
    let first = cache.stage()?;
    std::fs::write(first.path().join("who"), b"first")?;
    assert!(first.promote("name")?.is_stored());
    let second = cache.stage()?;
    std::fs::write(second.path().join("who"), b"second")?;
    let path = second.path().to_owned();
    assert_eq!(second.promote("name")?, Commit::NameTaken);
    assert!(!path.exists(), "the losing stage is gone");
    let hit = cache.load("name")?.expect("the first entry stays");
    assert_eq!(std::fs::read(hit.path().join("who"))?, b"first");
    drop(hit);
    assert_clean(&root, "after a taken name");
    Ok(())
}

#[test]
fn a_stage_promoted_into_a_cache_that_holds_nothing_is_too_large_and_removed() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Bytes(0));
    let cache = open(&root)?;
    let stage = cache.stage()?;
    std::fs::write(stage.path().join("f"), vec![1u8; 10_000])?;
    let path = stage.path().to_owned();
    let outcome = stage.promote("big")?;
    assert!(
        matches!(
            outcome,
            Commit::TooLarge {
                max: MaxSize::Bytes(0),
                ..
            }
        ),
        "{outcome}"
    );
    assert!(!path.exists(), "the stage is gone");
    assert!(cache.load("big")?.is_none());
    assert_clean(&root, "after too large");
    Ok(())
}

#[test]
fn a_stage_promoted_under_an_invalid_name_comes_back_whole() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let cache = open(&root)?;
    let stage = cache.stage()?;
    std::fs::write(stage.path().join("f"), b"kept")?;
    let path = stage.path().to_owned();
    let e = stage
        .promote("a/b")
        .expect_err("a name with a slash is refused");
    assert_eq!(e.error.kind(), ErrorKind::InvalidName, "{e}");
    let back = e.guard.expect("the stage comes back");
    assert_eq!(back.path(), path);
    assert_eq!(std::fs::read(back.path().join("f"))?, b"kept");
    // Still ours: a sweep leaves it alone.
    let swept = cache.sweep_orphans()?;
    assert_eq!(swept.orphan_dirs, 0, "{swept:?}");
    assert!(path.exists());
    assert!(
        back.promote("good")?.is_stored(),
        "and may be promoted again"
    );
    assert_clean(&root, "after the retry");
    Ok(())
}

/// Fill the file system of `dir` to the last page; the file to truncate
/// to give the space back.
fn fill(dir: &Path) -> std::io::Result<std::fs::File> {
    use std::io::Write;
    let mut file = std::fs::File::create(dir.join("filler"))?;
    let chunk = [0xa5u8; 4096];
    loop {
        match file.write(&chunk) {
            Ok(0) => return Ok(file),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) => {
                return Ok(file)
            }
            Err(e) => return Err(e),
        }
    }
}

#[test]
fn a_promotion_whose_commit_fails_hands_the_stage_back_in_stage_and_may_be_retried() -> TestResult {
    let test = "a_promotion_whose_commit_fails_hands_the_stage_back_in_stage_and_may_be_retried";
    let Some(fs) = Tmpfs::mount(test, "size=512k") else {
        return Ok(());
    };
    let root = fs.path().join("cache");
    let cache = open(&root)?;
    cache.set_maximum_size(MaxSize::Unlimited)?;
    let stage = cache.stage()?;
    std::fs::write(stage.path().join("f"), vec![3u8; 5000])?;
    let filler = fill(fs.path())?;
    // The new total in cache.size cannot be written: the commit fails.
    let failed = stage
        .promote("wanted")
        .expect_err("cache.size cannot be rewritten on a full file system");
    assert_eq!(
        failed
            .error
            .io_error()
            .and_then(std::io::Error::raw_os_error),
        Some(rustix::io::Errno::NOSPC.raw_os_error()),
        "{failed}"
    );
    assert_eq!(
        failed.error.path(),
        Some(root.join("cache.size").as_path()),
        "the commit failed, after the move: {failed}"
    );
    let back = failed.guard.expect("the stage comes back");
    assert!(
        back.path().starts_with(root.join("stage")),
        "back in stage/: {}",
        back.path().display()
    );
    assert_eq!(std::fs::read(back.path().join("f"))?, vec![3u8; 5000]);
    assert!(cache.load("wanted")?.is_none(), "nothing was published");
    assert!(
        !names(&root.join("objects"))
            .iter()
            .any(|n| n.starts_with("uuid-")),
        "nothing is left in objects/"
    );
    assert_exact(&root);
    filler.set_len(0)?;
    assert!(back.promote("wanted")?.is_stored(), "the retry stores it");
    assert_clean(&root, "after the retry");
    Ok(())
}

// ---------------------------------------------------------------------------
// Block sharing: a reflink file system on a loop image (root only).
// ---------------------------------------------------------------------------

/// `name` on `PATH`, or in the `sbin` directories root's `PATH` may lack.
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A loop-mounted file system that shares blocks, unmounted on drop.
struct ReflinkFs {
    dir: tempfile::TempDir,
    kind: &'static str,
}

impl ReflinkFs {
    /// Make and mount an XFS image with reflink (or a Btrfs one), or say
    /// why the test is skipped.
    fn mount(test: &str) -> Option<ReflinkFs> {
        if !is_root() {
            println!("SKIPPED {test}: mounting a loop image needs root");
            return None;
        }
        let (kind, mkfs, args): (_, _, &[&str]) = if let Some(p) = tool("mkfs.xfs") {
            ("xfs", p, &["-q", "-m", "reflink=1"])
        } else if let Some(p) = tool("mkfs.btrfs") {
            ("btrfs", p, &["-q"])
        } else {
            println!("SKIPPED {test}: neither mkfs.xfs (xfsprogs) nor mkfs.btrfs is installed");
            return None;
        };
        let Some(mount) = tool("mount") else {
            println!("SKIPPED {test}: mount is not installed");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("fscache-reflink-")
            .tempdir()
            .expect("a directory for the image");
        let img = dir.path().join("img");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(300 << 20))
            .expect("a sparse image file");
        let made = Command::new(&mkfs).args(args).arg(&img).output();
        match made {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                println!(
                    "SKIPPED {test}: {} failed: {}",
                    mkfs.display(),
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                return None;
            }
            Err(e) => {
                println!("SKIPPED {test}: cannot run {}: {e}", mkfs.display());
                return None;
            }
        }
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("a mount point");
        let mounted = Command::new(mount)
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt)
            .output();
        match mounted {
            Ok(o) if o.status.success() => Some(ReflinkFs { dir, kind }),
            Ok(o) => {
                println!(
                    "SKIPPED {test}: mount -o loop failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                println!("SKIPPED {test}: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// Bytes free for us, as `statvfs` counts them.
    fn free(&self) -> u64 {
        let st = rustix::fs::statvfs(self.path()).expect("statvfs");
        st.f_bavail * st.f_frsize
    }
}

impl Drop for ReflinkFs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(self.path()).status();
        }
    }
}

/// Make the file's data durable, so that free space counts it.
#[allow(clippy::disallowed_methods)] // a test helper, not the crate's durability
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

const MIB: u64 = 1 << 20;

#[test]
fn on_a_reflink_file_system_stored_and_copied_out_files_share_their_blocks() -> TestResult {
    let test = "on_a_reflink_file_system_stored_and_copied_out_files_share_their_blocks";
    let Some(fs) = ReflinkFs::mount(test) else {
        return Ok(());
    };
    let disabled = std::env::var("FSCACHE_DISABLE").unwrap_or_default();
    let no_clone = disabled.contains("ficlone");
    let no_range = disabled.contains("copy_file_range");
    let root = fs.path().join("cache");
    let cache = open(&root)?;
    cache.set_maximum_size(MaxSize::Unlimited)?;
    std::fs::create_dir(fs.path().join("src"))?;
    let file = fs.path().join("src/big");
    let content: Vec<u8> = (0..20 * MIB).map(|i| (i * 7 % 253) as u8).collect();
    let empty = fs.free();
    write_synced(&file, &content)?;
    let written = empty.saturating_sub(fs.free());
    assert!(
        written >= 20 * MIB,
        "writing 20 MiB takes 20 MiB of free space ({written} bytes): the measure works"
    );

    let before = fs.free();
    let outcome = cache.store_tree("big", &file)?;
    let Commit::Stored { size } = outcome else {
        panic!("stored: {outcome}")
    };
    let out = fs.path().join("out");
    let copied = cache.copy_out("big", &out)?.expect("just stored");
    let after = fs.free();
    let used = before.saturating_sub(after);
    println!(
        "{} reflink: free {before} bytes before, {after} after store_tree + copy_out of 20 MiB: \
         the two copies took {used} bytes; the entry is accounted {size} bytes; {copied:?}",
        fs.kind
    );
    assert_eq!(
        std::fs::read(out.join("big"))?,
        content,
        "the copy is the file"
    );
    assert!(
        size >= 20 * MIB,
        "a shared file is accounted in full (st_blocks): {size}"
    );
    assert_clean(&root, "after the reflinked copies");
    if no_clone && no_range {
        assert!(
            used >= 2 * 20 * MIB - MIB,
            "with both kernel copies disabled, the two copies take their full size: {used}"
        );
        return Ok(());
    }
    if no_clone {
        // copy_file_range may share blocks too (XFS and Btrfs do since
        // Linux 5.3), but need not.
        println!("SKIPPED the sharing check of {test}: FSCACHE_DISABLE={disabled}");
        return Ok(());
    }
    assert_eq!(copied.cloned, 1, "the copy out was a clone: {copied:?}");
    assert!(
        used < 4 * MIB,
        "two copies of 20 MiB share their blocks: they took only {used} bytes"
    );
    Ok(())
}

#[test]
fn without_reflinks_the_fallback_copies_every_byte() -> TestResult {
    // The default temporary directory: ext4 on most machines.
    let (t, root) = new_cache(MaxSize::Unlimited);
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("d"))?;
    let big: Vec<u8> = (0..5 * MIB + 3).map(|i| (i % 241) as u8).collect();
    std::fs::write(src.join("d/big"), &big)?;
    std::fs::write(src.join("small"), b"small")?;
    std::fs::write(src.join("empty"), b"")?;
    let cache = open(&root)?;
    assert!(cache.store_tree("data", &src)?.is_stored());
    let out = t.path().join("out");
    let copied = cache.copy_out("data", &out)?.expect("just stored");
    println!("the default file system's copy: {copied:?}");
    assert_eq!(std::fs::read(out.join("d/big"))?, big);
    assert_eq!(std::fs::read(out.join("small"))?, b"small");
    assert_eq!(std::fs::read(out.join("empty"))?, b"");
    assert_eq!(copied.bytes, 5 * MIB + 3 + 5, "{copied:?}");
    assert_eq!(copied.files, 3, "{copied:?}");
    assert_clean(&root, "after the fallback copies");
    Ok(())
}
