//! Verifying a downloaded image, hashing it, and writing it into place atomically.
//!
//! An image counts only once its header parses, it is whole (it ends as a whole JPEG or PNG does),
//! its format is the one asked for, and its dimensions match the task's aspect ratio within 1%. It
//! is written to a temporary file beside its final path, synced, renamed into place, and the
//! directory synced: after a crash the file is either whole or absent, never half-written.
//!
//! An image is identified by its content: [`content_of`] and [`file_content`] give its BLAKE3 hash
//! and size, and [`keep_aside`] preserves bytes the ledger still points at (under
//! `DIR/.superseded/`) before their path is written for another task. Deciding what to move and
//! recording it is `crate::content`'s.

pub mod small;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use darkroom_jobs::{AspectRatio, Format};
use darkroom_ledger::ImageContent;

/// Why downloaded bytes are not an acceptable image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not an image we can read, or not whole (the decoder's or the check's words).
    #[error("the image does not decode: {0}")]
    Undecodable(String),
    /// A whole image of another format than the task asked for.
    #[error("the image is {found}, not the {expected} asked for")]
    WrongFormat {
        /// The format asked for (`jpg`, `png`).
        expected: &'static str,
        /// The format found in the header.
        found: String,
    },
    /// A whole image whose width ÷ height is more than 1% off the aspect ratio asked for.
    #[error("the image is {width}x{height}, which is not {expected} within 1%")]
    WrongShape {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// The aspect ratio asked for.
        expected: AspectRatio,
    },
}

/// Checks format, shape and wholeness without decoding the pixels: the header is parsed for the
/// format and dimensions (JPEG segments up to the start of scan, PNG's `IHDR`), and the file must
/// end the way a whole one does (JPEG's end-of-image marker, PNG's `IEND` chunk), so a download cut
/// short is refused. Decoding every pixel would cost milliseconds an image and catch nothing more
/// that a download can get wrong. Cheap enough to call on the async runtime.
pub fn verify(bytes: &[u8], format: Format, aspect: AspectRatio) -> Result<(u32, u32), VerifyError> {
    let found = image::guess_format(bytes).map_err(|e| VerifyError::Undecodable(e.to_string()))?;
    let expected = match format {
        Format::Jpg => image::ImageFormat::Jpeg,
        Format::Png => image::ImageFormat::Png,
    };
    if found != expected {
        return Err(VerifyError::WrongFormat {
            expected: format.as_str(),
            found: format!("{found:?}"),
        });
    }
    let (width, height) = image::ImageReader::with_format(std::io::Cursor::new(bytes), found)
        .into_dimensions()
        .map_err(|e| VerifyError::Undecodable(e.to_string()))?;
    if !ends_whole(bytes, format) {
        return Err(VerifyError::Undecodable(format!(
            "the {} ends before its {} (cut short)",
            format.as_str(),
            match format {
                Format::Jpg => "end-of-image marker",
                Format::Png => "IEND chunk",
            }
        )));
    }
    if !shape_matches(width, height, aspect) {
        return Err(VerifyError::WrongShape {
            width,
            height,
            expected: aspect,
        });
    }
    Ok((width, height))
}

/// Whether the bytes end as a whole file of this format does: JPEG with the end-of-image marker
/// (`FF D9`, padding bytes after it tolerated), PNG with its `IEND` chunk and that chunk's CRC.
fn ends_whole(bytes: &[u8], format: Format) -> bool {
    match format {
        Format::Jpg => {
            // Some encoders pad after EOI with zeros or line ends; nothing else may follow it.
            let end = bytes
                .iter()
                .rposition(|b| !matches!(b, 0x00 | b'\r' | b'\n'))
                .map_or(0, |i| i + 1);
            end >= 4 && bytes[end - 2..end] == [0xFF, 0xD9]
        }
        Format::Png => bytes.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82]),
    }
}

/// Whether width:height is the aspect ratio within 1%, or exactly Luma's published size for it
/// (2432×1024 for 21:9 is 1.8% wider than 21:9, and is what the API returns).
pub fn shape_matches(width: u32, height: u32, aspect: AspectRatio) -> bool {
    if width == 0 || height == 0 {
        return false;
    }
    if (width, height) == aspect.pixels() {
        return true;
    }
    let (w, h) = aspect.parts();
    let actual = f64::from(width) / f64::from(height);
    let wanted = f64::from(w) / f64::from(h);
    ((actual - wanted) / wanted).abs() <= 0.01
}

