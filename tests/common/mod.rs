//! Shared helpers for the integration tests: worker processes driven over
//! pipes, and readers of the on-disk state.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

/// How long any single step of a worker may take before the test fails.
pub const STEP: Duration = Duration::from_secs(60);

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A `fscache-worker` process, driven line by line.
pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Worker {
    /// Start a worker on the cache at `dir` and wait until it is ready.
    #[track_caller]
    pub fn spawn(dir: &Path) -> Worker {
        Self::spawn_with(dir, &[])
    }

    /// As `spawn`, with extra environment variables.
    #[track_caller]
    pub fn spawn_with(dir: &Path, env: &[(&str, &str)]) -> Worker {
        let mut cmd = Self::command(dir);
        cmd.stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut w = Self::from_command(cmd);
        w.expect("ready");
        w
    }

    /// The command that starts a worker on `dir`, to adjust (a user id, a
    /// wrapper) before [`Worker::from_command`].
    pub fn command(dir: &Path) -> Command {
        // Built only with the `testing` feature (the README's test command
        // turns every feature on).
        let Some(worker) = option_env!("CARGO_BIN_EXE_fscache-worker") else {
            panic!("the process tests need the fscache-worker binary: run them with --all-features (or --features testing)")
        };
        let mut cmd = Command::new(worker);
        cmd.arg(dir);
        cmd
    }

    /// Start `cmd` with piped stdin and stdout (stderr as `cmd` says). It
    /// does not wait for `ready`: the caller reads that line.
    #[track_caller]
    pub fn from_command(mut cmd: Command) -> Worker {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn fscache-worker");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Worker {
            child,
            stdin,
            lines,
        }
    }

    /// Tell the worker to exit; its exit status and what it wrote to stderr
    /// (if stderr was piped).
    pub fn finish(mut self) -> (ExitStatus, String) {
        let _ = writeln!(self.stdin, "exit");
        let _ = self.stdin.flush();
        let status = self.child.wait().expect("reap worker");
        let mut err = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
        }
        (status, err)
    }

    /// The next line the worker prints, waiting at most `STEP`.
    #[track_caller]
    pub fn next_line(&mut self) -> String {
        self.lines.recv_timeout(STEP).unwrap_or_else(|e| {
            panic!(
                "worker {} said nothing within {STEP:?}: {e}",
                self.child.id()
            )
        })
    }

    /// Wait for a line starting with `prefix` and return it.
    #[track_caller]
    pub fn expect(&mut self, prefix: &str) -> String {
        let line = self.next_line();
        assert!(
            line.starts_with(prefix),
            "expected {prefix:?}, worker said {line:?}"
        );
        line
    }

    /// Send one command without waiting for its answer.
    pub fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").expect("write to worker");
        self.stdin.flush().expect("flush to worker");
    }

    /// Send one command and return its one-line answer.
    #[track_caller]
    pub fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").expect("write to worker");
        self.stdin.flush().expect("flush to worker");
        self.next_line()
    }

    /// Send a command; `None` if the worker dies instead of answering.
    #[track_caller]
    pub fn try_ask(&mut self, command: &str) -> Option<String> {
        if writeln!(self.stdin, "{command}")
            .and_then(|()| self.stdin.flush())
            .is_err()
        {
            return None;
        }
        match self.lines.recv_timeout(STEP) {
            Ok(line) => Some(line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
            Err(e) => panic!(
                "worker {} said nothing within {STEP:?}: {e}",
                self.child.id()
            ),
        }
    }

    /// Reap a worker that has exited (or is exiting) on its own.
    pub fn reap(mut self) -> ExitStatus {
        self.child.wait().expect("reap worker")
    }

    /// `SIGKILL` the worker and reap it.
    pub fn kill(mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("reap worker")
    }

    /// Wait for the worker to end on its own.
    #[track_caller]
    pub fn wait(mut self) -> ExitStatus {
        let _ = writeln!(self.stdin, "exit");
        let _ = self.stdin.flush();
        self.child.wait().expect("reap worker")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Leave the worker `headroom` descriptors beyond those it holds now
    /// (what it inherits varies between machines), through `prlimit
    /// --pid`. Returns the limit set.
    #[track_caller]
    pub fn limit_descriptors(&self, prlimit: &Path, headroom: usize) -> usize {
        let held = std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("list the worker's descriptors")
            .count();
        let limit = held + headroom;
        let status = Command::new(prlimit)
            .arg(format!("--pid={}", self.pid()))
            .arg(format!("--nofile={limit}:{limit}"))
            .status()
            .expect("run prlimit");
        assert!(status.success(), "prlimit --pid: {status:?}");
        limit
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `prlimit` from util-linux, if it is installed.
pub fn prlimit() -> Option<PathBuf> {
    let out = Command::new("which").arg("prlimit").output().ok()?;
    let path = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

/// The names in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The `size` of every `object.info` in `objects/` (named and anonymous).
pub fn info_sizes(cache: &Path) -> Vec<(String, u64)> {
    names(&cache.join("objects"))
        .into_iter()
        .filter_map(|n| {
            let raw = std::fs::read(cache.join("objects").join(&n).join("object.info")).ok()?;
            let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
            Some((n, v["size"].as_u64()?))
        })
        .collect()
}

/// Whether `objects/<name>` is a live handle's reservation of accounted
/// space (its `object.info` says so), not an entry.
pub fn is_reservation(cache: &Path, name: &str) -> bool {
    std::fs::read(cache.join("objects").join(name).join("object.info"))
        .ok()
        .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok())
        .is_some_and(|v| v["fscache-reservation"] == serde_json::Value::Bool(true))
}

/// The sum of the `object.info` sizes of the committed entries (named ones).
pub fn entry_sizes(cache: &Path) -> u64 {
    info_sizes(cache)
        .iter()
        .filter(|(n, _)| !n.starts_with("uuid-"))
        .map(|(_, s)| s)
        .sum()
}

/// The integer in `cache.size`.
pub fn size_file(cache: &Path) -> u64 {
    let raw = std::fs::read_to_string(cache.join("cache.size")).expect("read cache.size");
    raw.trim()
        .parse()
        .unwrap_or_else(|_| panic!("cache.size is {raw:?}"))
}

/// Assert the central invariant: `cache.size` is the sum of the sizes in
/// the `object.info` files present.
#[track_caller]
pub fn assert_exact(cache: &Path) {
    let infos = info_sizes(cache);
    let sum: u64 = infos.iter().map(|(_, s)| s).sum();
    assert_eq!(
        size_file(cache),
        sum,
        "cache.size vs object.info sizes {infos:?}"
    );
}

/// A fresh cache directory, opened once so that it is scaffolded, with the
/// given maximum.
pub fn new_cache(max: fscache::MaxSize) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().expect("tempdir");
    let path = t.path().join("cache");
    let c = fscache::FsCache::open("fscache-tests", &path).expect("open cache");
    c.set_maximum_size(max).expect("set maximum");
    (t, path)
}

/// A temporary directory another user can reach (the usual one is private
/// to its creator), and the cache path in it.
pub fn cache_path_others_can_reach(prefix: &str) -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("tempdir");
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let root = t.path().join("cache");
    (t, root)
}

/// The `n` numbers after `word` in a worker's reply `word N1 N2 ...[; ...]`.
#[track_caller]
pub fn counters(line: &str, word: &str, n: usize) -> Vec<u64> {
    let counters = line
        .strip_prefix(word)
        .and_then(|rest| rest.strip_prefix(' '))
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("not a {word:?} line: {line:?}"));
    let got: Vec<u64> = counters
        .split_whitespace()
        .map(|w| {
            w.parse()
                .unwrap_or_else(|_| panic!("bad counter in {line:?}"))
        })
        .collect();
    assert_eq!(got.len(), n, "{n} counters in {line:?}");
    got
}

