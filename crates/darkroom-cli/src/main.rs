//! The `darkroom` binary: parses the command line, resolves config once, installs the tracing
//! subscriber, runs one command and turns its outcome into an exit code.
//!
//! Business logic lives in the library crates; each command here is glue in `commands/`.

#![warn(clippy::too_many_lines)]

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

mod commands;
mod config;
mod exit;

/// `darkroom --version`: the package version and the commit it was built from (`build.rs`).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("DARKROOM_COMMIT"),
    ")"
);

/// Generate images in bulk from Luma's Photon models under a hard cost budget.
#[derive(Debug, Parser)]
#[command(name = "darkroom", version = VERSION, about, long_about = None, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    /// A config file layered over the built-in defaults [env: DARKROOM_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<std::path::PathBuf>,

    #[command(subcommand)]
    command: Command,
}

/// The exit codes, shown under `darkroom --help` (the contract scripts rely on; `exit.rs`).
const EXIT_CODES: &str = "\
Exit codes:
  0  every task done
  1  some tasks failed or were blocked (see errors.jsonl)
  2  bad usage, config or job file (nothing was sent)
  3  the budget ran out before the job finished
  4  interrupted; the same command resumes
  5  the upstream refused us (a rejected key, no credits)
  6  the deadline passed before the job finished
  7  darkroom could not keep its records (the ledger or the disk failed); nothing is lost,
     run the same command again
