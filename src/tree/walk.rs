//! A depth-first walk over a directory tree that no depth can break.
//!
//! A stored tree may have any shape, and anyone who can write to the cache
//! can plant one. A recursion holds a stack frame and a descriptor per
//! level, so a deep enough tree would overflow the stack or run out of
//! descriptors, and an orphan that cannot be removed stays forever. The
//! walk is a loop over an explicit path instead. Only the innermost
//! [`OPEN_LEVELS`] directories keep a descriptor; an outer one is opened
//! again through `..` on the way back up, and must then be the very
//! directory it left (device and inode), or the walk stops: a directory
//! moved out of the tree meanwhile never leads the walk outside it.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{fstat, Dir};
use rustix::io::Errno;

use super::open_dir;
use crate::error::{Error, IoContext, Op, Result};

/// How many of the innermost directories keep their descriptor.
pub(super) const OPEN_LEVELS: usize = 16;

/// What a walk does in each directory.
pub(super) trait Visit {
    /// Whether a subdirectory that vanishes before it is opened (a racing
    /// cleaner) is skipped rather than an error.
    const SKIP_VANISHED: bool;

    /// Handle `dir` and every entry in it that is not a directory; return
    /// the names of its subdirectories.
    fn enter(&mut self, dir: &mut Dir, here: &Here<'_>) -> Result<Vec<CString>>;

    /// The subdirectory `name` of `parent` (which is `here`) has been
    /// walked.
    fn leave(&mut self, parent: BorrowedFd<'_>, name: &CStr, here: &Here<'_>) -> Result<()>;
}

/// Where a visit is: its depth (0 for the root), and the paths of the
/// directory and its children for messages. A path is built only when a
/// message needs it: one per level would cost quadratic time.
pub(super) struct Here<'t> {
    trail: &'t Trail<'t>,
    pub(super) depth: usize,
}

impl Here<'_> {
    pub(super) fn dir(&self) -> PathBuf {
        self.trail.dir_path(self.depth)
    }

    pub(super) fn child(&self, name: &CStr) -> PathBuf {
        self.trail.child_path(self.depth, name)
    }

    /// The directory's name in its parent (empty for the root).
    pub(super) fn name(&self) -> &CStr {
        &self.trail.levels[self.depth].name
    }
}

/// A directory on the path from the root to where the walk is.
struct Level {
    handle: Handle,
    /// Its name in its parent (empty for the root).
    name: CString,
    /// Subdirectories still to walk.
    pending: Vec<CString>,
}

enum Handle {
    /// Among the innermost [`OPEN_LEVELS`]; the root always is.
    Open(Dir),
    /// Closed to spare a descriptor. `id` (`st_dev`, `st_ino`) is what `..`
    /// must lead back to.
    Closed { id: (u64, u64) },
    /// Lent to the visitor while it enters the directory.
    Lent,
}

/// The walk's position: the root's path (for messages) and every level
/// from the root down.
struct Trail<'p> {
    root: &'p Path,
    levels: Vec<Level>,
}

/// Walk the tree whose root `root` lists, depth first, never following a
/// link.
pub(super) fn walk<V: Visit>(root: Dir, root_path: &Path, visit: &mut V) -> Result<()> {
    let mut trail = Trail {
        root: root_path,
        levels: Vec::new(),
    };
    trail.descend(root, CString::default(), visit)?;
    loop {
        let depth = trail.levels.len() - 1;
        if let Some(name) = trail.levels[depth].pending.pop() {
            let opened = open_dir(trail.innermost()?, &name);
            let fd = match opened {
                Ok(fd) => fd,
                Err(Errno::NOENT) if V::SKIP_VANISHED => continue,
                Err(e) => return Err(e).at(Op::Open, || trail.child_path(depth, &name)),
            };
            let dir = Dir::new(fd).at(Op::ReadDir, || trail.child_path(depth, &name))?;
            trail.descend(dir, name, visit)?;
        } else if depth == 0 {
            return Ok(());
        } else {
            let name = trail.ascend()?;
            let here = Here {
                trail: &trail,
                depth: depth - 1,
            };
            visit.leave(trail.innermost()?, &name, &here)?;
        }
    }
}

