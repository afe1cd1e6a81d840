//! The floor: the version-1 protocol's system calls for each operation,
//! made directly with rustix and nix in osbuild's layout, with no
//! bookkeeping. A correct implementation cannot go below it; the benches
//! report each operation of ours as a multiple of it.

#![allow(dead_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{fcntl, FcntlArg};
use nix::libc;
use rustix::fs::{
    fstat, mkdirat, openat, renameat_with, statat, AtFlags, Mode, OFlags, RenameFlags,
};

fn whole(l_type: libc::c_int) -> libc::flock {
    libc::flock {
        l_type: l_type as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    }
}

/// A cache root's `objects/` and `stage/`, opened once.
pub struct Floor {
    root: std::path::PathBuf,
    pub objects: OwnedFd,
    pub stage: OwnedFd,
    next: u64,
    tag: String,
}

const DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);
const CREATE: OFlags = OFlags::WRONLY
    .union(OFlags::CREATE)
    .union(OFlags::EXCL)
    .union(OFlags::CLOEXEC);

impl Floor {
    /// The floor on the cache at `root` (made by `FsCache::open`, so that
    /// both work in the same layout on the same file system).
    pub fn new(root: &Path) -> Floor {
        let open = |d: &str| openat(rustix::fs::CWD, root.join(d), DIR, Mode::empty()).expect(d);
        Floor {
            root: root.to_owned(),
            objects: open("objects"),
            stage: open("stage"),
            next: 0,
            tag: format!("{:08x}", std::process::id()),
        }
    }

    fn fresh(&mut self) -> String {
        self.next += 1;
        format!("uuid-{}{:024x}", self.tag, self.next)
    }

    /// An anonymous entry: `mkdirat`, then `object.lock` made locked
    /// before anyone can see it (FORMAT.md: an unlocked lock in an
    /// anonymous directory is an orphan's, which a sweep may remove), as
    /// an `O_TMPFILE` locked and then linked in, and `mkdirat data`
    /// (5 calls); returns its name and the lock.
    fn anonymous(&mut self, parent: &OwnedFd) -> (String, OwnedFd) {
        let tmp = self.fresh();
        mkdirat(parent, &tmp, Mode::from_raw_mode(0o777)).expect("mkdir");
        let lock = openat(
            parent,
            ".",
            OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .expect("create lock");
        fcntl(lock.as_fd(), FcntlArg::F_OFD_SETLK(&whole(libc::F_WRLCK))).expect("lock");
        rustix::fs::linkat(
            &lock,
            "",
            parent,
            format!("{tmp}/object.lock"),
            AtFlags::EMPTY_PATH,
        )
        .expect("link lock");
        mkdirat(parent, format!("{tmp}/data"), Mode::from_raw_mode(0o777)).expect("mkdir data");
        (tmp, lock)
    }

    /// Store `name` with one file of `payload`: the anonymous entry, the
    /// file (create, write, close), `object.info` (the same), the rename
    /// with `RENAME_NOREPLACE` and the close that publishes it: 13 calls.
    pub fn store(&mut self, name: &str, payload: &[u8]) {
        let (tmp, lock) = self.anonymous(&self.objects.try_clone().expect("dup"));
        write(&self.objects, &format!("{tmp}/data/f"), payload);
        let info = format!(
            "{{\"size\": {}}}",
            4096 + payload.len().div_ceil(4096) * 4096
        );
        write(
            &self.objects,
            &format!("{tmp}/object.info"),
            info.as_bytes(),
        );
        renameat_with(
            &self.objects,
            &tmp,
            &self.objects,
            name,
            RenameFlags::NOREPLACE,
        )
        .expect("rename");
        drop(lock);
    }

    /// Load `name` and read its file into `buf`: open, lock, `fstat` and
    /// `stat` of `object.lock` (the safe-open check), open, read and close
    /// the file, close the lock: 8 calls.
    pub fn load_read(&self, name: &str, buf: &mut [u8]) -> usize {
        let rel = format!("{name}/object.lock");
        let lock = openat(
            &self.objects,
            &rel,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .expect("open lock");
        fcntl(lock.as_fd(), FcntlArg::F_OFD_SETLK(&whole(libc::F_RDLCK))).expect("lock");
        let a = fstat(&lock).expect("fstat");
        let b = statat(&self.objects, &rel, AtFlags::SYMLINK_NOFOLLOW).expect("stat");
        assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino));
        // By its full path, as a caller handed a path opens it.
        let f = rustix::fs::open(
            self.root.join("objects").join(name).join("data/f"),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .expect("open file");
        let n = rustix::io::read(&f, buf).expect("read");
        drop(f);
        drop(lock);
        n
    }

    /// A miss: the open of a lock that is not there (1 call).
    pub fn miss(&self, name: &str) -> bool {
        openat(
            &self.objects,
            format!("{name}/object.lock"),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .is_err()
    }

    /// A stage made and removed: the anonymous entry in `stage/`, then
    /// open and list `data/` (it may hold anything), remove it, the lock
    /// and the directory, close: 14 calls.
    pub fn stage(&mut self) {
        let (tmp, lock) = self.anonymous(&self.stage.try_clone().expect("dup"));
        let data =
            openat(&self.stage, format!("{tmp}/data"), DIR, Mode::empty()).expect("open data");
        for entry in rustix::fs::Dir::new(data).expect("list") {
            entry.expect("entry");
        }
        rustix::fs::unlinkat(&self.stage, format!("{tmp}/data"), AtFlags::REMOVEDIR)
            .expect("rmdir");
        rustix::fs::unlinkat(&self.stage, format!("{tmp}/object.lock"), AtFlags::empty())
            .expect("unlink");
        rustix::fs::unlinkat(&self.stage, &tmp, AtFlags::REMOVEDIR).expect("rmdir");
        drop(lock);
    }
}

fn write(dir: &OwnedFd, rel: &str, bytes: &[u8]) {
    let fd = openat(dir, rel, CREATE, Mode::from_raw_mode(0o644)).expect("create");
    assert_eq!(rustix::io::write(&fd, bytes).expect("write"), bytes.len());
}
