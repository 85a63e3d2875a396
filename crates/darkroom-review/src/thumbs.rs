//! Thumbnails for the contact sheet: small JPEGs made from the images on disk, kept beside them in
//! `OUT/JOB/.thumbs/PASS/` and made again only when the image is newer than its thumbnail.
//! [`Maker`] makes them in the background as a run writes its images, so the report that ends the
//! run finds them made.

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

/// The thumbnail of `image` as JPEG bytes, from the cache when it is fresh. A JPEG is decoded
/// straight at thumbnail size (`darkroom_engine::images::small`: an eighth of a 2048×1152 image),
/// anything else whole and resized. Blocking: call it on the blocking pool.
pub fn thumbnail(image: &Path, cached: &Path) -> std::io::Result<Vec<u8>> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(thumb), Some(source)) = (modified(cached), modified(image)) {
        if thumb >= source {
            if let Ok(bytes) = std::fs::read(cached) {
                return Ok(bytes);
            }
        }
    }
    let source = std::fs::read(image)?;
    let small = darkroom_engine::images::small::decode_small(&source, THUMB_SIZE)
        .map_err(std::io::Error::other)?
        .image
        .to_rgb8();
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut Cursor::new(&mut bytes), 75)
        .encode_image(&small)
        .map_err(std::io::Error::other)?;
    // The cache is a convenience: a thumbnail that can't be stored is simply made again.
    let _ = write_atomically(cached, &bytes);
    Ok(bytes)
}

/// The thumbnails of `(pass, task key, image path)` triples, made on every core at once (each is a
/// decode of an image the first time; later calls read them from the cache). Blocking.
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

/// Images waiting for a thumbnail at most; an image offered beyond that is left to the report
/// (which makes what it does not find cached).
pub const MAKER_QUEUE: usize = 4_096;

/// A background maker of thumbnails for the images a run writes, while the run waits on the
/// upstream: [`Maker::offer`] queues an image (never waiting), [`Maker::finish`] makes what is
/// queued and ends. Bounded: at most [`MAKER_QUEUE`] images wait, made by at most two blocking
/// threads (one on a single core). Each thumbnail is cached on disk where [`thumb_path`] says, so
/// the report reads it instead of decoding the image again.
#[derive(Debug)]
pub struct Maker {
    job_dir: PathBuf,
    queue: std::sync::mpsc::SyncSender<(PathBuf, PathBuf)>,
    stopped: std::sync::Arc<std::sync::atomic::AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Maker {
    /// Starts the maker for the job whose directory is `job_dir` (`OUT/JOB`). Call it inside a
    /// tokio runtime.
    pub fn start(job_dir: &Path) -> Maker {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 2));
        let (queue, images) = std::sync::mpsc::sync_channel::<(PathBuf, PathBuf)>(MAKER_QUEUE);
        let images = std::sync::Arc::new(std::sync::Mutex::new(images));
        let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers = (0..threads)
            .map(|_| {
                let (images, stopped) = (images.clone(), stopped.clone());
                tokio::task::spawn_blocking(move || loop {
                    // The lock is held while waiting for the next image, never while making one.
                    let next = images.lock().map_or(None, |queue| queue.recv().ok());
                    let Some((image, cached)) = next else { return };
                    if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    // A thumbnail that can't be made now is made (or reported missing) by the report.
                    let _ = thumbnail(&image, &cached);
                })
            })
            .collect();
        Maker {
            job_dir: job_dir.to_path_buf(),
            queue,
            stopped,
            workers,
        }
    }

    /// Queues the thumbnail of the image at `image`, task `key` of `pass` (`preview`, `final`).
    /// Never waits: with the queue full the image is left to the report.
    pub fn offer(&self, pass: &str, key: &str, image: &Path) {
        let cached = thumb_path(&self.job_dir, pass, key);
        let _ = self.queue.try_send((image.to_path_buf(), cached));
    }

    /// Leaves the thumbnails still queued unmade (a run interrupted leaves at once) and ends once
    /// the ones being made are written.
    pub async fn stop(self) {
        self.stopped.store(true, std::sync::atomic::Ordering::Relaxed);
        self.finish().await;
    }

    /// Makes the thumbnails still queued, then ends.
    pub async fn finish(self) {
        drop(self.queue);
        for worker in self.workers {
            let _ = worker.await;
        }
    }
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_maker_caches_each_offered_image_s_thumbnail_where_the_report_looks() {
        let dir = tempfile::tempdir().unwrap();
        let job_dir = dir.path().join("job");
        let maker = Maker::start(&job_dir);
        for key in ["a", "b", "c"] {
            let image = dir.path().join(format!("{key}.png"));
            image::RgbImage::from_pixel(640, 480, image::Rgb([10, 120, 200]))
                .save(&image)
                .unwrap();
            maker.offer("preview", key, &image);
        }
        maker.offer("preview", "gone", &dir.path().join("gone.png"));
        maker.finish().await;
        for key in ["a", "b", "c"] {
            let made = std::fs::read(thumb_path(&job_dir, "preview", key)).unwrap();
            let small = image::load_from_memory(&made).unwrap();
            assert_eq!((small.width(), small.height()), (256, 192));
            // The report's read is a cache hit: the same bytes, the cached file not written again.
            let cached = thumb_path(&job_dir, "preview", key);
            let written = std::fs::metadata(&cached).unwrap().modified().unwrap();
            let image = dir.path().join(format!("{key}.png"));
            assert_eq!(thumbnail(&image, &cached).unwrap(), made);
            assert_eq!(std::fs::metadata(&cached).unwrap().modified().unwrap(), written);
        }
        assert!(!thumb_path(&job_dir, "preview", "gone").exists());
    }
}
