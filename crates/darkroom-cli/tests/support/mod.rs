//! What the CLI tests share, bound to this crate's binary: the kit's clean-environment command
//! (`darkroom_testkit::cli`), a `darkroom sim` process, plain-socket HTTP, and a small preview run.

#![allow(dead_code)] // Each test file uses its own part of this.

use std::path::Path;
use std::process::{Command, Output};

#[allow(unused_imports)] // Each test file uses its own part of these.
pub use darkroom_testkit::cli::{code, first_url, get_json, http, path_of, text, Killed};
pub use darkroom_testkit::jobs::write;

/// The `darkroom` binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_darkroom");

/// The `darkroom` binary, run in `dir`, with no key, base URL or `DARKROOM_*` setting inherited
/// and its home inside `dir`.
pub fn darkroom(dir: &Path) -> Command {
    darkroom_testkit::cli::darkroom(BIN, dir)
}

/// `darkroom` pointed at a simulator process.
pub fn against(dir: &Path, sim: &SimProcess) -> Command {
    darkroom_testkit::cli::against(BIN, dir, &sim.0)
}

/// A `darkroom sim` process of this binary on a free port, killed when dropped; the kit's
/// `SimProcess` (its `base_url`, `net_billing`, `generation`) through `Deref`.
pub struct SimProcess(darkroom_testkit::cli::SimProcess);

impl SimProcess {
    /// Starts `darkroom sim --port 0 EXTRA...` in `dir`.
    pub fn start(dir: &Path, extra: &[&str]) -> SimProcess {
        SimProcess(darkroom_testkit::cli::SimProcess::start(BIN, dir, extra))
    }
}

impl std::ops::Deref for SimProcess {
    type Target = darkroom_testkit::cli::SimProcess;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// Runs a preview job of 3 rows (2 variants of the first) against the simulator.
pub fn previews(dir: &Path, sim: &SimProcess) -> Output {
    write(
        dir,
        "vases.csv",
        "id,prompt,aspect_ratio,variants,group\n\
         tall,A tall ceramic vase with dried pampas grass,3:4,2,ceramics\n\
         bowl,A shallow stoneware bowl of lemons on linen,1:1,1,ceramics\n\
         jar,A glass storage jar of coffee beans on a shelf,4:3,1,glass\n",
    );
    against(dir, sim).args(["run", "vases.csv"]).output().unwrap()
}
