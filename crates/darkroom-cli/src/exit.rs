//! Exit codes, the contract scripts rely on, and printing an error once.
//!
//! 0 every task done; 1 some tasks failed or were blocked; 2 bad usage, config or job file;
//! 3 budget exhausted before the job finished; 4 interrupted (resumable); 5 the upstream refused us;
//! 6 the deadline passed before the job finished (resumable); 7 darkroom could not keep its records
//! (the ledger or the disk failed; resumable).
//!
//! Exit 2 is only for what the user can fix in the command, the config or the job file: every such
//! error is a [`Failure`] that says so. Anything else (a ledger or disk error, an internal one) is 7,
//! so a script never takes a failed ledger for a bad job file.

use std::process::ExitCode;

/// How a command ended, as the exit code users and scripts see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: everything asked for is done.
    Done,
    /// 1: some tasks failed or were blocked.
    SomeFailed,
    /// 2: bad usage, config or job file.
    BadInput,
    /// 3: the budget ran out before the job finished.
    BudgetExhausted,
    /// 4: interrupted; running the same command again resumes.
    Interrupted,
    /// 5: the upstream refused us (bad key, no credits).
    Refused,
    /// 6: the deadline passed before the job finished; running again (with a new deadline) resumes.
    Deadline,
    /// 7: darkroom could not keep its records (the ledger or the disk failed, or an internal
    /// error); nothing is lost, and running the same command again resumes.
    RecordsFailed,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(match exit {
            Exit::Done => 0,
            Exit::SomeFailed => 1,
            Exit::BadInput => 2,
            Exit::BudgetExhausted => 3,
            Exit::Interrupted => 4,
            Exit::Refused => 5,
            Exit::Deadline => 6,
            Exit::RecordsFailed => 7,
        })
    }
}

/// An error that carries its own exit code (bad input, refusal); anything else is exit 7.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
    pub hint: Option<String>,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure {
            exit,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }
}

/// What exit 7 tells the user when the error brings no hint of its own.
pub const RECORDS_FAILED_HINT: &str = "darkroom could not keep its records (the ledger or the disk failed); \
nothing is lost: fix the cause above, then run the same command again";

/// The exit code for an error that ended a command: the [`Failure`]'s own, else 7 (an error nobody
/// classified as bad input is the ledger's, the disk's or darkroom's, never the user's file).
pub fn code_for(error: &anyhow::Error) -> Exit {
    error
        .downcast_ref::<Failure>()
        .map_or(Exit::RecordsFailed, |f| f.exit)
}

/// The exit status when whoever read stdout went away (`darkroom status | head`): 141, what a
/// shell reports for a process ended by `SIGPIPE`, as `git log | head` or `ls | head` end.
pub const STDOUT_CLOSED: u8 = 141;

/// Ends the process quietly with [`STDOUT_CLOSED`]: the reader of stdout has gone, so nothing
/// more can be shown. Nothing is lost by it: every change is in the ledger before it is printed,
/// and a run ended this way resumes with the same command.
pub fn stdout_closed() -> ! {
    std::process::exit(i32::from(STDOUT_CLOSED))
}

/// Whether `error` is stdout's reader having gone away (an `io::Error` of kind `BrokenPipe` from
/// a write to stdout), which ends the process quietly instead of as a failure.
pub fn is_stdout_closed(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Installs a panic hook that ends the process quietly when `println!` finds stdout's reader
/// gone (std panics there), and leaves every other panic to the default hook.
pub fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            stdout_closed();
        }
        default(info);
    }));
}

/// Prints an error once on stderr: the sentence, its causes, then a hint where one helps.
pub fn print_error(error: &anyhow::Error) {
    eprintln!("error: {error}");
    for cause in error.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    let hint = match error.downcast_ref::<Failure>() {
        Some(failure) => failure.hint.as_deref(),
        None => Some(RECORDS_FAILED_HINT),
    };
    if let Some(hint) = hint {
        eprintln!("hint: {hint}");
    }
}
