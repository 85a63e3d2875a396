//! Thumbnails for the contact sheet: small JPEGs made from the images on disk, kept beside them in
//! `OUT/JOB/.thumbs/PASS/` and made again only when the image is newer than its thumbnail.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use darkroom_engine::files::write_atomically;

/// Thumbnails made for a report, keyed by (pass, task key): `None` where the image could not be
/// read.
pub type Thumbnails<'a> = HashMap<(&'static str, &'a str), Option<Vec<u8>>>;

/// The longest side of a thumbnail, in pixels.
pub const THUMB_SIZE: u32 = 256;

/// Where the thumbnail of the task `key` of `pass` lives under the job's directory.
pub fn thumb_path(job_dir: &Path, pass: &str, key: &str) -> PathBuf {
    job_dir.join(".thumbs").join(pass).join(format!("{key}.jpg"))
}

/// The thumbnail of `image` as JPEG bytes, from the cache when it is fresh. Blocking: call it on
/// the blocking pool.
pub fn thumbnail(image: &Path, cached: &Path) -> std::io::Result<Vec<u8>> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(thumb), Some(source)) = (modified(cached), modified(image)) {
        if thumb >= source {
            if let Ok(bytes) = std::fs::read(cached) {
                return Ok(bytes);
            }
        }
    }
    let picture = image::open(image).map_err(std::io::Error::other)?;
    let small = picture.thumbnail(THUMB_SIZE, THUMB_SIZE).to_rgb8();
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut Cursor::new(&mut bytes), 75)
        .encode_image(&small)
        .map_err(std::io::Error::other)?;
    // The cache is a convenience: a thumbnail that can't be stored is simply made again.
    let _ = write_atomically(cached, &bytes);
    Ok(bytes)
}

/// The thumbnails of `(pass, task key, image path)` triples, made on every core at once (each is a
/// full decode of an image the first time; later calls read them from the cache). Blocking.
pub fn make_many<'a>(job_dir: &Path, wanted: &[(&'static str, &'a str, &str)]) -> Thumbnails<'a> {
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let chunk = wanted.len().div_ceil(workers).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = wanted
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|&(label, key, path)| {
                            let made = thumbnail(Path::new(path), &thumb_path(job_dir, label, key)).ok();
                            ((label, key), made)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thumbnail_is_small_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("big.png");
        image::RgbImage::from_pixel(1024, 576, image::Rgb([200, 40, 40]))
            .save(&source)
            .unwrap();
        let cached = thumb_path(dir.path(), "preview", "big");
        let bytes = thumbnail(&source, &cached).unwrap();
        let small = image::load_from_memory(&bytes).unwrap();
        assert_eq!((small.width(), small.height()), (256, 144));
        assert_eq!(std::fs::read(&cached).unwrap(), bytes);
        assert!(thumbnail(&dir.path().join("missing.png"), &dir.path().join("m.jpg")).is_err());
    }
}
