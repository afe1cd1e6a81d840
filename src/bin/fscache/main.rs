//! `fscache`: create, inspect, prune and stress a cache directory.
//!
//! The modules: `args` (the command line), `open` (opening a cache and
//! the warnings about its `cache.info`), `entries` (which boot an
//! entry of `ls` is from), `inspect` (`init`, `stats`, `ls`, `config`), `prune` (`gc`,
//! `evict`, `clear`, `sweep`, `resync`), `transfer` (`put`, `get`,
//! `verify`), `doctor` (what the file system does for a cache), `progress`
//! (a spinner on a terminal's stderr), `stress`, `output` (a writer that
//! ends quietly on a closed pipe, human units, shared JSON pieces) and
//! `exit` (exit statuses and error messages); with the `remote` feature,
//! `remote` (`remote push|pull|ls|gc`, and the remote behind `get` and
//! `put`).

mod args;
mod doctor;
mod entries;
mod exit;
mod inspect;
mod open;
mod output;
mod progress;
mod prune;
#[cfg(feature = "remote")]
mod remote;
mod stress;
mod transfer;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};
use exit::{Failure, Status};
use open::Opener;
use output::Out;

fn run(cli: Cli, out: &mut Out) -> Result<Status, Failure> {
    let opener = Opener {
        app_id: cli.app_id,
        wait: cli.wait,
    };
    #[cfg(feature = "remote")]
    let remote = cli.remote.as_deref();
    #[cfg(not(feature = "remote"))]
    let remote: Option<&str> = None;
    match &cli.command {
        Command::Init { target, settings } => inspect::init(&opener, target, settings, out)?,
        Command::Stats { target, zero } => inspect::stats(&opener, target, *zero, out)?,
        Command::Ls {
            target,
            sort,
            limit,
        } => inspect::ls(&opener, target, *sort, *limit, out)?,
        Command::Config { target, settings } => inspect::config(&opener, target, settings, out)?,
        Command::Gc {
            target,
            max_size,
            max_age,
            dry_run,
        } => prune::gc(&opener, target, *max_size, *max_age, *dry_run, out)?,
        Command::Evict { target, names } => return prune::evict(&opener, target, names, out),
        Command::Put {
            target,
            name,
            from,
            digest,
        } => return transfer::put(&opener, remote, target, name, from, *digest, out),
        Command::Get { target, name, to } => {
            return transfer::get(&opener, remote, target, name, to, out)
        }
        #[cfg(feature = "remote")]
        Command::Remote(command) => return remote::run(&opener, remote, command, out),
        Command::Verify { target, names } => return transfer::verify(&opener, target, names, out),
        Command::Clear { target } => prune::clear(&opener, target, out)?,
        Command::Sweep { target } => prune::sweep(&opener, target, out)?,
        Command::Resync { target } => prune::resync(&opener, target, out)?,
        Command::Doctor { dir, json } => return doctor::doctor(dir.as_deref(), *json, out),
        Command::Completions { shell } => {
            let mut text = Vec::new();
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "fscache", &mut text);
            out.write_bytes(&text)?;
        }
        Command::Man => {
            let mut text = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut text)
                .map_err(Failure::from_write)?;
            out.write_bytes(&text)?;
        }
        Command::Stress(args) => {
            return stress::run(opener.app_id(), args, out).map_err(Failure::from_boxed)
        }
        Command::StressWorker(args) => {
            return stress::worker(opener.app_id(), args, out).map_err(Failure::from_boxed)
        }
    }
    Ok(Status::Ok)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout and succeed; the rest is a
            // usage error. A closed pipe is no reason to panic here either.
            let _ = e.print();
            return if e.use_stderr() {
                Status::Usage
            } else {
                Status::Ok
            }
            .into();
        }
    };
    let mut out = Out::new();
    match run(cli, &mut out).and_then(|status| out.flush().map(|()| status)) {
        Ok(status) => status.into(),
        Err(failure) => failure.report(),
    }
}