/// An image written and synced to a temporary file beside its final path, not yet in place:
/// [`StagedImage::commit`] renames it there. Dropped uncommitted, the temporary file is removed.
#[derive(Debug)]
pub struct StagedImage {
    tmp: PathBuf,
    path: PathBuf,
    committed: bool,
}

/// Writes `bytes` to a temporary file beside `path` (creating the directory) and syncs it.
pub fn stage(path: &Path, bytes: &[u8]) -> std::io::Result<StagedImage> {
    std::fs::create_dir_all(parent_of(path))?;
    let staged = StagedImage {
        tmp: temporary_path(path),
        path: path.to_path_buf(),
        committed: false,
    };
    let mut file = std::fs::File::create(&staged.tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(staged)
}

impl StagedImage {
    /// Renames the temporary file into place and syncs the directory.
    pub fn commit(mut self) -> std::io::Result<()> {
        std::fs::rename(&self.tmp, &self.path)?;
        self.committed = true;
        sync_dir(parent_of(&self.path))
    }
}

impl Drop for StagedImage {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The BLAKE3 hash (lowercase hex) and size of an image's bytes.
pub fn content_of(bytes: &[u8]) -> ImageContent {
    ImageContent {
        hash: blake3::hash(bytes).to_hex().to_string(),
        bytes: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
    }
}

/// The hash and size of the file at `path`, read in 64 KiB pieces (never whole in memory).
pub fn file_content(path: &Path) -> std::io::Result<ImageContent> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        let read = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..read]);
        total += read as u64;
    }
    Ok(ImageContent {
        hash: hasher.finalize().to_hex().to_string(),
        bytes: i64::try_from(total).unwrap_or(i64::MAX),
    })
}

/// The directory, beside a pass's images, where bytes a superseded (or other) task still points
/// at are kept when their path is written for another task.
pub const SUPERSEDED_DIR: &str = ".superseded";

/// Where the bytes at `path` with this hash are kept aside: `DIR/.superseded/STEM-HASH8.EXT`.
/// Named by content, so keeping the same bytes aside twice lands on the same file.
pub fn superseded_path(path: &Path, hash: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let short = hash.get(..8).unwrap_or(hash);
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{short}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{short}"),
    };
    parent_of(path).join(SUPERSEDED_DIR).join(name)
}

