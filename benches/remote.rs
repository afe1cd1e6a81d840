//! What the remote tier costs on loopback, against moto: a remote hit
//! (a local miss that downloads, checks and commits the entry) against a
//! local hit, for 4 KiB, 1 MiB and 100 MiB entries; and what a store
//! costs with its upload against a plain local store.
//!
//! `cargo bench --features remote --bench remote`. Starts moto_server
//! itself (`$FSCACHE_MOTO`, else `/tmp/motovenv/bin/moto_server`, else
//! `PATH`), and skips with a message without one. Figures are in
//! `BENCHMARKS.md` (Remote tier).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fscache::remote::object_store::aws::AmazonS3Builder;
use fscache::remote::{Fetch, Remote, TieredCache, Tuning, Upload};
use fscache::{Eviction, FsCache, MaxSize};

struct Moto(Child, u16);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto() -> Option<Moto> {
    let bin = std::env::var_os("FSCACHE_MOTO")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| Some(PathBuf::from("/tmp/motovenv/bin/moto_server")).filter(|p| p.is_file()))
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|d| d.join("moto_server"))
                .find(|p| p.is_file())
        })?;
    let port = TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let moto = Moto(child, port);
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(60) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "PUT /bench HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let _ = s.read_to_end(&mut Vec::new());
    Some(moto)
}

fn machine(port: u16, dir: &Path) -> TieredCache {
    let local = FsCache::open("fscache-bench", dir).expect("open");
    local.set_maximum_size(MaxSize::Unlimited).expect("max");
    let builder = AmazonS3Builder::new()
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_bucket_name("bench")
        .with_access_key_id("bench")
        .with_secret_access_key("bench");
    TieredCache::new(
        local,
        Remote::from_s3(builder, "bench", &Tuning::default()).expect("remote"),
    )
}

const SIZES: [(&str, usize); 3] = [("4KiB", 4 << 10), ("1MiB", 1 << 20), ("100MiB", 100 << 20)];

fn source(dir: &Path, size: usize) -> PathBuf {
    let src = dir.join(format!("src-{size}"));
    std::fs::create_dir_all(&src).expect("mkdir");
    let content: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(src.join("blob"), content).expect("write");
    src
}

fn remote_tier(c: &mut Criterion) {
    let Some(moto) = moto() else {
        eprintln!("skipped: no moto_server (set FSCACHE_MOTO)");
        return;
    };
    let scratch = tempfile::tempdir().expect("tempdir");
    let writer = machine(moto.1, &scratch.path().join("a"));
    let reader = machine(moto.1, &scratch.path().join("b"));

    let mut hits = c.benchmark_group("hit");
    hits.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for (label, size) in SIZES {
        let name = format!("hit-{label}");
        let up = writer
            .store_tree(&name, source(scratch.path(), size))
            .expect("store")
            .upload;
        assert!(matches!(up, Some(Upload::Uploaded { .. })), "{up:?}");
        hits.throughput(Throughput::Bytes(size as u64));
        hits.bench_with_input(BenchmarkId::new("remote", label), &name, |b, name| {
            b.iter_custom(|n| {
                let mut spent = Duration::ZERO;
                for _ in 0..n {
                    let _ = reader
                        .local()
                        .evict(name)
                        .map(|e| assert!(!matches!(e, Eviction::InUse)));
                    let start = Instant::now();
                    let got = reader.get(name).expect("get");
                    spent += start.elapsed();
                    assert!(matches!(got, Fetch::Remote { .. }), "{got:?}");
                }
                spent
            })
        });
        hits.bench_with_input(BenchmarkId::new("local", label), &name, |b, name| {
            b.iter(|| {
                let got = reader.get(name).expect("get");
                assert!(matches!(got, Fetch::Local(_)));
            })
        });
    }
    hits.finish();

    let mut stores = c.benchmark_group("store");
    stores
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let mut next = 0u64;
    for (label, size) in SIZES {
        let src = source(scratch.path(), size);
        stores.throughput(Throughput::Bytes(size as u64));
        stores.bench_with_input(BenchmarkId::new("with_upload", label), &src, |b, src| {
            b.iter(|| {
                next += 1;
                let stored = writer
                    .store_tree(&format!("up-{next}"), src)
                    .expect("store");
                assert!(matches!(stored.upload, Some(Upload::Uploaded { .. })));
            })
        });
        stores.bench_with_input(BenchmarkId::new("local_only", label), &src, |b, src| {
            b.iter(|| {
                next += 1;
                let stored = writer
                    .local()
                    .store_tree(&format!("up-{next}"), src)
                    .expect("store");
                assert!(stored.is_stored());
            })
        });
    }
    stores.finish();
}

criterion_group!(benches, remote_tier);
criterion_main!(benches);
