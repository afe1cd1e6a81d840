//! `fscache doctor`, run as a real process: on the default file system
//! (every check, the JSON schema of the README, a directory left exactly
//! as it was, where DIR comes from), on a directory where no cache can
//! work, and, as root, on a tmpfs, an overlayfs and an XFS reflink loop
//! image mounted for the test (each skipped with a message where it
//! cannot be mounted, and unmounted whatever happens).

#![cfg(feature = "cli")]

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// `doctor DIR --json`, with its exit status, parsed.
#[track_caller]
fn doctor_json(dir: &Path) -> (i32, Value) {
    let out = command(&["doctor", s(dir), "--json"])
        .output()
        .expect("run fscache");
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor printed no JSON ({e}): {}", stdout(&out)));
    check_doctor(&doc);
    (out.status.code().expect("an exit status"), doc)
}

/// The human report, printed for the test log.
#[track_caller]
fn doctor_text(dir: &Path) -> (i32, String) {
    let out = command(&["doctor", s(dir)]).output().expect("run fscache");
    let text = stdout(&out);
    println!("fscache doctor {}:\n{text}", dir.display());
    (out.status.code().expect("an exit status"), text)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

// ---------------------------------------------------------------------
// The JSON schema (README, "JSON output").

use common::command::*;
use common::is_root;
use common::schema::{check, Schema, T};

const DOCTOR: Schema = &[
    ("path", &[T::Str]),
    ("fs_type", &[T::Str, T::Null]),
    ("fs_magic", &[T::Int, T::Null]),
    ("safe", &[T::Bool]),
    ("checks", &[T::Arr]),
    ("free_bytes", &[T::Int, T::Null]),
    ("free_inodes", &[T::Int, T::Null]),
    ("sharing", &[T::Obj, T::Null]),
];

const CHECK: Schema = &[
    ("name", &[T::Str]),
    ("status", &[T::Str]),
    ("detail", &[T::Str]),
];

const SHARING: Schema = &[
    ("shared", &[T::Bool]),
    ("summary", &[T::Str]),
    ("mode", &[T::Str]),
    ("gid", &[T::Int]),
    ("group", &[T::Str, T::Null]),
    ("umask", &[T::Str, T::Null]),
];

/// Every check, in the order reported, when the probe directory can be
/// made.
const CHECKS: &[&str] = &[
    "fs_type",
    "probe_dir",
    "ofd_locks",
    "rename_noreplace",
    "o_tmpfile",
    "openat2",
    "reflink",
    "atime",
    "free_space",
    "sharing",
];

/// A doctor report follows the schema, and `safe` says whether any check
/// failed.
#[track_caller]
fn check_doctor(doc: &Value) {
    check(doc, DOCTOR, "doctor");
    let checks = doc["checks"].as_array().expect("an array");
    for c in checks {
        check(c, CHECK, "doctor.checks[]");
        assert!(
            ["ok", "warn", "fail"].contains(&c["status"].as_str().unwrap_or_default()),
            "a status is ok, warn or fail: {c}"
        );
    }
    if !doc["sharing"].is_null() {
        check(&doc["sharing"], SHARING, "doctor.sharing");
    }
    let failed = checks.iter().any(|c| c["status"] == "fail");
    assert_eq!(doc["safe"], !failed, "safe means no check failed: {doc}");
}

/// The check called `name`.
#[track_caller]
fn named<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name}: {doc}"))
}

fn names(doc: &Value) -> Vec<&str> {
    doc["checks"]
        .as_array()
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default()
}

/// Everything below `dir` (type, size, mode), by path: what doctor must
/// leave as it was.
fn listing(dir: &Path) -> BTreeMap<PathBuf, (String, u64, u32)> {
    fn walk(root: &Path, dir: &Path, into: &mut BTreeMap<PathBuf, (String, u64, u32)>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let entry = entry.expect("an entry");
            let meta = std::fs::symlink_metadata(entry.path()).expect("lstat");
            let rel = entry.path().strip_prefix(root).expect("below").to_owned();
            into.insert(
                rel,
                (format!("{:?}", meta.file_type()), meta.len(), meta.mode()),
            );
            if meta.is_dir() {
                walk(root, &entry.path(), into);
            }
        }
    }
    let mut into = BTreeMap::new();
    walk(dir, dir, &mut into);
    into
}

// ---------------------------------------------------------------------
// Mounts (root only), unmounted whatever happens.

/// A file system mounted for one test, unmounted on drop (lazily if
/// something still holds it), even when the test fails.
struct Mounted {
    point: PathBuf,
}