/// The JSON schema checker of the command's tests (README, "JSON output").
pub mod schema {
    use serde_json::Value;

    /// The JSON types a key may hold.
    #[derive(Clone, Copy, Debug)]
    pub enum T {
        /// A non-negative integer.
        Int,
        Str,
        Bool,
        Arr,
        Obj,
        Null,
    }

    pub fn is(v: &Value, t: T) -> bool {
        match t {
            T::Int => v.is_u64(),
            T::Str => v.is_string(),
            T::Bool => v.is_boolean(),
            T::Arr => v.is_array(),
            T::Obj => v.is_object(),
            T::Null => v.is_null(),
        }
    }

    pub type Schema = &'static [(&'static str, &'static [T])];

    /// `v` is an object with exactly the keys of `schema`, each of one of its
    /// types.
    #[track_caller]
    pub fn check(v: &Value, schema: Schema, what: &str) {
        let map = v
            .as_object()
            .unwrap_or_else(|| panic!("{what}: not an object: {v}"));
        let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
        let mut want: Vec<&str> = schema.iter().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        want.sort_unstable();
        assert_eq!(keys, want, "{what}: the keys of {v}");
        for (key, types) in schema {
            let value = &map[*key];
            assert!(
                types.iter().any(|t| is(value, *t)),
                "{what}: `{key}` is {value}, not one of {types:?}"
            );
        }
    }
}

