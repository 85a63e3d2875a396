//! The benchmark program: how close darkroom gets to the floor the account's limits set, what it
//! costs in CPU with the limits off, how it behaves with a million-task job, and how it compares
//! with the client a user would otherwise script. Every scenario runs against the simulator
//! (`darkroom_sim::spawn`) on loopback with a real SQLite ledger, and prints a Markdown table.
//!
//! ```sh
//! cargo run --release -p darkroom-engine --example bench -- [limit] [windows] [faults] [tail] [overhead] [scale] [naive] [shared-account] [--write BENCHMARKS.md]
//! ```
//!
//! Scenarios: `limit`, `windows` (three ways of counting a rate limit), `faults`, `tail` (the work after the last image), `overhead`, `scale` (`--scale-tasks N`), `naive`, `shared-account` (two jobs on one account
//! against one of their combined size); with none named,
//! all of these run. `trace`, `load` (loading a `--scale-tasks` job alone) and `ledger` are for diagnosis. `--write FILE` replaces the text between
//! `<!-- bench:begin -->` and `<!-- bench:end -->` in FILE with the tables, the machine and the
//! command. The simulator runs on a runtime of its own (threads named `sim`), so darkroom's CPU time
//! is the process's minus the simulator's threads'.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]

mod faults;
mod limit;
mod measure;
mod naive;
mod overhead;
mod scale;
mod setup;
mod shared;
mod tail;
mod windows;

use std::path::PathBuf;
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let mut chosen = Vec::new();
    let mut write = None;
    let mut scale_tasks = 1_000_000u64;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--write" => write = args.next().map(PathBuf::from),
            "--scale-tasks" => scale_tasks = args.next().and_then(|n| n.parse().ok()).unwrap_or(scale_tasks),
            name => chosen.push(name.to_string()),
        }
    }
    if chosen.is_empty() {
        chosen = [
            "limit",
            "windows",
            "faults",
            "tail",
            "overhead",
            "scale",
            "naive",
            "shared-account",
        ]
        .map(String::from)
        .to_vec();
    }
    // The simulator's own runtime: its threads are named, so their CPU time can be told apart.
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sim")
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("darkroom")
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .build()
        .unwrap();
    let sims = sim_rt.handle().clone();
    let report = rt.block_on(async move {
        let mut report = String::new();
        for name in &chosen {
            let section = match name.as_str() {
                "limit" => limit::limit(&sims).await,
                "windows" => windows::windows(&sims).await,
                "overhead" => overhead::overhead(&sims).await,
                "scale" => scale::scale(&sims, scale_tasks).await,
                "naive" => naive::naive(&sims).await,
                "faults" => faults::faults_one_by_one(&sims).await,
                "tail" => tail::tail(&sims).await,
                "shared-account" => shared::shared_account(&sims).await,
                "trace" => limit::trace_flaky(&sims).await,
                // Loading a job alone, for profiling.
                "load" => scale::load_only(scale_tasks).await,
                // The ledger's part alone, for profiling.
                "ledger" => {
                    let dir = tempfile::tempdir().unwrap();
                    format!(
                        "ledger transitions per task: {:.0} µs\n",
                        overhead::ledger_steps(dir.path(), 5000).await
                    )
                }
                other => panic!(
                    "unknown scenario {other:?}: limit, windows, faults, tail, overhead, scale, naive, trace, load or ledger"
                ),
            };
            println!("{section}");
            report.push_str(&section);
            report.push('\n');
        }
        report
    });
    drop(rt);
    drop(sim_rt);
    if let Some(path) = write {
        let text = std::fs::read_to_string(&path).unwrap();
        let (begin, end) = ("<!-- bench:begin -->", "<!-- bench:end -->");
        let (Some(a), Some(b)) = (text.find(begin), text.find(end)) else {
            panic!("{} has no {begin} ... {end} section", path.display());
        };
        let command: Vec<String> = std::env::args().skip(1).collect();
        let updated = format!(
            "{}{begin}\n\n{}\n`cargo run --release -p darkroom-engine --example bench -- {}`\n\n{report}{end}{}",
            &text[..a],
            measure::machine(),
            command.join(" "),
            &text[b + end.len()..]
        );
        std::fs::write(&path, updated).unwrap();
        eprintln!("updated {}", path.display());
    }
}