impl Mounted {
    /// `mount ARGS... POINT`, or say why `test` is skipped.
    fn mount(test: &str, args: &[&str], point: &Path) -> Option<Mounted> {
        if !is_root() {
            println!("SKIPPED {test}: mounting needs root");
            return None;
        }
        match Command::new("mount").args(args).arg(point).output() {
            Ok(o) if o.status.success() => Some(Mounted {
                point: point.to_owned(),
            }),
            Ok(o) => {
                println!(
                    "SKIPPED {test}: mount {} failed: {}",
                    args.join(" "),
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
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.point)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.point).status();
        }
    }
}

/// `name` on `PATH`, or in the `sbin` directories root's `PATH` may lack.
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------
// The default file system.

#[test]
fn on_the_default_file_system_every_check_passes_and_the_directory_is_left_as_it_was() -> TestResult
{
    let t = tempfile::tempdir()?;
    let dir = t.path();
    std::fs::write(dir.join("keep"), b"mine")?;
    std::fs::create_dir(dir.join("sub"))?;
    std::fs::write(dir.join("sub/also"), b"mine too")?;
    let before = listing(dir);

    let (code, text) = doctor_text(dir);
    let (json_code, doc) = doctor_json(dir);
    assert_eq!(
        listing(dir),
        before,
        "doctor leaves DIR exactly as it was (no probe directory, no cache)"
    );
    assert_eq!((code, json_code), (0, 0), "{text}");
    assert_eq!(names(&doc), CHECKS, "every check, in order");
    assert_eq!(doc["path"], s(dir));
    assert_eq!(doc["safe"], true);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        CHECKS.len() + 1,
        "a line per check, and the verdict: {text}"
    );
    for label in [
        "file system: ",
        "probe directory: ",
        "OFD locks: conflict across descriptors",
        "RENAME_NOREPLACE: ",
        "O_TMPFILE: ",
        "openat2 RESOLVE_BENEATH: ",
        "reflink: ",
        "explicit atime updates: ",
        "free space: ",
        "sharing: ",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.get(6..).is_some_and(|l| l.starts_with(label))),
            "a line for {label:?}: {text}"
        );
    }
    assert!(
        lines[CHECKS.len()].ends_with("a cache is safe here (0 warnings)")
            || doc["fs_type"] != "ext4",
        "{text}"
    );
    assert!(doc["free_bytes"].as_u64() > Some(0), "{doc}");
    assert_eq!(
        doc["sharing"]["shared"], false,
        "a plain temporary directory is not setgid: {doc}"
    );
    assert_eq!(doc["sharing"]["summary"], "private to its owner");
    if doc["fs_type"] == "ext4" {
        for c in doc["checks"].as_array().expect("checks") {
            assert_eq!(c["status"], "ok", "on ext4 every check passes: {c}");
        }
        for line in &lines[..CHECKS.len()] {
            assert!(line.starts_with("ok    "), "{line}");
        }
        assert_eq!(doc["fs_magic"], 0xEF53);
        assert!(
            named(&doc, "reflink")["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("not supported")),
            "ext4 shares no blocks: {doc}"
        );
        assert_eq!(
            named(&doc, "rename_noreplace")["detail"],
            "refuses to replace an existing name"
        );
    } else {
        println!("the default file system is {}, not ext4: only the schema and the exit status are checked", doc["fs_type"]);
    }
    Ok(())
}

#[test]
fn the_directory_comes_from_the_argument_then_fscache_dir_then_the_current_directory() -> TestResult
{
    let t = tempfile::tempdir()?;
    let other = tempfile::tempdir()?;
    let dir = t.path().canonicalize()?;
    let path_of = |out: &Output| -> Value {
        let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        check_doctor(&doc);
        doc["path"].clone()
    };
    let out = expect_from(0, command(&["doctor", "--json"]).env("FSCACHE_DIR", &dir));
    assert_eq!(path_of(&out), s(&dir), "from FSCACHE_DIR");
    let out = expect_from(0, command(&["doctor", "--json"]).current_dir(&dir));
    assert_eq!(path_of(&out), s(&dir), "from the current directory");
    let out = expect_from(
        0,
        command(&["doctor", s(other.path()), "--json"]).env("FSCACHE_DIR", &dir),
    );
    assert_eq!(path_of(&out), s(other.path()), "an argument wins");
    assert!(listing(&dir).is_empty() && listing(other.path()).is_empty());
    Ok(())
}

