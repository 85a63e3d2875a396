//! `darkroom man`: the manual page, generated from the same definitions as `--help` (roff): the
//! main page on stdout, or with `--out DIR` one page per command (`darkroom.1`,
//! `darkroom-run.1`, ...) written there.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::exit::Exit;

/// Print darkroom's manual page (roff) on stdout, or write one page per command into a directory.
///
/// Read it with `darkroom man | man -l -`; install with `darkroom man --out ~/.local/share/man/man1`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write darkroom.1 and one darkroom-COMMAND.1 per command into DIR (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Prints or writes the pages.
pub fn run(args: &Args) -> anyhow::Result<Exit> {
    let command = crate::Cli::command();
    match &args.out {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command).render(&mut page)?;
            std::io::Write::write_all(&mut std::io::stdout(), &page)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
            write_pages(command, dir)?;
            eprintln!("manual pages written to {}", dir.display());
        }
    }
    Ok(Exit::Done)
}

/// Writes the page of `command` and of each of its subcommands, named `darkroom-SUB.1`.
fn write_pages(command: clap::Command, dir: &Path) -> anyhow::Result<()> {
    let mut command = command;
    command.build();
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("darkroom-{}", sub.get_name());
        let page = clap_mangen::Man::new(sub.clone()).title(name.to_uppercase());
        write_page(&page, &dir.join(format!("{name}.1")))?;
    }
    write_page(&clap_mangen::Man::new(command), &dir.join("darkroom.1"))
}

fn write_page(man: &clap_mangen::Man, path: &Path) -> anyhow::Result<()> {
    let mut page = Vec::new();
    man.render(&mut page)?;
    std::fs::write(path, page).with_context(|| format!("could not write {}", path.display()))
}
