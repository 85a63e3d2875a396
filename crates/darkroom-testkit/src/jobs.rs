//! Job files written into a test's directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Writes `text` to `dir/name` and returns the path.
///
/// # Panics
/// If the file cannot be written.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("the file is written");
    path
}

/// Writes the CSV job `dir/name` with the header `id,prompt,aspect_ratio` and `rows` rows, row `i`
/// being `row(i)` (without its line break). Returns the path.
///
/// # Panics
/// If the file cannot be written.
pub fn write_csv(dir: &Path, name: &str, rows: usize, row: impl Fn(usize) -> String) -> PathBuf {
    let mut text = String::from("id,prompt,aspect_ratio\n");
    for i in 0..rows {
        let _ = writeln!(text, "{}", row(i));
    }
    write(dir, name, &text)
}