#[test]
fn a_directory_where_nothing_can_be_made_is_unsafe_with_status_1_and_never_4() -> TestResult {
    let t = tempfile::tempdir()?;
    let missing = t.path().join("missing");
    let out = expect(1, &["doctor", s(&missing)]);
    let text = stdout(&out);
    assert!(
        text.starts_with("FAIL  probe directory: cannot open"),
        "{text}"
    );
    assert!(text.contains("a cache is NOT safe here"), "{text}");
    let (code, doc) = doctor_json(&missing);
    assert_eq!(code, 1);
    assert_eq!(doc["safe"], false);
    assert_eq!(names(&doc), ["probe_dir"]);
    assert_eq!(named(&doc, "probe_dir")["status"], "fail");
    assert!(
        doc["fs_type"].is_null() && doc["sharing"].is_null(),
        "{doc}"
    );
    assert!(!missing.exists(), "doctor creates nothing");
    Ok(())
}

#[test]
fn a_closed_stdout_ends_doctor_quietly_and_the_probe_is_removed() -> TestResult {
    let t = tempfile::tempdir()?;
    for args in [
        &["doctor", s(t.path())][..],
        &["doctor", s(t.path()), "--json"],
    ] {
        let (reader, writer) = std::io::pipe()?;
        drop(reader);
        let out = command(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()?;
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{args:?} says nothing");
    }
    assert!(listing(t.path()).is_empty(), "{:?}", listing(t.path()));
    Ok(())
}

#[test]
fn a_setgid_group_writable_directory_is_shared_only_under_a_umask_that_keeps_group_write(
) -> TestResult {
    let t = tempfile::tempdir()?;
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o2775))?;
    if std::fs::metadata(t.path())?.mode() & 0o2000 == 0 {
        println!("SKIPPED the sharing check: the setgid bit did not stick");
        return Ok(());
    }
    // The umask is inherited: set it for the child through a shell.
    let run = |umask: &str| -> Value {
        let out = Command::new("sh")
            .args([
                "-c",
                &format!("umask {umask} && exec \"$0\" doctor \"$1\" --json"),
            ])
            .arg(env!("CARGO_BIN_EXE_fscache"))
            .arg(t.path())
            .env_remove("FSCACHE_DIR")
            .output()
            .expect("run sh");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("JSON")
    };
    let shared = run("002");
    check_doctor(&shared);
    assert_eq!(shared["sharing"]["shared"], true, "{shared}");
    assert!(
        shared["sharing"]["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("shared with group ")),
        "{shared}"
    );
    assert_eq!(shared["sharing"]["mode"], "2775");
    assert_eq!(shared["sharing"]["umask"], "0002");
    assert_eq!(named(&shared, "sharing")["status"], "ok");
    let private = run("022");
    assert_eq!(private["sharing"]["shared"], false, "{private}");
    assert_eq!(
        named(&private, "sharing")["status"],
        "warn",
        "set up for a group, but this umask keeps entries private: {private}"
    );
    Ok(())
}

// ---------------------------------------------------------------------
// Other file systems (root only).

#[test]
fn on_a_tmpfs_reflink_is_reported_unsupported_and_a_read_only_one_is_unsafe() -> TestResult {
    let test = "on_a_tmpfs_reflink_is_reported_unsupported_and_a_read_only_one_is_unsafe";
    let base = tempfile::Builder::new()
        .prefix("fscache-doctor-")
        .tempdir()?;
    let Some(tmpfs) = Mounted::mount(
        test,
        &["-t", "tmpfs", "-o", "size=256m", "tmpfs"],
        base.path(),
    ) else {
        return Ok(());
    };
    let dir = &tmpfs.point;
    let (code, text) = doctor_text(dir);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok    reflink: not supported")),
        "{text}"
    );
    let (code, doc) = doctor_json(dir);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["fs_type"], "tmpfs");
    assert_eq!(names(&doc), CHECKS);
    let reflink = named(&doc, "reflink");
    assert_eq!(reflink["status"], "ok", "a fallback is in force: {reflink}");
    assert!(
        reflink["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("not supported") && d.contains("copy_file_range")),
        "{reflink}"
    );
    assert_eq!(named(&doc, "ofd_locks")["status"], "ok");
    assert!(listing(dir).is_empty(), "{:?}", listing(dir));

    let ok = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(dir)
        .status()?;
    assert!(ok.success(), "remount,ro");
    let (code, doc) = doctor_json(dir);
    assert_eq!(code, 1, "no probe directory, no cache: {doc}");
    assert_eq!(named(&doc, "probe_dir")["status"], "fail");
    assert!(
        named(&doc, "probe_dir")["detail"]
            .as_str()
            .is_some_and(|d| d.contains("EROFS")),
        "{doc}"
    );
    assert_eq!(doc["fs_type"], "tmpfs", "what can be known still is: {doc}");
    Ok(())
}

