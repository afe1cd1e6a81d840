//! The remote tier against a real S3-compatible server on loopback
//! (moto in server mode), with two cache directories standing for two
//! machines sharing one bucket, a fault-injecting proxy between them and
//! the server, and hostile objects uploaded raw.
//!
//! Skips (with a message) when no `moto_server` is found: `$FSCACHE_MOTO`,
//! then `/tmp/motovenv/bin/moto_server`, then `PATH`; with
//! `$FSCACHE_REQUIRE_MOTO` set they fail instead. `.ci/run` makes one.

#![cfg(feature = "remote")]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Barrier, Mutex, Weak};
use std::time::{Duration, Instant};

use fscache::remote::archive::Refusal;
use fscache::remote::object_store::aws::AmazonS3Builder;
use fscache::remote::object_store::{ObjectStoreExt, PutPayload};
use fscache::remote::{Fetch, Remote, RemoteOp, TieredCache, Tuning, Upload};
use fscache::{Digest, Error, ErrorKind, Eviction, FsCache, MaxSize};
use futures::TryStreamExt;
use sha2::Digest as _;

type TestResult = Result<(), Box<dyn std::error::Error>>;

// ------------------------------------------------------------------ moto

fn moto_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FSCACHE_MOTO") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Some(p);
        }
    }
    let venv = PathBuf::from("/tmp/motovenv/bin/moto_server");
    if venv.is_file() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("moto_server"))
            .find(|p| p.is_file())
    })
}

/// A moto server on a free loopback port, killed on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    /// Start one; `None` (after saying so) when there is no moto.
    fn start() -> Option<Moto> {
        let Some(bin) = moto_binary() else {
            assert!(
                std::env::var_os("FSCACHE_REQUIRE_MOTO").is_none(),
                "FSCACHE_REQUIRE_MOTO is set but no moto_server was found"
            );
            eprintln!("skipped: no moto_server (set FSCACHE_MOTO, or pip install 'moto[server]')");
            return None;
        };
        // A port freed just now may be taken again before moto binds it:
        // then moto exits, and we try another.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let mut child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("moto_server starts");
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(60) {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(Moto { child, port });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("moto_server did not come up");
    }

    /// The server all tests share while any of them runs; started by the
    /// first, killed when the last lets go.
    fn shared() -> Option<Arc<Moto>> {
        static SHARED: Mutex<Weak<Moto>> = Mutex::new(Weak::new());
        let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = slot.upgrade() {
            return Some(m);
        }
        let m = Arc::new(Moto::start()?);
        *slot = Arc::downgrade(&m);
        Some(m)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Make a bucket (moto in server mode takes any credentials).
    fn bucket(&self, name: &str) -> String {
        let status = http(self.port, "PUT", &format!("/{name}"));
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "creating bucket {name}: {status}"
        );
        name.to_owned()
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One bodiless request; the status line of the answer.
fn http(port: u16, method: &str, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_owned()
}

fn bucket_name(test: &str) -> String {
    test.replace('_', "-").chars().take(60).collect()
}

/// Short timeouts and few retries, so that fault tests end quickly.
fn quick() -> Tuning {
    Tuning {
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(60),
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
        backoff: Duration::from_millis(10),
        part_size: 5 << 20,
    }
}

const SECRET: &str = "s3cr3t-Do-Not-Print-Me";

fn remote_at(url: &str, bucket: &str, tuning: &Tuning) -> Remote {
    let builder = AmazonS3Builder::new()
        .with_endpoint(url)
        .with_bucket_name(bucket)
        .with_access_key_id("AKIDTEST")
        .with_secret_access_key(SECRET);
    Remote::from_s3(builder, "team/ci", tuning).expect("remote")
}

/// A machine: its own cache directory in front of the bucket.
struct Machine {
    _dir: tempfile::TempDir,
    tiered: TieredCache,
}

impl Machine {
    fn new(url: &str, bucket: &str, tuning: &Tuning) -> Machine {
        let dir = tempfile::tempdir().expect("tempdir");
        let local = FsCache::open("remote-test", dir.path()).expect("open");
        local.set_maximum_size(MaxSize::Unlimited).expect("max");
        Machine {
            _dir: dir,
            tiered: TieredCache::new(local, remote_at(url, bucket, tuning)),
        }
    }

    fn cache_dir(&self) -> &Path {
        self.tiered.local().path()
    }
}

fn tree(dir: &Path, seed: u8) -> PathBuf {
    let src = dir.join(format!("src-{seed}"));
    std::fs::create_dir_all(src.join("bin")).expect("mkdir");
    std::fs::write(src.join("bin/tool"), [seed; 3000]).expect("write");
    std::fs::write(src.join("README"), format!("built with seed {seed}\n")).expect("write");
    std::os::unix::fs::symlink("bin/tool", src.join("link")).expect("symlink");
    src
}

/// Entries and leftovers in a cache's `objects/`.
fn objects(cache: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cache.join("objects"))
        .expect("objects")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ------------------------------------------------------------ the tier

#[test]
fn an_entry_stored_on_one_machine_is_a_hit_on_another() -> TestResult {
    let Some(moto) = Moto::shared() else {
        return Ok(());
    };
    let bucket = moto.bucket(&bucket_name("an_entry_stored_on_one_machine"));
    let (a, b) = (
        Machine::new(&moto.url(), &bucket, &Tuning::default()),
        Machine::new(&moto.url(), &bucket, &Tuning::default()),
    );
    let scratch = tempfile::tempdir()?;
    let src = tree(scratch.path(), 1);
    let stored = a.tiered.store_tree("gcc-13 build", &src)?;
    assert!(stored.commit.is_stored(), "{stored:?}");
    assert!(
        matches!(stored.upload, Some(Upload::Uploaded { .. })),
        "{stored:?}"
    );

    let listed = b.tiered.remote().list()?;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].name, "gcc-13 build");
    assert_eq!(listed[0].key, "team/ci/fscache-v1/gcc-13%20build");

    let got = b.tiered.get("gcc-13 build")?;
    let Fetch::Remote { entry, archive } = got else {
        panic!("expected a remote hit, got {got:?}");
    };
    assert_eq!(archive.files, 2);
    assert_eq!(archive.links, 1);
    assert_eq!(Digest::of_tree(entry.path())?, Digest::of_tree(&src)?);
    assert_eq!(
        std::fs::read_link(entry.path().join("link"))?,
        PathBuf::from("bin/tool")
    );
    drop(entry);
    // Now it is local on B too: no second download.
    assert!(matches!(b.tiered.get("gcc-13 build")?, Fetch::Local(_)));
    assert_eq!(b.tiered.counters().downloads, 1);
    assert_eq!(b.tiered.counters().local_hits, 1);
    // And it was committed through the normal store path: accounted.
    assert!(b.tiered.local().accounted_size()? > 0);
    Ok(())
}