/// Keeps the bytes now at `path` also at `aside`, durably, without touching `path`: a hard link
/// (no copy; the next write to `path` renames a new file over it and leaves the link alone), or a
/// copy where the file system has no links. Made under a temporary name and renamed into place, so
/// `aside` is whole or absent.
pub fn keep_aside(path: &Path, aside: &Path) -> std::io::Result<()> {
    let dir = parent_of(aside);
    std::fs::create_dir_all(dir)?;
    let tmp = temporary_path(aside);
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        if std::fs::hard_link(path, &tmp).is_err() {
            let bytes = std::fs::read(path)?;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, aside)?;
        // Renaming a link over another link to the same file does nothing (POSIX): the bytes
        // were already kept there, and the temporary name must go.
        if tmp.exists() {
            std::fs::remove_file(&tmp)?;
        }
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Removes temporary files a killed run left in `dir` and in its `.superseded/` (`.NAME.PID.tmp`).
/// Call it only while holding the job's lock: then no other process can be writing there. Returns
/// how many were removed.
pub fn remove_stale_temporaries(dir: &Path) -> std::io::Result<usize> {
    Ok(remove_temporaries_in(dir)? + remove_temporaries_in(&dir.join(SUPERSEDED_DIR))?)
}

fn remove_temporaries_in(dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".tmp") && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

pub(crate) fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(width, height, image::Rgb([200, 30, 60]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    #[test]
    fn an_image_of_the_right_shape_and_format_passes() {
        assert_eq!(
            verify(&jpeg(160, 90), Format::Jpg, AspectRatio::Landscape16x9),
            Ok((160, 90))
        );
    }

    #[test]
    fn a_wrong_shape_a_wrong_format_and_garbage_are_refused() {
        assert!(matches!(
            verify(&jpeg(100, 100), Format::Jpg, AspectRatio::Landscape16x9),
            Err(VerifyError::WrongShape { .. })
        ));
        assert!(matches!(
            verify(&jpeg(100, 100), Format::Png, AspectRatio::Square),
            Err(VerifyError::WrongFormat { .. })
        ));
        let mut truncated = jpeg(64, 64);
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(
            verify(&truncated, Format::Jpg, AspectRatio::Square),
            Err(VerifyError::Undecodable(_))
        ));
        assert!(verify(b"<html>", Format::Jpg, AspectRatio::Square).is_err());
    }

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(width, height, image::Rgb([20, 130, 60]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn an_image_cut_short_anywhere_after_its_header_is_refused() {
        for (bytes, format) in [(jpeg(320, 180), Format::Jpg), (png(320, 180), Format::Png)] {
            assert_eq!(verify(&bytes, format, AspectRatio::Landscape16x9), Ok((320, 180)));
            for cut in [1, 2, 11, bytes.len() / 3, bytes.len() - 40] {
                let short = &bytes[..bytes.len() - cut];
                assert!(
                    matches!(
                        verify(short, format, AspectRatio::Landscape16x9),
                        Err(VerifyError::Undecodable(_))
                    ),
                    "{format:?} cut by {cut}"
                );
            }
        }
        // Padding after the end-of-image marker is tolerated; anything else is not.
        let mut padded = jpeg(160, 90);
        padded.extend_from_slice(&[0, 0, b'\n']);
        assert!(verify(&padded, Format::Jpg, AspectRatio::Landscape16x9).is_ok());
        padded.push(b'x');
        assert!(verify(&padded, Format::Jpg, AspectRatio::Landscape16x9).is_err());
    }

    #[test]
    fn luma_sizes_match_their_ratios_and_one_percent_off_is_the_edge() {
        for aspect in AspectRatio::ALL {
            let (w, h) = aspect.pixels();
            assert!(shape_matches(w, h, aspect), "{aspect}");
        }
        assert!(shape_matches(1000, 1009, AspectRatio::Square));
        assert!(!shape_matches(1000, 1020, AspectRatio::Square));
        // Luma's 21:9 is 2432×1024 (1.8% off 21:9): accepted at exactly that size, not near it.
        assert!(!shape_matches(2420, 1024, AspectRatio::Landscape21x9));
    }

    #[test]
    fn stale_temporary_files_from_a_killed_run_are_swept() {
        // Found by the kill test: a SIGKILL between create and rename left `.x.jpg.PID.tmp` behind.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".x.jpg.4242.tmp"), b"half").unwrap();
        std::fs::write(dir.path().join("x.jpg"), b"whole").unwrap();
        assert_eq!(remove_stale_temporaries(dir.path()).unwrap(), 1);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["x.jpg"]);
        assert_eq!(remove_stale_temporaries(&dir.path().join("missing")).unwrap(), 0);
    }

    #[test]
    fn bytes_kept_aside_survive_a_new_image_renamed_over_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sku-a.jpg");
        crate::files::write_atomically(&path, b"the bicycle").unwrap();
        let old = file_content(&path).unwrap();
        assert_eq!(old, content_of(b"the bicycle"));
        assert_eq!(old.bytes, 11);
        let aside = superseded_path(&path, &old.hash);
        assert_eq!(
            aside,
            dir.path()
                .join(".superseded")
                .join(format!("sku-a-{}.jpg", &old.hash[..8]))
        );
        keep_aside(&path, &aside).unwrap();
        // Kept aside twice (a retry after a crash): the same file, still whole.
        keep_aside(&path, &aside).unwrap();
        crate::files::write_atomically(&path, b"the kayak").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"the kayak");
        assert_eq!(std::fs::read(&aside).unwrap(), b"the bicycle");
        let names: Vec<_> = std::fs::read_dir(aside.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");
    }

    #[test]
    fn a_staged_image_is_not_in_place_until_committed_and_leaves_nothing_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jpg");
        let staged = stage(&path, b"bytes").unwrap();
        assert!(!path.exists());
        drop(staged);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        stage(&path, b"bytes").unwrap().commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"bytes");
        // A killed run's temporary file in .superseded/ is swept too.
        std::fs::create_dir_all(dir.path().join(SUPERSEDED_DIR)).unwrap();
        std::fs::write(dir.path().join(SUPERSEDED_DIR).join(".y.jpg.42.tmp"), b"half").unwrap();
        assert_eq!(remove_stale_temporaries(dir.path()).unwrap(), 1);
    }

    #[test]
    fn an_atomic_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join("x.jpg");
        crate::files::write_atomically(&path, b"bytes").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"bytes");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["x.jpg"]);
    }
}
