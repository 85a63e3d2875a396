//! `[qc]`: the quality checks every kept image gets and their thresholds, checked for range when
//! the config is read (a value out of range is reported against the file that set it).

use serde::Deserialize;

/// The quality checks' settings as written in config, before their ranges are checked.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQc {
    enabled: bool,
    blank_max_spread: f64,
    aspect_tolerance_percent: f64,
    duplicate_max_distance: u32,
    min_file_kib: u64,
}

/// `[qc]`, with every value within its range.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "RawQc")]
pub struct QcConfig {
    /// Measure and flag kept images.
    pub enabled: bool,
    /// Brightness spread (0 to 255) at or below which an image is `blank`.
    pub blank_max_spread: f64,
    /// Percent off the aspect ratio (0 to 1) past which an image is flagged `dimensions`.
    pub aspect_tolerance_percent: f64,
    /// Bits of 64 (0 to 64) within which two variants' hashes are a `duplicate`.
    pub duplicate_max_distance: u32,
    /// KiB under which a file is `small_file`.
    pub min_file_kib: u64,
}

impl TryFrom<RawQc> for QcConfig {
    type Error = String;

    fn try_from(raw: RawQc) -> Result<QcConfig, String> {
        let within = |name: &str, value: f64, max: f64| {
            if (0.0..=max).contains(&value) {
                Ok(())
            } else {
                Err(format!("qc.{name} = {value} is outside 0 to {max}"))
            }
        };
        within("blank_max_spread", raw.blank_max_spread, 255.0)?;
        // Past 1% an image is not kept at all, so a larger tolerance could never flag anything.
        within("aspect_tolerance_percent", raw.aspect_tolerance_percent, 1.0)?;
        within(
            "duplicate_max_distance",
            f64::from(raw.duplicate_max_distance),
            64.0,
        )?;
        Ok(QcConfig {
            enabled: raw.enabled,
            blank_max_spread: raw.blank_max_spread,
            aspect_tolerance_percent: raw.aspect_tolerance_percent,
            duplicate_max_distance: raw.duplicate_max_distance,
            min_file_kib: raw.min_file_kib,
        })
    }
}

impl QcConfig {
    /// The engine's settings.
    pub fn to_settings(self) -> darkroom_engine::qc::QcSettings {
        darkroom_engine::qc::QcSettings {
            enabled: self.enabled,
            blank_max_spread: self.blank_max_spread,
            aspect_tolerance_percent: self.aspect_tolerance_percent,
            duplicate_max_distance: self.duplicate_max_distance,
            min_file_bytes: self.min_file_kib.saturating_mul(1024),
        }
    }
}