impl Trail<'_> {
    fn dir_path(&self, depth: usize) -> PathBuf {
        let mut path = self.root.to_path_buf();
        for level in &self.levels[1..=depth] {
            path.push(OsStr::from_bytes(level.name.to_bytes()));
        }
        path
    }

    fn child_path(&self, depth: usize, child: &CStr) -> PathBuf {
        self.dir_path(depth)
            .join(OsStr::from_bytes(child.to_bytes()))
    }

    /// The innermost directory's descriptor.
    fn innermost(&self) -> Result<BorrowedFd<'_>> {
        let depth = self.levels.len() - 1;
        match &self.levels[depth].handle {
            Handle::Open(dir) => fd_of(dir, || self.dir_path(depth)),
            _ => unreachable!("the innermost level is open once entered"),
        }
    }

    /// Step into `dir`, close the descriptor that leaves the open window,
    /// and let `visit` enter it.
    fn descend(&mut self, mut dir: Dir, name: CString, visit: &mut impl Visit) -> Result<()> {
        let depth = self.levels.len();
        if let Some(outer) = depth.checked_sub(OPEN_LEVELS).filter(|&i| i > 0) {
            self.close(outer)?;
        }
        self.levels.push(Level {
            handle: Handle::Lent,
            name,
            pending: Vec::new(),
        });
        let here = Here { trail: self, depth };
        let pending = visit.enter(&mut dir, &here)?;
        let level = &mut self.levels[depth];
        level.handle = Handle::Open(dir);
        level.pending = pending;
        Ok(())
    }

    /// Close the descriptor of the level at `depth`, remembering which
    /// directory it was.
    fn close(&mut self, depth: usize) -> Result<()> {
        if let Handle::Open(dir) = &self.levels[depth].handle {
            let fd = fd_of(dir, || self.dir_path(depth))?;
            let st = fstat(fd).at(Op::Stat, || self.dir_path(depth))?;
            self.levels[depth].handle = Handle::Closed {
                id: (st.st_dev, st.st_ino),
            };
        }
        Ok(())
    }

    /// Leave the innermost directory, opening its parent again if it was
    /// closed; returns the name of the directory left.
    fn ascend(&mut self) -> Result<CString> {
        let done = self.levels.pop().expect("never called at the root");
        let depth = self.levels.len() - 1;
        if let Handle::Closed { id } = self.levels[depth].handle {
            let Handle::Open(inner) = &done.handle else {
                unreachable!("the innermost level is open once entered")
            };
            let inner = fd_of(inner, || self.child_path(depth, &done.name))?;
            let fd = open_dir(inner, c"..").at(Op::Open, || self.dir_path(depth))?;
            let st = fstat(&fd).at(Op::Stat, || self.dir_path(depth))?;
            if (st.st_dev, st.st_ino) != id {
                return Err(Error::Io {
                    op: Op::Open,
                    path: self.dir_path(depth),
                    source: io::Error::other("moved out of the tree while it was being walked"),
                });
            }
            let dir = Dir::new(fd).at(Op::ReadDir, || self.dir_path(depth))?;
            self.levels[depth].handle = Handle::Open(dir);
        }
        Ok(done.name)
    }
}

fn fd_of(dir: &Dir, path: impl FnOnce() -> PathBuf) -> Result<BorrowedFd<'_>> {
    dir.fd().at(Op::ReadDir, path)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Lists subdirectories, counts visits, and at `depth` runs `act` once.
    struct Probe<F: FnMut()> {
        entered: usize,
        at: usize,
        act: Option<F>,
    }

    impl<F: FnMut()> Visit for Probe<F> {
        const SKIP_VANISHED: bool = false;

        fn enter(&mut self, dir: &mut Dir, here: &Here<'_>) -> Result<Vec<CString>> {
            self.entered += 1;
            if here.depth == self.at {
                if let Some(mut act) = self.act.take() {
                    act();
                }
            }
            Ok(dir
                .map(|e| e.unwrap().file_name().to_owned())
                .filter(|n| n.as_bytes() == b"d")
                .collect())
        }

        fn leave(&mut self, _: BorrowedFd<'_>, _: &CStr, _: &Here<'_>) -> Result<()> {
            Ok(())
        }
    }

    const DEPTH: usize = 3 * OPEN_LEVELS;

    fn chain(root: &Path) -> PathBuf {
        let mut bottom = root.to_path_buf();
        for _ in 0..DEPTH {
            bottom.push("d");
        }
        std::fs::create_dir_all(&bottom).unwrap();
        bottom
    }

    fn open(path: &Path) -> Dir {
        Dir::new(open_dir(rustix::fs::CWD, path).unwrap()).unwrap()
    }

    #[test]
    fn a_walk_deeper_than_its_open_window_visits_every_level() {
        let t = tempfile::tempdir().unwrap();
        chain(t.path());
        let mut probe = Probe {
            entered: 0,
            at: usize::MAX,
            act: None::<fn()>,
        };
        walk(open(t.path()), t.path(), &mut probe).unwrap();
        assert_eq!(probe.entered, DEPTH + 1);
    }

    #[test]
    fn a_directory_moved_out_of_the_tree_stops_the_walk_on_the_way_back_up() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("tree");
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        chain(&root);
        // At the bottom, the innermost OPEN_LEVELS levels are open; move the
        // outermost of them elsewhere. Its `..` is then not the directory
        // the walk closed.
        let open_from = DEPTH - OPEN_LEVELS + 1;
        let mut moved = root.clone();
        for _ in 0..open_from {
            moved.push("d");
        }
        let target = outside.join("moved");
        let mut probe = Probe {
            entered: 0,
            at: DEPTH,
            // The test plays the intruder, so it may rename by path.
            #[allow(clippy::disallowed_methods)]
            act: Some(|| std::fs::rename(&moved, &target).unwrap()),
        };
        let err = walk(open(&root), &root, &mut probe).unwrap_err();
        assert!(
            err.to_string()
                .contains(&moved.parent().unwrap().display().to_string()),
            "names the directory it could not find again: {err}"
        );
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("moved out of the tree"), "{source}");
    }
}