141  whoever read the output went away (`darkroom status | head`); nothing is lost";

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a job file: every problem, with its line, and nothing spent.
    ///
    /// A quote never closed, or a quoted field that takes in lines shaped like rows, is an error
    /// naming its lines. Rows whose derived name (row-LINE, a template slug, a variant's -N) was
    /// taken are listed with the unique name they get; ids that differ only in letter case are an
    /// error (one file on macOS and Windows).
    Validate(commands::validate::Args),
    /// What a job file will cost and how long it will take, before spending anything.
    Estimate(commands::estimate::Args),
    /// Run a job file's pass: budgeted, rate-limited, resumable (run it again to resume).
    Run(commands::run::Args),
    /// Make a sample of a job's rows with both models and compare cost, speed and reliability.
    ///
    /// Each sampled row is made once with photon-flash-1 and once with photon-1; the figures are
    /// per model (cost per image, latency p50/p95, failure and moderation rates) and the cost of
    /// the whole job, and of --per-month images, all Flash, all Photon 1, or Flash previews with
    /// the kept share promoted (the keep rate is measured from the pairs judged in review, or an
    /// assumed 25% until then, and the output says which). The sample is seeded (the same file, --sample and --seed take the same rows) and stratified
    /// by the group and arm columns when the file has them, else spread over the file. The trial is
    /// the job JOB-trial in the ledger, under the usual budget: the same command resumes it and
    /// pays for nothing twice. Judge its pairs with `darkroom review JOB-trial`: the choices route
    /// the job's later finals (see `darkroom estimate --pass final`).
    Trial(commands::trial::Args),
    /// Show a job's progress, spend and budget.
    Status(commands::status::Args),
    /// Set or show daily and monthly spending limits of an account or a label, shared by every run.
    Budget(commands::budget::Args),
    /// Serve a local contact sheet of a job's previews: choose, export, promote.
    Review(commands::review::Args),
    /// Make finals with photon-1 from chosen previews (the same command again resumes them).
    Promote(commands::promote::Args),
    /// Extend chosen images to other aspect ratios (the same command again resumes them).
    ///
    /// Each chosen image (default: the job's done finals, or its done previews when it has none)
    /// is made in every --to aspect ratio it does not already have by the upstream's reframe,
    /// priced as a generation of the image's model and reserved against the reframe pass's own
    /// budget. The source is sent as the upstream's own URL of it, never a local file: an image
    /// whose URL has expired is named and skipped, and nothing is spent on it. Images go to
    /// OUT/JOB/reframe/KEY-W-H.EXT (a preview's: KEY-preview-W-H.EXT); results.jsonl, manifest.csv
    /// and the metadata inside each file name its source, and `darkroom export` includes them.
    /// Exit codes as for a run; 1 also when a source was skipped; 2 for a bad --to value or id,
    /// before anything is spent.
    Reframe(commands::reframe::Args),
    /// A job's spend, counts and latencies by provider and model, quality flags, prompts that need
    /// work and contact sheet, as text, JSON or one HTML file.
    Report(commands::report::Args),
    /// Write a job's deliverable (folder or zip): its images, a manifest of each file, the report.
    ///
    /// The images are the job's done finals, or its done previews when it has no final; with
    /// --kept, the previews kept in review's select.csv, each as its done final when it has one.
    /// Each image is checked against the hash the ledger recorded: a missing or changed file
    /// refuses the export, naming its row id, and nothing is written. The deliverable is written
    /// under a temporary name and renamed into place, replacing the previous export whole: the same
    /// command again gives the same files. Exit codes: 0 written; 1 an image's file is missing or
    /// changed (`darkroom verify JOB`, then the job's run or promote restores it); 2 bad usage (no
    /// such job, no done image, a kept id that names no preview with an image, a --zip path that is
    /// a directory or an existing file that is not a zip).
    Export(commands::export::Args),
    /// The price table in force on --provider (Luma's [prices] and Replicate's [replicate.prices]
    /// per image, fal's [fal.prices] per megapixel), where each price came from, and what the
    /// account was observed to charge; --check observes it with a one-image probe per model.
    Prices(commands::prices::Args),
    /// Check every done image's file against the hash the ledger recorded (exit 1 if any is
    /// missing or changed; the next run restores those).
    Verify(commands::verify::Args),
    /// Match the account's generations against the ledger: record what the upstream committed late.
    Audit(commands::audit::Args),
    /// Run a Luma-compatible simulator on loopback (tests, demos, dry runs at zero cost).
    Sim(Box<commands::sim::Args>),
    /// Show every setting as resolved and where each came from (secrets redacted).
    Config(commands::config::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(commands::completions::Args),
    /// Print the manual page (roff), or write one page per command with --out DIR.
    Man(commands::man::Args),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    init_tracing();
    exit::quiet_on_closed_stdout();
    let outcome = match cli.command {
        Command::Validate(args) => commands::validate::run(cli.config.as_deref(), args),
        Command::Estimate(args) => commands::estimate::run(cli.config.as_deref(), args),
        Command::Run(args) => commands::run::run(cli.config.as_deref(), args),
        Command::Trial(args) => commands::trial::run(cli.config.as_deref(), args),
        Command::Status(args) => commands::status::run(cli.config.as_deref(), args),
        Command::Budget(args) => commands::budget::run(cli.config.as_deref(), args),
        Command::Review(args) => commands::review::run(cli.config.as_deref(), args),
        Command::Promote(args) => commands::promote::run(cli.config.as_deref(), args),
        Command::Reframe(args) => commands::reframe::run(cli.config.as_deref(), args),
        Command::Report(args) => commands::report::run(cli.config.as_deref(), args),
        Command::Export(args) => commands::export::run(cli.config.as_deref(), args),
        Command::Prices(args) => commands::prices::run(cli.config.as_deref(), args),
        Command::Verify(args) => commands::verify::run(cli.config.as_deref(), args),
        Command::Audit(args) => commands::audit::run(cli.config.as_deref(), args),
        Command::Sim(args) => commands::sim::run(*args),
        Command::Config(args) => {
            commands::config::run(cli.config.as_deref(), &args, matches.subcommand_matches("config"))
        }
        Command::Completions(args) => commands::completions::run(&args),
        Command::Man(args) => commands::man::run(&args),
    };
    match outcome {
        Ok(exit) => exit.into(),
        Err(error) if exit::is_stdout_closed(&error) => exit::stdout_closed(),
        Err(error) => {
            exit::print_error(&error);
            exit::code_for(&error).into()
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default: warnings), never mixed with data on stdout.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let ansi = std::env::var_os("NO_COLOR").is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}
