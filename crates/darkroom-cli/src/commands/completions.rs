//! `darkroom completions SHELL`: a completion script for bash, zsh, fish, elvish or PowerShell,
//! generated from the same definitions as `--help`, on stdout.

use clap::CommandFactory as _;

use crate::exit::Exit;

/// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
///
/// bash: `darkroom completions bash > ~/.local/share/bash-completion/completions/darkroom`;
/// zsh: `darkroom completions zsh > ~/.zfunc/_darkroom` (with `fpath+=~/.zfunc` before compinit);
/// fish: `darkroom completions fish > ~/.config/fish/completions/darkroom.fish`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Writes the script for `args.shell` on stdout.
pub fn run(args: &Args) -> anyhow::Result<Exit> {
    let mut command = crate::Cli::command();
    // Written whole at the end, so a closed pipe (`| head`) is an error, not a panic.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "darkroom", &mut script);
    std::io::Write::write_all(&mut std::io::stdout(), &script)?;
    Ok(Exit::Done)
}
