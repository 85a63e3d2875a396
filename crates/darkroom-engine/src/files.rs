//! Writing a file into place atomically, for every file darkroom writes whole: images, the report,
//! the review page's export, thumbnails. Verifying and keeping images aside is `images`'s.

use std::path::Path;

use crate::images::stage;

/// Writes `bytes` to `path` atomically: temporary file beside it, sync, rename, sync the
/// directory (created when missing). After a crash the file is either whole or absent.
///
/// # Errors
/// Any I/O error creating the directory, writing, syncing or renaming.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    stage(path, bytes)?.commit()
}
