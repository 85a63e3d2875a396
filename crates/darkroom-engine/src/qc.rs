//! Quality checks: every image a run keeps is measured once, as it is downloaded, and flagged when
//! it needs a person's eye: nearly one flat colour (`blank`), a shape off the aspect ratio asked
//! for by less than the 1% that `images::verify` refuses (`dimensions`), nearly identical to
//! another variant of the same row (`duplicate`), or a suspiciously small file (`small_file`).
//!
//! [`measure`] decodes the pixels at thumbnail size (CPU work: the download step runs it on a
//! blocking thread beside `images::verify`), [`judge`] turns the measurements into the image's own flags under
//! [`QcSettings`], and [`duplicate_rule`] is what the ledger asks about each checked variant of the
//! row while it records the image (`Ledger::record_done_checked`, one transaction). The perceptual
//! hash is `image_hasher`'s gradient hash (64 bits, on a 256-pixel thumbnail): two renders of the
//! same picture are a few bits apart, different pictures dozens. A flag never stops a run or
//! changes what is paid: it is data for the outputs, the report and the review page.

use darkroom_jobs::AspectRatio;
use darkroom_ledger::{CheckedSibling, DuplicateFlag, ImageCheck, QcFlag, QcKind};

/// The thresholds of the quality checks (`[qc]` in config). Defaults: [`QcSettings::default`].
#[derive(Debug, Clone, PartialEq)]
pub struct QcSettings {
    /// Measure and flag kept images at all.
    pub enabled: bool,
    /// An image whose brightness has a spread (standard deviation, 0 to 255) at or below this is
    /// flagged `blank`. Default 3: a photograph's is rarely under 10, a flat render's near 0.
    pub blank_max_spread: f64,
    /// An image whose width ÷ height is more than this many percent off the aspect ratio asked
    /// for (or, where it differs, off the size the provider publishes for it) is flagged
    /// `dimensions`. Default 0.4. Past 1% the image is not kept at all (`images::verify`).
    pub aspect_tolerance_percent: f64,
    /// Two variants of a row whose perceptual hashes differ in at most this many bits of 64 are
    /// nearly identical: the later variant is flagged `duplicate`. Default 4.
    pub duplicate_max_distance: u32,
    /// A file smaller than this many bytes is flagged `small_file`. Default 20,480 (20 KiB): a
    /// Photon JPEG is hundreds of kilobytes.
    pub min_file_bytes: u64,
}

impl Default for QcSettings {
    fn default() -> Self {
        QcSettings {
            enabled: true,
            blank_max_spread: 3.0,
            aspect_tolerance_percent: 0.4,
            duplicate_max_distance: 4,
            min_file_bytes: 20 * 1024,
        }
    }
}

/// What [`measure`] found in an image's bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The standard deviation of the brightness (0 to 255) over a thumbnail.
    pub spread: f64,
    /// The perceptual hash, lowercase hex (16 digits: 64 bits).
    pub perceptual_hash: String,
    /// The file's size in bytes.
    pub bytes: u64,
}

/// The longest side of the thumbnail the spread and the hash are measured on, in pixels.
const THUMBNAIL: u32 = 256;

/// Decodes the image at thumbnail size (a JPEG at a fraction of its size by DCT scaling,
/// `images::small`) and measures it. CPU work: call it on a blocking thread.
///
/// # Errors
/// The decoder's error when the pixels do not decode (the header may still have verified).
pub fn measure(bytes: &[u8]) -> Result<Measured, image::ImageError> {
    let crate::images::small::Small {
        width,
        height,
        image: thumbnail,
    } = crate::images::small::decode_small(bytes, THUMBNAIL)?;
    let luma = thumbnail.to_luma8();
    let count = f64::from(luma.width() * luma.height()).max(1.0);
    let mean = luma.pixels().map(|p| f64::from(p.0[0])).sum::<f64>() / count;
    let variance = luma
        .pixels()
        .map(|p| (f64::from(p.0[0]) - mean).powi(2))
        .sum::<f64>()
        / count;
    let hash = image_hasher::HasherConfig::new()
        .hash_size(8, 8)
        .hash_alg(image_hasher::HashAlg::Gradient)
        .to_hasher()
        .hash_image(&thumbnail);
    Ok(Measured {
        width,
        height,
        spread: variance.sqrt(),
        perceptual_hash: hex(hash.as_bytes()),
        bytes: bytes.len() as u64,
    })
}