#[test]
fn on_an_overlayfs_doctor_says_so_and_exits_by_its_lock_check() -> TestResult {
    let test = "on_an_overlayfs_doctor_says_so_and_exits_by_its_lock_check";
    let base = tempfile::Builder::new()
        .prefix("fscache-doctor-")
        .tempdir()?;
    let Some(tmpfs) = Mounted::mount(
        test,
        &["-t", "tmpfs", "-o", "size=256m", "tmpfs"],
        base.path(),
    ) else {
        return Ok(());
    };
    for d in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir(tmpfs.point.join(d))?;
    }
    std::fs::write(tmpfs.point.join("lower/from-below"), b"lower")?;
    let layers = |d: &str| tmpfs.point.join(d).display().to_string();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        layers("lower"),
        layers("upper"),
        layers("work")
    );
    let merged = tmpfs.point.join("merged");
    let Some(overlay) =
        Mounted::mount(test, &["-t", "overlay", "-o", &options, "overlay"], &merged)
    else {
        return Ok(());
    };
    let before = listing(&overlay.point);
    let (code, text) = doctor_text(&overlay.point);
    let (json_code, doc) = doctor_json(&overlay.point);
    assert_eq!(code, json_code);
    assert_eq!(doc["fs_type"], "overlayfs");
    let fs = named(&doc, "fs_type");
    assert_eq!(fs["status"], "warn", "{fs}");
    assert!(
        fs["detail"]
            .as_str()
            .is_some_and(|d| d.contains("RENAME_NOREPLACE") && d.contains("copies it up")),
        "{fs}"
    );
    assert!(text.starts_with("warn  file system: overlayfs"), "{text}");
    let locks = named(&doc, "ofd_locks");
    let want = if locks["status"] == "ok" { 0 } else { 1 };
    assert_eq!(code, want, "the exit status follows the lock check: {text}");
    for name in ["rename_noreplace", "o_tmpfile", "reflink", "atime"] {
        println!("overlayfs {name}: {}", named(&doc, name));
    }
    assert_eq!(
        listing(&overlay.point),
        before,
        "the overlay is left as it was"
    );
    assert!(
        listing(&tmpfs.point.join("upper")).is_empty(),
        "nothing stays in the upper layer: {:?}",
        listing(&tmpfs.point.join("upper"))
    );
    drop(overlay);
    drop(tmpfs);
    Ok(())
}

#[test]
fn on_an_xfs_reflink_image_reflink_works() -> TestResult {
    let test = "on_an_xfs_reflink_image_reflink_works";
    if !is_root() {
        println!("SKIPPED {test}: mounting a loop image needs root");
        return Ok(());
    }
    let Some(mkfs) = tool("mkfs.xfs") else {
        println!("SKIPPED {test}: mkfs.xfs (xfsprogs) is not installed");
        return Ok(());
    };
    let base = tempfile::Builder::new()
        .prefix("fscache-doctor-")
        .tempdir()?;
    let img = base.path().join("img");
    std::fs::File::create(&img)?.set_len(300 << 20)?;
    match Command::new(&mkfs)
        .args(["-q", "-m", "reflink=1"])
        .arg(&img)
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            println!(
                "SKIPPED {test}: mkfs.xfs failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return Ok(());
        }
        Err(e) => {
            println!("SKIPPED {test}: cannot run mkfs.xfs: {e}");
            return Ok(());
        }
    }
    let mnt = base.path().join("mnt");
    std::fs::create_dir(&mnt)?;
    let Some(xfs) = Mounted::mount(test, &["-o", "loop", s(&img)], &mnt) else {
        return Ok(());
    };
    let before = listing(&xfs.point);
    let (code, text) = doctor_text(&xfs.point);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.lines()
            .any(|l| l == "ok    reflink: works: copies share their blocks"),
        "{text}"
    );
    let (code, doc) = doctor_json(&xfs.point);
    assert_eq!(code, 0);
    assert_eq!(doc["fs_type"], "xfs");
    assert_eq!(doc["fs_magic"], 0x5846_5342);
    assert_eq!(named(&doc, "reflink")["status"], "ok");
    assert_eq!(
        named(&doc, "reflink")["detail"],
        "works: copies share their blocks"
    );
    assert_eq!(listing(&xfs.point), before);
    Ok(())
}