/// Running the `fscache` command, built with the `cli` feature.
pub mod command {
    use std::process::{Command, Output};

    /// `fscache ARGS`, with no `FSCACHE_DIR` from the test's environment.
    pub fn command(args: &[&str]) -> Command {
        let Some(fscache) = option_env!("CARGO_BIN_EXE_fscache") else {
            panic!("the command's tests need the fscache binary: run them with --features cli")
        };
        let mut cmd = Command::new(fscache);
        cmd.args(args).env_remove("FSCACHE_DIR");
        cmd
    }

    pub fn run(args: &[&str]) -> Output {
        command(args).output().expect("run fscache")
    }

    pub fn stdout(out: &Output) -> String {
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn stderr(out: &Output) -> String {
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Run `cmd`, require exit status `code` and no panic, and return the
    /// output.
    #[track_caller]
    pub fn expect_from(code: i32, cmd: &mut Command) -> Output {
        let out = cmd.output().expect("run fscache");
        assert_eq!(
            out.status.code(),
            Some(code),
            "{cmd:?}: stdout {:?}, stderr {:?}",
            stdout(&out),
            stderr(&out)
        );
        assert!(
            !stderr(&out).contains("panicked"),
            "{cmd:?} panicked: {}",
            stderr(&out)
        );
        out
    }

    /// Run `fscache ARGS` and require exit status `code` and no panic.
    #[track_caller]
    pub fn expect(code: i32, args: &[&str]) -> Output {
        expect_from(code, &mut command(args))
    }
}

// ---------------------------------------------------------------------------
// Root-only helpers: a tmpfs unmounted whatever happens.
// ---------------------------------------------------------------------------

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A tmpfs mounted on a fresh directory, unmounted on drop (lazily if
/// something still holds it), even when the test fails.
pub struct Tmpfs {
    mountpoint: tempfile::TempDir,
}

impl Tmpfs {
    /// Mount a tmpfs with `options`, or say why the test is skipped.
    pub fn mount(test: &str, options: &str) -> Option<Tmpfs> {
        if !is_root() {
            println!("SKIPPED {test}: mounting a tmpfs needs root");
            return None;
        }
        let mountpoint = tempfile::Builder::new()
            .prefix("fscache-faults-")
            .tempdir()
            .expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(mountpoint.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { mountpoint }),
            Ok(o) => {
                println!(
                    "SKIPPED {test}: mount -t tmpfs failed: {}",
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

    pub fn path(&self) -> &Path {
        self.mountpoint.path()
    }

    /// `mount -o remount,<options>`.
    #[track_caller]
    pub fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(self.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "remount,{options} failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something (a leaked handle of a failed test) holds it.
            let _ = Command::new("umount").arg("-l").arg(self.path()).status();
        }
    }
}

/// A cache of `n` entries whose maximum is exactly what they take, opened
/// by a new handle (so that no reservation is live): every commit into it
/// must evict.
pub fn full_cache(n: usize) -> fscache::Result<(tempfile::TempDir, PathBuf, fscache::FsCache)> {
    let (t, root) = new_cache(fscache::MaxSize::Unlimited);
    let cache = fscache::FsCache::open("fscache-tests", &root)?;
    for i in 0..n {
        put_own_name(&cache, &format!("seed{i:03}"))?;
    }
    drop(cache);
    let cache = fscache::FsCache::open("fscache-tests", &root)?;
    cache.set_maximum_size(fscache::MaxSize::Bytes(entry_sizes(&root)))?;
    Ok((t, root, cache))
}

/// Store an entry whose one file holds its name.
pub fn put_own_name(cache: &fscache::FsCache, name: &str) -> fscache::Result<()> {
    let e = cache.store(name)?;
    std::fs::write(e.path().join("f"), name.as_bytes()).expect("write");
    assert!(e.commit()?.is_stored(), "{name}");
    Ok(())
}
