//! Rebuilds the ledger when a migration is added, edited or removed: `sqlx::migrate!` embeds the
//! files of the top-level `migrations/` at compile time, and cargo would not otherwise look at them,
//! so an incremental build could run old migrations and miss a landed one that was edited.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