#[test]
fn a_name_neither_tier_has_is_a_miss() -> TestResult {
    let Some(moto) = Moto::shared() else {
        return Ok(());
    };
    let bucket = moto.bucket(&bucket_name("a_name_neither_tier_has"));
    let a = Machine::new(&moto.url(), &bucket, &Tuning::default());
    assert!(matches!(a.tiered.get("nothing")?, Fetch::Miss));
    assert!(a.tiered.load("nothing")?.is_none());
    assert_eq!(a.tiered.counters().misses, 2);
    assert_eq!(objects(a.cache_dir()), Vec::<String>::new(), "no leftover");
    assert_eq!(
        a.tiered.get("../x").unwrap_err().kind(),
        ErrorKind::InvalidName
    );
    Ok(())
}

#[test]
fn two_machines_racing_one_name_agree_on_the_first_writer() -> TestResult {
    let Some(moto) = Moto::shared() else {
        return Ok(());
    };
    let bucket = moto.bucket(&bucket_name("two_machines_racing_one_name"));
    let scratch = tempfile::tempdir()?;
    let srcs = [tree(scratch.path(), 1), tree(scratch.path(), 2)];
    for round in 0..4 {
        let name = format!("raced-{round}");
        let machines: Vec<Machine> = (0..2)
            .map(|_| Machine::new(&moto.url(), &bucket, &Tuning::default()))
            .collect();
        let barrier = Barrier::new(2);
        let uploads: Vec<Upload> = std::thread::scope(|s| {
            let handles: Vec<_> = machines
                .iter()
                .zip(&srcs)
                .map(|(m, src)| {
                    let (barrier, name) = (&barrier, &name);
                    s.spawn(move || {
                        barrier.wait();
                        let stored = m.tiered.store_tree(name, src).expect("store");
                        stored.upload.expect("stored locally, so uploaded")
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let won: Vec<usize> = uploads
            .iter()
            .enumerate()
            .filter(|(_, u)| matches!(u, Upload::Uploaded { .. }))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(won.len(), 1, "exactly one winner: {uploads:?}");
        let lost = 1 - won[0];
        assert!(matches!(uploads[lost], Upload::AlreadyThere), "{uploads:?}");
        // A third machine gets the winner's entry, whole.
        let c = Machine::new(&moto.url(), &bucket, &Tuning::default());
        let got = c.tiered.load(&name)?.expect("on the remote");
        assert_eq!(
            Digest::of_tree(got.path())?,
            Digest::of_tree(&srcs[won[0]])?
        );
    }
    Ok(())
}

#[test]
fn identical_builds_racing_end_with_one_entry_everywhere() -> TestResult {
    let Some(moto) = Moto::shared() else {
        return Ok(());
    };
    let bucket = moto.bucket(&bucket_name("identical_builds_racing"));
    let scratch = tempfile::tempdir()?;
    let src = tree(scratch.path(), 7);
    let machines: Vec<Machine> = (0..3)
        .map(|_| Machine::new(&moto.url(), &bucket, &Tuning::default()))
        .collect();
    let barrier = Barrier::new(3);
    std::thread::scope(|s| {
        for m in &machines {
            let (barrier, src) = (&barrier, &src);
            s.spawn(move || {
                barrier.wait();
                let stored = m.tiered.store_tree("same", src).expect("store");
                assert!(stored.commit.is_stored());
            });
        }
    });
    let uploaded: u64 = machines.iter().map(|m| m.tiered.counters().uploads).sum();
    let already: u64 = machines
        .iter()
        .map(|m| m.tiered.counters().already_there)
        .sum();
    assert_eq!((uploaded, already), (1, 2));
    let want = Digest::of_tree(&src)?;
    for m in &machines {
        let hit = m.tiered.load("same")?.expect("local");
        assert_eq!(Digest::of_tree(hit.path())?, want);
    }
    Ok(())
}

#[test]
fn local_askers_of_one_missing_name_download_it_once() -> TestResult {
    let Some(moto) = Moto::shared() else {
        return Ok(());
    };
    let bucket = moto.bucket(&bucket_name("local_askers_of_one_missing_name"));
    let a = Machine::new(&moto.url(), &bucket, &Tuning::default());
    let scratch = tempfile::tempdir()?;
    let src = scratch.path().join("big");
    std::fs::create_dir(&src)?;
    std::fs::write(src.join("blob"), vec![3u8; 12 << 20])?;
    assert!(matches!(
        a.tiered.store_tree("shared", &src)?.upload,
        Some(Upload::Uploaded { .. })
    ));
    let b = Machine::new(&moto.url(), &bucket, &Tuning::default());
    let barrier = Barrier::new(6);
    std::thread::scope(|s| {
        for _ in 0..6 {
            let (barrier, tiered) = (&barrier, &b.tiered);
            s.spawn(move || {
                barrier.wait();
                let got = tiered.get("shared").expect("get");
                assert!(
                    matches!(got, Fetch::Local(_) | Fetch::Remote { .. }),
                    "{got:?}"
                );
            });
        }
    });
    let counters = b.tiered.counters();
    assert_eq!(counters.downloads, 1, "{counters:?}");
    assert_eq!(counters.local_hits, 5, "{counters:?}");
    Ok(())
}

#[test]
fn a_large_entry_goes_up_in_parts_and_comes_down_whole() -> TestResult {
    let Some(moto) = Moto::shared() else {
        return Ok(());
    };
    let bucket = moto.bucket(&bucket_name("a_large_entry_goes_up_in_parts"));
    let (a, b) = (
        Machine::new(&moto.url(), &bucket, &quick()),
        Machine::new(&moto.url(), &bucket, &quick()),
    );
    let scratch = tempfile::tempdir()?;
    let src = scratch.path().join("big");
    std::fs::create_dir(&src)?;
    let mut content = vec![0u8; 23 << 20];
    for (i, b) in content.iter_mut().enumerate() {
        *b = (i * 31 % 251) as u8;
    }
    std::fs::write(src.join("blob"), &content)?;
    let up = a.tiered.store_tree("big", &src)?.upload;
    assert!(
        matches!(up, Some(Upload::Uploaded { bytes }) if bytes > 23 << 20),
        "{up:?}"
    );
    // No staging object is left behind.
    assert_eq!(
        all_keys(&a.tiered)?,
        vec!["team/ci/fscache-v1/big".to_owned()]
    );
    // A second writer of a large entry finds the name taken.
    let c = Machine::new(&moto.url(), &bucket, &quick());
    assert!(matches!(
        c.tiered.store_tree("big", &src)?.upload,
        Some(Upload::AlreadyThere)
    ));
    let hit = b.tiered.load("big")?.expect("remote hit");
    assert_eq!(std::fs::read(hit.path().join("blob"))?, content);
    Ok(())
}

/// Every key in the bucket, listed on a runtime of the test's own.
fn all_keys(tiered: &TieredCache) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let store = tiered.remote().store().clone();
    let metas: Vec<_> = rt.block_on(store.list(None).try_collect())?;
    let mut keys: Vec<String> = metas.into_iter().map(|m| m.location.to_string()).collect();
    keys.sort();
    Ok(keys)
}

/// Put `bytes` at the entry `name`'s key as they are.
fn put_raw(tiered: &TieredCache, name: &str, bytes: Vec<u8>) -> TestResult {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let key = fscache::remote::object_store::path::Path::parse(tiered.remote().key(name)?)?;
    rt.block_on(tiered.remote().store().put(&key, PutPayload::from(bytes)))?;
    Ok(())
}

// ------------------------------------------------------ hostile objects

/// A tar header block written byte by byte, so that it can say what no
/// well-behaved writer would.
fn header(path: &[u8], kind: u8, size: u64, link: &[u8]) -> [u8; 512] {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::new(kind));
    let bytes = h.as_mut_bytes();
    bytes[..path.len()].copy_from_slice(path);
    bytes[157..157 + link.len()].copy_from_slice(link);
    h.set_cksum();
    let mut out = [0u8; 512];
    out.copy_from_slice(h.as_bytes());
    out
}

/// An archive assembled member by member; [`Raw::sealed`] adds the
/// trailer as the format describes it (a digest of everything before).
struct Raw(Vec<u8>);

impl Raw {
    fn new() -> Raw {
        Raw(header(b"data", b'5', 0, b"").to_vec())
    }

    fn member(mut self, path: &str, kind: u8, data: &[u8], link: &str) -> Raw {
        self.0.extend_from_slice(&header(
            path.as_bytes(),
            kind,
            data.len() as u64,
            link.as_bytes(),
        ));
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
        self
    }

    fn file(self, path: &str, data: &[u8]) -> Raw {
        self.member(path, b'0', data, "")
    }

    /// A header that declares `size` bytes and has none after it.
    fn declared(mut self, path: &str, size: u64) -> Raw {
        self.0
            .extend_from_slice(&header(path.as_bytes(), b'0', size, b""));
        self
    }

    fn sealed(mut self) -> Vec<u8> {
        let digest: String = sha2::Sha256::digest(&self.0)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut json = format!(
            "{{\"fscache-remote-archive\": 1, \"sha256\": \"{digest}\", \"bytes\": {}, \"compression\": \"none\"}}",
            self.0.len()
        )
        .into_bytes();
        json.resize(512, b' ');
        self.0
            .extend_from_slice(&header(b"fscache-remote.json", b'0', 512, b""));
        self.0.extend_from_slice(&json);
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }

    fn unsealed(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }
}

#[test]
fn a_well_formed_raw_archive_is_accepted() -> TestResult {
    // The crafting helpers follow the documented format: a sealed archive
    // of ordinary members goes through, so the refusals below are the
    // members' doing.
    let Some(moto) = Moto::shared() else {
        return Ok(());
    };
    let bucket = moto.bucket(&bucket_name("a_well_formed_raw_archive"));
    let m = Machine::new(&moto.url(), &bucket, &quick());
    let raw = Raw::new()
        .member("data/d", b'5', b"", "")
        .file("data/d/f", b"hello")
        .member("data/l", b'2', b"", "d/f")
        .sealed();
    put_raw(&m.tiered, "crafted", raw)?;
    let hit = m.tiered.load("crafted")?.expect("accepted");
    assert_eq!(std::fs::read(hit.path().join("l"))?, b"hello");
    Ok(())
}

#[test]
fn each_hostile_object_is_refused_and_leaves_nothing() -> TestResult {
    let Some(moto) = Moto::shared() else {
        return Ok(());
    };
    let bucket = moto.bucket(&bucket_name("each_hostile_object_is_refused"));
    let outside = tempfile::tempdir()?;
    let out = outside.path().to_str().expect("utf-8").to_owned();
    let good = {
        let scratch = tempfile::tempdir()?;
        let src = tree(scratch.path(), 9);
        let mut bytes = Vec::new();
        fscache::remote::archive::pack(&src, &mut bytes)?;
        bytes
    };
    let mut flipped = good.clone();
    flipped[512 * 2 + 10] ^= 1; // inside README's content
    let mut pax = Raw::new();
    pax.0
        .extend_from_slice(&header(b"./PaxHeaders/x", b'x', 0, b""));
    type Case<'a> = (&'a str, Vec<u8>, fn(&Refusal) -> bool);
    let cases: Vec<Case> = vec![
        (
            "dotdot",
            Raw::new().file("data/../evil", b"x").sealed(),
            |r| matches!(r, Refusal::Path { .. }),
        ),
        (
            "absolute",
            Raw::new().file(&format!("{out}/evil"), b"x").sealed(),
            |r| matches!(r, Refusal::Path { .. }),
        ),
        (
            "outside-data",
            Raw::new().file("evil", b"x").sealed(),
            |r| matches!(r, Refusal::Path { .. }),
        ),
        (
            "through-link",
            Raw::new()
                .member("data/l", b'2', b"", &out)
                .file("data/l/evil", b"x")
                .sealed(),
            |r| matches!(r, Refusal::Parent { .. }),
        ),
        (
            "over-link",
            Raw::new()
                .member("data/l", b'2', b"", &format!("{out}/evil"))
                .file("data/l", b"x")
                .sealed(),
            |r| matches!(r, Refusal::Duplicate { .. }),
        ),
        (
            "into-file",
            Raw::new()
                .file("data/f", b"x")
                .file("data/f/g", b"y")
                .sealed(),
            |r| matches!(r, Refusal::Parent { .. }),
        ),
        (
            "no-parent",
            Raw::new().file("data/a/b", b"x").sealed(),
            |r| matches!(r, Refusal::Parent { .. }),
        ),
        (
            "hard-link",
            Raw::new()
                .member("data/h", b'1', b"", "/etc/passwd")
                .sealed(),
            |r| matches!(r, Refusal::HardLink { .. }),
        ),
        (
            "fifo",
            Raw::new().member("data/p", b'6', b"", "").sealed(),
            |r| {
                matches!(
                    r,
                    Refusal::Type {
                        entry_type: b'6',
                        ..
                    }
                )
            },
        ),
        (
            "char-device",
            Raw::new().member("data/c", b'3', b"", "").sealed(),
            |r| {
                matches!(
                    r,
                    Refusal::Type {
                        entry_type: b'3',
                        ..
                    }
                )
            },
        ),
        (
            "block-device",
            Raw::new().member("data/b", b'4', b"", "").sealed(),
            |r| {
                matches!(
                    r,
                    Refusal::Type {
                        entry_type: b'4',
                        ..
                    }
                )
            },
        ),
        ("pax", pax.sealed(), |r| {
            matches!(
                r,
                Refusal::Type {
                    entry_type: b'x',
                    ..
                }
            )
        }),
        (
            "duplicate",
            Raw::new()
                .file("data/a", b"1")
                .file("data/a", b"2")
                .sealed(),
            |r| matches!(r, Refusal::Duplicate { .. }),
        ),
        (
            "huge",
            Raw::new().declared("data/huge", 1 << 40).sealed(),
            |r| matches!(r, Refusal::TooLarge { .. }),
        ),
        (
            "past-the-cache-maximum",
            Raw::new().file("data/big", &vec![0u8; 70_000]).sealed(),
            |r| matches!(r, Refusal::TooLarge { limit: 65_536 }),
        ),
        ("truncated", good[..good.len() / 2].to_vec(), |r| {
            matches!(r, Refusal::Truncated)
        }),
        ("corrupt", flipped, |r| {
            matches!(r, Refusal::DigestMismatch { .. })
        }),
        (
            "no-trailer",
            Raw::new().file("data/a", b"1").unsealed(),
            |r| matches!(r, Refusal::Trailer(_)),
        ),
        (
            "trailing-bytes",
            [good.clone(), vec![0u8; 512]].concat(),
            |r| matches!(r, Refusal::Trailer(_)),
        ),
        ("not-tar", vec![0x5a; 4096], |r| {
            matches!(r, Refusal::Malformed(_))
        }),
        ("empty", Vec::new(), |r| matches!(r, Refusal::Truncated)),
    ];
    let m = Machine::new(&moto.url(), &bucket, &quick());
    m.tiered.local().set_maximum_size(MaxSize::Bytes(65_536))?;
    for (i, (name, bytes, expected)) in cases.iter().enumerate() {
        put_raw(&m.tiered, name, bytes.clone())?;
        match m.tiered.get(name)? {
            Fetch::Failed(Error::RemoteCorrupt { key, reason }) => {
                assert!(
                    expected(&reason),
                    "{name}: refused for the wrong reason: {reason}"
                );
                assert!(key.ends_with(&format!("/{name}")), "{name}: {key}");
            }
            other => panic!("{name}: not refused: {other:?}"),
        }
        assert_eq!(m.tiered.counters().refused, i as u64 + 1);
        assert_eq!(
            objects(m.cache_dir()),
            Vec::<String>::new(),
            "{name}: a leftover"
        );
        assert_eq!(
            std::fs::read_dir(outside.path())?.count(),
            0,
            "{name}: wrote outside the entry"
        );
    }
    // Refused objects are never trusted later either.
    assert!(matches!(m.tiered.get("dotdot")?, Fetch::Failed(_)));
    Ok(())
}

// ----------------------------------------------------------------- faults

const FORWARD: u8 = 0;
const ERROR_500: u8 = 1;
const STALL: u8 = 2;
const CUT_DOWN: u8 = 3;
const CUT_UP: u8 = 4;

/// A proxy on loopback between the client and moto that forwards, answers
/// 500, stalls, or cuts connections after some bytes, as told.
struct Proxy {
    port: u16,
    mode: Arc<AtomicU8>,
    cut_after: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let proxy = Proxy {
            port,
            mode: Arc::new(AtomicU8::new(FORWARD)),
            cut_after: Arc::new(AtomicU64::new(u64::MAX)),
            accepted: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (mode, cut, accepted, stop) = (
            proxy.mode.clone(),
            proxy.cut_after.clone(),
            proxy.accepted.clone(),
            proxy.stop.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                let mode = mode.load(Ordering::SeqCst);
                let cut = cut.load(Ordering::SeqCst);
                std::thread::spawn(move || serve(client, upstream, mode, cut));
            }
        });
        proxy
    }

    fn set(&self, mode: u8, cut_after: u64) {
        self.cut_after.store(cut_after, Ordering::SeqCst);
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(mut client: TcpStream, upstream: u16, mode: u8, cut: u64) {
    match mode {
        ERROR_500 => {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match client.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = client.write_all(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            let _ = client.shutdown(Shutdown::Both);
        }
        STALL => {
            // Never answer; read until the client gives up.
            let mut buf = [0u8; 4096];
            while matches!(client.read(&mut buf), Ok(n) if n > 0) {}
        }
        _ => {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            let (up_limit, down_limit) = match mode {
                CUT_UP => (cut, u64::MAX),
                CUT_DOWN => (u64::MAX, cut),
                _ => (u64::MAX, u64::MAX),
            };
            let (c2, s2) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            let up = std::thread::spawn(move || pump(c2, s2, up_limit));
            pump(server, client, down_limit);
            let _ = up.join();
        }
    }
}

/// Copy `from` to `to` until EOF, or cut both after `limit` bytes.
fn pump(mut from: TcpStream, mut to: TcpStream, limit: u64) {
    let mut buf = [0u8; 16 << 10];
    let mut sent = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = n.min(usize::try_from(limit - sent).unwrap_or(usize::MAX));
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        if sent >= limit {
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn assert_names_everything(e: &Error, op: RemoteOp, key_end: &str, port: u16) {
    let Error::Remote {
        op: got,
        key,
        endpoint,
        ..
    } = e
    else {
        panic!("not a remote error: {e:?}");
    };
    assert_eq!(*got, op, "{e}");
    assert!(key.ends_with(key_end), "{e}");
    assert!(endpoint.contains(&format!("127.0.0.1:{port}")), "{e}");
    let text = format!("{e} {e:?} {:?}", std::error::Error::source(e));
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains(SECRET), "a secret in {text}");
}

fn big_tree(dir: &Path, mib: usize) -> PathBuf {
    let src = dir.join(format!("big-{mib}"));
    std::fs::create_dir_all(&src).expect("mkdir");
    let content: Vec<u8> = (0..mib << 20).map(|i| (i % 253) as u8).collect();
    std::fs::write(src.join("blob"), content).expect("write");
    src
}

#[test]
fn a_refused_connection_is_a_miss_and_a_deferred_upload() -> TestResult {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    // Nobody listens there now.
    let m = Machine::new(&format!("http://127.0.0.1:{port}"), "nowhere", &quick());
    let scratch = tempfile::tempdir()?;
    let started = Instant::now();
    let stored = m.tiered.store_tree("built", tree(scratch.path(), 1))?;
    assert!(
        stored.commit.is_stored(),
        "the local commit stands: {stored:?}"
    );
    let Some(Upload::Deferred(e)) = &stored.upload else {
        panic!("{stored:?}");
    };
    assert_names_everything(e, RemoteOp::Put, "/built", port);
    assert!(m.tiered.load("built")?.is_some(), "local hits go on");
    let Fetch::Failed(e) = m.tiered.get("other")? else {
        panic!("not a failure");
    };
    assert_names_everything(&e, RemoteOp::Get, "/other", port);
    assert_eq!(m.tiered.counters().failures, 1);
    assert_eq!(m.tiered.counters().deferred, 1);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(objects(m.cache_dir()), vec!["built".to_owned()]);
    Ok(())
}

#[test]
fn error_answers_are_retried_a_bounded_number_of_times() -> TestResult {
    let Some(moto) = Moto::shared() else {
        return Ok(());
    };
    let bucket = moto.bucket(&bucket_name("error_answers_are_retried"));
    let proxy = Proxy::start(moto.port);
    proxy.set(ERROR_500, 0);
    let m = Machine::new(&proxy.url(), &bucket, &quick());
    let started = Instant::now();
    let Fetch::Failed(e) = m.tiered.get("x")? else {
        panic!("not a failure");
    };
    assert_names_everything(&e, RemoteOp::Get, "/x", proxy.port);
    let tries = proxy.accepted.load(Ordering::SeqCst);
    assert!(
        (1..=3).contains(&tries),
        "{tries} connections for 1 + 2 retries"
    );
    let scratch = tempfile::tempdir()?;
    let stored = m.tiered.store_tree("y", tree(scratch.path(), 2))?;
    assert!(stored.commit.is_stored());
    assert!(
        matches!(stored.upload, Some(Upload::Deferred(_))),
        "{stored:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // The server recovers: the deferred upload goes up with a push.
    proxy.set(FORWARD, 0);
    assert!(matches!(m.tiered.push("y")?, Some(Upload::Uploaded { .. })));
    Ok(())
}

#[test]
fn a_stalled_server_times_out_into_a_miss() -> TestResult {
    let Some(moto) = Moto::shared() else {
        return Ok(());
    };
    let bucket = moto.bucket(&bucket_name("a_stalled_server_times_out"));
    let proxy = Proxy::start(moto.port);
    proxy.set(STALL, 0);
    let m = Machine::new(&proxy.url(), &bucket, &quick());
    let started = Instant::now();
    let Fetch::Failed(e) = m.tiered.get("x")? else {
        panic!("not a failure");
    };
    assert_names_everything(&e, RemoteOp::Get, "/x", proxy.port);
    // Three tries of a 2 s read timeout, within the 10 s retry budget.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}

#[test]
fn a_download_cut_midway_leaves_no_local_entry() -> TestResult {
    let Some(moto) = Moto::shared() else {
        return Ok(());
    };
    let bucket = moto.bucket(&bucket_name("a_download_cut_midway"));
    let proxy = Proxy::start(moto.port);
    let a = Machine::new(&moto.url(), &bucket, &quick());
    let scratch = tempfile::tempdir()?;
    let src = big_tree(scratch.path(), 24);
    assert!(matches!(
        a.tiered.store_tree("big", &src)?.upload,
        Some(Upload::Uploaded { .. })
    ));
    let b = Machine::new(&proxy.url(), &bucket, &quick());
    proxy.set(CUT_DOWN, 1 << 20);
    let Fetch::Failed(e) = b.tiered.get("big")? else {
        panic!("not a failure");
    };
    assert_eq!(e.kind(), ErrorKind::Remote, "{e}");
    assert_names_everything(&e, RemoteOp::Get, "/big", proxy.port);
    assert_eq!(
        objects(b.cache_dir()),
        Vec::<String>::new(),
        "a partial entry"
    );
    proxy.set(FORWARD, 0);
    let hit = b
        .tiered
        .load("big")?
        .expect("whole once the server is back");
    assert_eq!(Digest::of_tree(hit.path())?, Digest::of_tree(&src)?);
    Ok(())
}

#[test]
fn an_upload_cut_midway_leaves_no_remote_object() -> TestResult {
    let Some(moto) = Moto::shared() else {
        return Ok(());
    };
    let bucket = moto.bucket(&bucket_name("an_upload_cut_midway"));
    let proxy = Proxy::start(moto.port);
    let a = Machine::new(&proxy.url(), &bucket, &quick());
    let scratch = tempfile::tempdir()?;
    let src = big_tree(scratch.path(), 24);
    proxy.set(CUT_UP, 1 << 20);
    let stored = a.tiered.store_tree("big", &src)?;
    assert!(stored.commit.is_stored());
    let Some(Upload::Deferred(e)) = &stored.upload else {
        panic!("{stored:?}");
    };
    assert_eq!(e.kind(), ErrorKind::Remote, "{e}");
    proxy.set(FORWARD, 0);
    assert_eq!(
        all_keys(&a.tiered)?,
        Vec::<String>::new(),
        "a partial object"
    );
    let b = Machine::new(&moto.url(), &bucket, &quick());
    assert!(matches!(b.tiered.get("big")?, Fetch::Miss));
    assert!(matches!(
        a.tiered.push("big")?,
        Some(Upload::Uploaded { .. })
    ));
    let hit = b.tiered.load("big")?.expect("pushed");
    assert_eq!(Digest::of_tree(hit.path())?, Digest::of_tree(&src)?);
    Ok(())
}

#[test]
fn a_stopped_server_leaves_the_local_cache_working() -> TestResult {
    let Some(moto) = Moto::start() else {
        return Ok(());
    };
    let bucket = moto.bucket("stopped");
    let (a, b) = (
        Machine::new(&moto.url(), &bucket, &quick()),
        Machine::new(&moto.url(), &bucket, &quick()),
    );
    let scratch = tempfile::tempdir()?;
    assert!(matches!(
        a.tiered.store_tree("one", tree(scratch.path(), 1))?.upload,
        Some(Upload::Uploaded { .. })
    ));
    let port = moto.port;
    moto.stop();
    assert!(matches!(b.tiered.get("one")?, Fetch::Failed(_)));
    let stored = a.tiered.store_tree("two", tree(scratch.path(), 2))?;
    assert!(stored.commit.is_stored());
    let Some(Upload::Deferred(e)) = &stored.upload else {
        panic!("{stored:?}");
    };
    assert_names_everything(e, RemoteOp::Put, "/two", port);
    assert!(a.tiered.load("one")?.is_some() && a.tiered.load("two")?.is_some());
    Ok(())
}

// ---------------------------------------------------------- the command

#[cfg(feature = "cli")]
mod command {
    use super::*;
    use std::process::Output;

    /// The command, pointed at `endpoint` through the `AWS_*` variables,
    /// with a secret key that must never be printed.
    fn fscache(endpoint: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fscache"))
            .args(args)
            .env_remove("FSCACHE_REMOTE")
            .env_remove("FSCACHE_DIR")
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_REGION", "us-east-1")
            .stdin(Stdio::null())
            .output()
            .expect("the command runs")
    }

    /// Run it, check its status, and that no output holds the secret.
    #[track_caller]
    fn expect(code: i32, endpoint: &str, args: &[&str]) -> (String, String) {
        let out = fscache(endpoint, args);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert_eq!(
            out.status.code(),
            Some(code),
            "fscache {args:?}\nstdout: {stdout}\nstderr: {stderr}"
        );
        assert!(
            !stdout.contains(SECRET) && !stderr.contains(SECRET),
            "the secret was printed by {args:?}: {stdout} {stderr}"
        );
        (stdout, stderr)
    }

    fn s(p: &Path) -> &str {
        p.to_str().expect("utf-8 path")
    }

    #[test]
    fn two_machines_share_one_bucket_through_the_command() -> TestResult {
        let Some(moto) = Moto::shared() else {
            return Ok(());
        };
        let bucket = moto.bucket(&bucket_name("two_machines_share_one_bucket_cmd"));
        let url = format!("s3://{bucket}/team");
        let ep = moto.url();
        let scratch = tempfile::tempdir()?;
        let (a, b) = (scratch.path().join("a"), scratch.path().join("b"));
        for dir in [&a, &b] {
            expect(0, &ep, &["init", s(dir), "--max-size", "unlimited"]);
        }
        let src = tree(scratch.path(), 4);
        let (put, _) = expect(
            0,
            &ep,
            &[
                "--remote",
                &url,
                "put",
                s(&a),
                "--name",
                "tool",
                "--from",
                s(&src),
            ],
        );
        assert!(put.contains("tool: uploaded"), "{put}");

        let (ls, _) = expect(0, &ep, &["--remote", &url, "remote", "ls", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&ls)?;
        assert_eq!(v["entries"][0]["name"], "tool", "{ls}");
        assert!(
            v["entries"][0]["bytes"].as_u64().is_some_and(|n| n > 3000),
            "{ls}"
        );
        let (ls, _) = expect(0, &ep, &["--remote", &url, "remote", "ls"]);
        assert!(ls.contains("tool") && ls.contains("1 entry on"), "{ls}");

        // B: `get` falls back to the remote.
        let out = scratch.path().join("out");
        expect(
            0,
            &ep,
            &[
                "--remote",
                &url,
                "get",
                s(&b),
                "--name",
                "tool",
                "--to",
                s(&out),
            ],
        );
        assert_eq!(Digest::of_tree(&out)?, Digest::of_tree(&src)?);
        // Without the remote, B has it locally now.
        let again = scratch.path().join("again");
        expect(0, &ep, &["get", s(&b), "--name", "tool", "--to", s(&again)]);

        // pull: a miss is status 1; a hit is 0.
        let (_, err) = fscache_pull(&ep, &url, &b, "absent", 1);
        assert!(err.is_empty(), "{err}");
        fscache_pull(&ep, &url, &b, "tool", 0);

        // push uploads what the remote lacks.
        expect(
            0,
            &ep,
            &["put", s(&b), "--name", "only-b", "--from", s(&src)],
        );
        let (pushed, _) = expect(0, &ep, &["--remote", &url, "remote", "push", s(&b)]);
        assert!(
            pushed.contains("only-b: uploaded") && !pushed.contains("tool"),
            "{pushed}"
        );
        let (pushed, _) = expect(0, &ep, &["--remote", &url, "remote", "push", s(&b)]);
        assert!(pushed.contains("nothing to push"), "{pushed}");

        // gc by age, dry run first.
        let (kept, _) = expect(
            0,
            &ep,
            &["--remote", &url, "remote", "gc", "--max-age", "1h"],
        );
        assert!(kept.contains("deleted 0 entries"), "{kept}");
        let (dry, _) = expect(
            0,
            &ep,
            &[
                "--remote",
                &url,
                "remote",
                "gc",
                "--max-age",
                "0s",
                "--dry-run",
                "--json",
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&dry)?;
        assert_eq!(v["removed"].as_array().map(Vec::len), Some(2), "{dry}");
        assert_eq!(v["dry_run"], true);
        let (ls, _) = expect(0, &ep, &["--remote", &url, "remote", "ls"]);
        assert!(ls.contains("2 entries"), "the dry run deleted: {ls}");
        let (gone, _) = expect(
            0,
            &ep,
            &["--remote", &url, "remote", "gc", "--max-age", "0s"],
        );
        assert!(gone.contains("deleted 2 entries"), "{gone}");
        let (ls, _) = expect(0, &ep, &["--remote", &url, "remote", "ls"]);
        assert!(ls.contains("0 entries"), "{ls}");
        Ok(())
    }

    fn fscache_pull(ep: &str, url: &str, dir: &Path, name: &str, code: i32) -> (String, String) {
        expect(
            code,
            ep,
            &["--remote", url, "remote", "pull", s(dir), "--", name],
        )
    }

    #[test]
    fn an_unreachable_remote_is_reported_without_credentials() -> TestResult {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let ep = format!("http://127.0.0.1:{port}");
        let url = "s3://nowhere/p";
        let scratch = tempfile::tempdir()?;
        let dir = scratch.path().join("c");
        expect(0, &ep, &["init", s(&dir), "--max-size", "unlimited"]);
        let (_, err) = expect(1, &ep, &["--remote", url, "remote", "ls"]);
        assert!(
            err.starts_with("fscache: failed to list `p/fscache-v1` at http://127.0.0.1:"),
            "{err}"
        );
        // A put stands locally and warns; a get misses and warns.
        let src = tree(scratch.path(), 5);
        let (out, err) = expect(
            0,
            &ep,
            &[
                "--remote",
                url,
                "put",
                s(&dir),
                "--name",
                "x",
                "--from",
                s(&src),
            ],
        );
        assert!(out.contains("x: stored"), "{out}");
        assert!(
            err.contains("upload deferred") && err.contains(&ep),
            "{err}"
        );
        let (_, err) = expect(
            1,
            &ep,
            &[
                "--remote",
                url,
                "get",
                s(&dir),
                "--name",
                "y",
                "--to",
                s(&scratch.path().join("o")),
            ],
        );
        assert!(err.contains("the remote failed"), "{err}");
        let (_, err) = expect(1, &ep, &["--remote", url, "remote", "push", s(&dir)]);
        assert!(err.contains("failed to list"), "{err}");
        // No remote at all is a usage error that says how to give one.
        let (_, err) = expect(2, &ep, &["remote", "ls"]);
        assert!(err.contains("--remote"), "{err}");
        Ok(())
    }
}

#[test]
fn inside_an_async_runtime_the_tier_refuses_rather_than_panics() -> TestResult {
    use fscache::remote::object_store::memory::InMemory;
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let dir = tempfile::tempdir()?;
    let refused = rt.block_on(async {
        let local = FsCache::open("remote-test", dir.path())?;
        local.set_maximum_size(MaxSize::Unlimited)?;
        let tiered = TieredCache::new(
            local,
            Remote::new(Arc::new(InMemory::new()), "p", "memory")?,
        );
        let got = tiered.get("x")?;
        // Dropping its runtime here must not panic either.
        drop(tiered);
        Ok::<_, Error>(matches!(got, Fetch::Failed(e) if e.kind() == ErrorKind::Remote))
    })?;
    assert!(refused, "a blocking call inside a runtime is refused");
    Ok(())
}

/// The upload reads the entry under the lock it was committed with: an
/// evictor that races every commit (another handle on the same cache, as
/// `fscache gc` in another process would be) never takes an entry before
/// it is uploaded. Before, the entry was unlocked between the commit and
/// the upload's load, and an eviction in that instant deferred the upload.
#[test]
fn an_evictor_racing_each_commit_never_defers_its_upload() -> TestResult {
    let Some(moto) = Moto::shared() else {
        return Ok(());
    };
    let bucket = moto.bucket(&bucket_name("an_evictor_racing_each_commit"));
    let machine = Machine::new(&moto.url(), &bucket, &quick());
    let evictor = FsCache::open("remote-test", machine.cache_dir())?;
    let scratch = tempfile::tempdir()?;
    let src = tree(scratch.path(), 7);
    let current = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let evictions = std::thread::spawn({
        let (current, stop) = (Arc::clone(&current), Arc::clone(&stop));
        move || {
            let mut removed = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let name = format!("raced-{}", current.load(Ordering::SeqCst));
                if matches!(evictor.evict(&name), Ok(Eviction::Removed { .. })) {
                    removed += 1;
                }
            }
            removed
        }
    });
    let mut deferred = Vec::new();
    for i in 0..ROUNDS {
        current.store(i, Ordering::SeqCst);
        let stored = machine.tiered.store_tree(&format!("raced-{i}"), &src)?;
        assert!(stored.commit.is_stored(), "{stored:?}");
        if let Some(Upload::Deferred(e)) = stored.upload {
            deferred.push(format!("raced-{i}: {e}"));
        }
    }
    stop.store(true, Ordering::SeqCst);
    let removed = evictions.join().expect("evictor");
    assert!(deferred.is_empty(), "deferred uploads: {deferred:#?}");
    // The evictor did take entries, once they were uploaded.
    assert!(removed > 0, "the evictor never removed an entry");
    Ok(())
}

/// Commits the evictor races.
const ROUNDS: u64 = 200;
