//! One module per command: argument structs (clap) and the glue that runs them.

pub mod estimate;
pub mod sim;
pub mod validate;
