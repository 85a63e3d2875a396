//! Thumbnails for the contact sheet: small JPEGs made from the images on disk, kept beside them in
//! `OUT/JOB/.thumbs/PASS/` and made again only when the image is newer than its thumbnail.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use crate::images::write_atomically;

/// The longest side of a thumbnail, in pixels.
pub const THUMB_SIZE: u32 = 256;

/// Where the thumbnail of `image` lives.
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
