//! The remote tier's archive reader: `unpack` never panics on any bytes,
//! and whatever it does (accept or refuse), it writes nothing outside the
//! directory it unpacks into, and on success the tree is what a second
//! unpack of the same bytes gives.

#![no_main]

use std::path::Path;

use fscache::remote::archive::{unpack, Limits};
use libfuzzer_sys::fuzz_target;

/// Small limits: a fuzzer that found a way past them would make huge
/// files, and what is checked is the bounding, not the size.
const LIMITS: Limits = Limits {
    max_bytes: 1 << 20,
    max_members: 512,
};

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list the scratch directory")
        .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fuzz_target!(|data: &[u8]| {
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let dest = scratch.path().join("data");
    std::fs::create_dir(&dest).expect("make the destination");
    let got = unpack(data, &dest, &LIMITS);
    assert_eq!(
        names(scratch.path()),
        vec!["data".to_owned()],
        "unpack wrote outside its directory"
    );
    if let Ok(done) = got {
        assert_eq!(done.bytes, data.len() as u64, "accepted without reading it all");
        assert!(done.content <= LIMITS.max_bytes);
        let again = scratch.path().join("again");
        std::fs::create_dir(&again).expect("make the second destination");
        let second = unpack(data, &again, &LIMITS).expect("the same bytes are accepted twice");
        assert_eq!(second, done);
    }
    // Read-only directories unpacked from the input must not stop the
    // cleanup: give the owner its rights back everywhere first.
    walk(scratch.path());
});

/// Make every directory below `root` the owner's to remove again.
fn walk(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut out = vec![root.to_owned()];
    let mut i = 0;
    while i < out.len() {
        let dir = out[i].clone();
        i += 1;
        if let Ok(meta) = std::fs::symlink_metadata(&dir) {
            if meta.is_dir() {
                let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
                if let Ok(rd) = std::fs::read_dir(&dir) {
                    out.extend(rd.flatten().map(|e| e.path()));
                }
            }
        }
    }
}
