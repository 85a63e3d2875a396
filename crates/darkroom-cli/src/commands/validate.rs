//! `darkroom validate` (being written).

use std::path::Path;

use crate::exit::Exit;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_config: Option<&Path>, _args: Args) -> anyhow::Result<Exit> {
    anyhow::bail!("not available yet")
}
