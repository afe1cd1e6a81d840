//! Peak memory of one upload or one download of a large entry through
//! the remote tier: `VmHWM` (peak RSS) of this process before and after.
//!
//! ```text
//! moto_server -H 127.0.0.1 -p 5000 &
//! curl -X PUT http://127.0.0.1:5000/rss
//! export AWS_ENDPOINT_URL=http://127.0.0.1:5000 AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x
//! cargo run --release --features remote --example remote_rss -- up   s3://rss/p 1024 /tmp/a
//! cargo run --release --features remote --example remote_rss -- down s3://rss/p 1024 /tmp/b
//! ```
//!
//! `up` writes an entry of SIZE MiB into a cache at DIR and stores it
//! (local commit, then the upload); `down` fetches it into another cache.

use std::io::Write;
use std::time::Instant;

use fscache::remote::{Fetch, Remote, TieredCache};
use fscache::{FsCache, MaxSize};

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, url, mib, dir] = &args[..] else {
        return Err("usage: remote_rss up|down s3://BUCKET/PREFIX SIZE_MIB DIR".into());
    };
    let mib: usize = mib.parse()?;
    let dir = std::path::Path::new(dir);
    let local = FsCache::open("rss", dir.join("cache"))?;
    local.set_maximum_size(MaxSize::Unlimited)?;
    let tiered = TieredCache::new(local, Remote::from_url(url)?);
    let name = format!("rss-{mib}");
    if mode == "up" {
        let src = dir.join("src");
        std::fs::create_dir_all(&src)?;
        let mut f = std::fs::File::create(src.join("blob"))?;
        let mut chunk = vec![0u8; 1 << 20];
        for i in 0..mib {
            for (j, b) in chunk.iter_mut().enumerate() {
                *b = ((i * 131 + j * 7) % 251) as u8;
            }
            f.write_all(&chunk)?;
        }
        drop(f);
        let before = vm_hwm_kib();
        let start = Instant::now();
        let stored = tiered.store_tree(&name, &src)?;
        let took = start.elapsed();
        println!(
            "up {mib} MiB: {:?} in {took:.2?}; VmHWM {before} KiB before, {} KiB after",
            stored.upload,
            vm_hwm_kib()
        );
    } else {
        let before = vm_hwm_kib();
        let start = Instant::now();
        let got = tiered.get(&name)?;
        let took = start.elapsed();
        let ok = matches!(got, Fetch::Remote { .. });
        println!(
            "down {mib} MiB: remote hit {ok} in {took:.2?}; VmHWM {before} KiB before, {} KiB after",
            vm_hwm_kib()
        );
        if !ok {
            return Err(format!("{got:?}").into());
        }
    }
    Ok(())
}