/// The image's own flags (blank, dimensions, small file) under `settings`, with its measurements
/// as the ledger keeps them. `bytes` is the size of the file as kept (with darkroom's metadata).
pub fn judge(measured: &Measured, aspect: AspectRatio, bytes: u64, settings: &QcSettings) -> ImageCheck {
    let mut flags = Vec::new();
    if measured.spread <= settings.blank_max_spread {
        flags.push(QcFlag {
            kind: QcKind::Blank,
            measured: round2(measured.spread),
            threshold: settings.blank_max_spread,
            detail: format!(
                "nearly one flat colour (brightness spread {:.1} of 255)",
                measured.spread
            ),
        });
    }
    let off = aspect_off_percent(measured.width, measured.height, aspect);
    if off > settings.aspect_tolerance_percent {
        let (w, h) = aspect.pixels();
        flags.push(QcFlag {
            kind: QcKind::Dimensions,
            measured: round2(off),
            threshold: settings.aspect_tolerance_percent,
            detail: format!(
                "{}x{} is {off:.2}% off {aspect} (expected {w}x{h})",
                measured.width, measured.height
            ),
        });
    }
    if bytes < settings.min_file_bytes {
        flags.push(QcFlag {
            kind: QcKind::SmallFile,
            measured: bytes as f64,
            threshold: settings.min_file_bytes as f64,
            detail: format!(
                "a file of {bytes} bytes for {}x{}",
                measured.width, measured.height
            ),
        });
    }
    ImageCheck {
        width: measured.width,
        height: measured.height,
        perceptual_hash: measured.perceptual_hash.clone(),
        flags,
    }
}

/// How far `width ÷ height` is from the aspect ratio, in percent: the smaller of the distances to
/// the ratio itself and to the provider's published size for it (Luma's 21:9 is 2432×1024, 1.8%
/// wider than 21:9, and is exactly what was asked for).
pub fn aspect_off_percent(width: u32, height: u32, aspect: AspectRatio) -> f64 {
    if width == 0 || height == 0 {
        return 100.0;
    }
    let actual = f64::from(width) / f64::from(height);
    let (w, h) = aspect.parts();
    let (pw, ph) = aspect.pixels();
    [f64::from(w) / f64::from(h), f64::from(pw) / f64::from(ph)]
        .into_iter()
        .map(|wanted| ((actual - wanted) / wanted).abs() * 100.0)
        .fold(f64::INFINITY, f64::min)
}

/// The task being recorded, as the duplicate rule names it.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Its row id in the ledger.
    pub task_id: i64,
    /// Its task key (`ROWID-VARIANT`).
    pub task_key: String,
    /// Its 1-based variant index.
    pub variant: u32,
    /// Its image's perceptual hash (hex).
    pub perceptual_hash: String,
}

/// The rule the ledger applies to each checked variant of the row while recording `own`: a pair
/// whose hashes are at most `settings.duplicate_max_distance` bits apart is a duplicate, flagged
/// on the later variant of the two (the higher index) and naming the earlier one.
pub fn duplicate_rule(
    own: Checked,
    settings: &QcSettings,
) -> impl FnMut(&CheckedSibling) -> Option<DuplicateFlag> + Send {
    let limit = settings.duplicate_max_distance;
    move |sibling: &CheckedSibling| {
        let distance = distance(&own.perceptual_hash, &sibling.perceptual_hash)?;
        if distance > limit {
            return None;
        }
        let own_is_later = (own.variant, own.task_id) > (sibling.variant, sibling.task_id);
        let (holder, other, other_key) = if own_is_later {
            (own.task_id, sibling.task_id, sibling.task_key.as_str())
        } else {
            (sibling.task_id, own.task_id, own.task_key.as_str())
        };
        Some(DuplicateFlag {
            holder,
            other,
            flag: QcFlag {
                kind: QcKind::Duplicate,
                measured: f64::from(distance),
                threshold: f64::from(limit),
                detail: format!("nearly identical to {other_key} ({distance} of 64 bits differ)"),
            },
        })
    }
}

/// The number of bits two hex hashes of the same length differ in; `None` when either is not hex
/// or their lengths differ (hashes made with other settings are never compared).
pub fn distance(a: &str, b: &str) -> Option<u32> {
    if a.len() != b.len() {
        return None;
    }
    let (a, b) = (unhex(a)?, unhex(b)?);
    Some(a.iter().zip(&b).map(|(x, y)| (x ^ y).count_ones()).sum())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Two decimals: a measurement as stored and shown.
fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests;
