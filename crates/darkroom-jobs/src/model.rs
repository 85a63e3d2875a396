//! The job model: rows as read from a job file, and tasks (one image each) expanded from them.
//!
//! These are plain values with no I/O. Reading and validating files lives in `csv_reader`,
//! `jsonl_reader` and `validate`; pricing lives in `money`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A Photon model the API accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Model {
    /// `photon-1`: the best quality, for finals.
    #[serde(rename = "photon-1")]
    Photon1,
    /// `photon-flash-1`: cheaper and faster, for previews.
    #[serde(rename = "photon-flash-1")]
    PhotonFlash1,
}

impl Model {
    /// Every model, in the order shown to users.
    pub const ALL: [Model; 2] = [Model::Photon1, Model::PhotonFlash1];

    /// The API's name (`photon-1`, `photon-flash-1`).
    pub fn as_str(self) -> &'static str {
        match self {
            Model::Photon1 => "photon-1",
            Model::PhotonFlash1 => "photon-flash-1",
        }
    }

    /// The model with the API's name `text`; `None` for any other text.
    pub fn parse(text: &str) -> Option<Model> {
        Model::ALL.into_iter().find(|m| m.as_str() == text)
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An aspect ratio the API accepts, with the pixel size the upstream returns for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AspectRatio {
    /// `1:1`.
    #[serde(rename = "1:1")]
    Square,
    /// `3:4`.
    #[serde(rename = "3:4")]
    Portrait3x4,
    /// `4:3`.
    #[serde(rename = "4:3")]
    Landscape4x3,
    /// `9:16`.
    #[serde(rename = "9:16")]
    Portrait9x16,
    /// `16:9`.
    #[serde(rename = "16:9")]
    Landscape16x9,
    /// `9:21`.
    #[serde(rename = "9:21")]
    Portrait9x21,
    /// `21:9`.
    #[serde(rename = "21:9")]
    Landscape21x9,
}

impl AspectRatio {
    /// Every aspect ratio, in the order shown to users.
    pub const ALL: [AspectRatio; 7] = [
        AspectRatio::Square,
        AspectRatio::Portrait3x4,
        AspectRatio::Landscape4x3,
        AspectRatio::Portrait9x16,
        AspectRatio::Landscape16x9,
        AspectRatio::Portrait9x21,
        AspectRatio::Landscape21x9,
    ];

    /// The API's name (`1:1`, `16:9`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AspectRatio::Square => "1:1",
            AspectRatio::Portrait3x4 => "3:4",
            AspectRatio::Landscape4x3 => "4:3",
            AspectRatio::Portrait9x16 => "9:16",
            AspectRatio::Landscape16x9 => "16:9",
            AspectRatio::Portrait9x21 => "9:21",
            AspectRatio::Landscape21x9 => "21:9",
        }
    }

    /// The aspect ratio named `text` (`W:H`, as the API writes it); `None` for any other text.
    pub fn parse(text: &str) -> Option<AspectRatio> {
        AspectRatio::ALL.into_iter().find(|a| a.as_str() == text)
    }

    /// The ratio as (width parts, height parts), e.g. (16, 9).
    pub fn parts(self) -> (u32, u32) {
        match self {
            AspectRatio::Square => (1, 1),
            AspectRatio::Portrait3x4 => (3, 4),
            AspectRatio::Landscape4x3 => (4, 3),
            AspectRatio::Portrait9x16 => (9, 16),
            AspectRatio::Landscape16x9 => (16, 9),
            AspectRatio::Portrait9x21 => (9, 21),
            AspectRatio::Landscape21x9 => (21, 9),
        }
    }

    /// The output size in pixels (width, height): Luma's published standard sizes.
    pub fn pixels(self) -> (u32, u32) {
        match self {
            AspectRatio::Square => (1536, 1536),
            AspectRatio::Portrait3x4 => (1344, 1792),
            AspectRatio::Landscape4x3 => (1792, 1344),
            AspectRatio::Portrait9x16 => (1152, 2048),
            AspectRatio::Landscape16x9 => (2048, 1152),
            AspectRatio::Portrait9x21 => (1024, 2432),
            AspectRatio::Landscape21x9 => (2432, 1024),
        }
    }

    /// The comma-separated list used in error messages.
    pub fn expected_list() -> String {
        AspectRatio::ALL.map(AspectRatio::as_str).join(", ")
    }
}

impl fmt::Display for AspectRatio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The image file format requested from the API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Format {
    /// JPEG (the default).
    #[default]
    #[serde(rename = "jpg")]
    Jpg,
    /// PNG.
    #[serde(rename = "png")]
    Png,
}

impl Format {
    /// The API's name, also the file extension (`jpg`, `png`).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Jpg => "jpg",
            Format::Png => "png",
        }
    }

    /// The format named `text` (`jpg`, `png`, lower case); `None` for any other text.
    pub fn parse(text: &str) -> Option<Format> {
        match text {
            "jpg" => Some(Format::Jpg),
            "png" => Some(Format::Png),
            _ => None,
        }
    }

    /// The file extension images of this format are written with.
    pub fn extension(self) -> &'static str {
        self.as_str()
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which pass a task belongs to: cheap previews or best-quality finals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pass {
    /// Cheap previews, for choosing.
    Preview,
    /// Best-quality finals of chosen previews.
    Final,
    /// Chosen images extended to other aspect ratios (`darkroom reframe`); never read from a job
    /// file: its tasks are made from done finals or previews.
    Reframe,
}

impl Pass {
    /// Every pass, in the order a job goes through them.
    pub const ALL: [Pass; 3] = [Pass::Preview, Pass::Final, Pass::Reframe];

    /// Its name in the ledger, paths and messages (`preview`, `final`, `reframe`).
    pub fn as_str(self) -> &'static str {
        match self {
            Pass::Preview => "preview",
            Pass::Final => "final",
            Pass::Reframe => "reframe",
        }
    }

    /// The pass named `text` (`preview`, `final`, `reframe`); `None` for any other text.
    pub fn parse(text: &str) -> Option<Pass> {
        match text {
            "preview" => Some(Pass::Preview),
            "final" => Some(Pass::Final),
            "reframe" => Some(Pass::Reframe),
            _ => None,
        }
    }
}

impl fmt::Display for Pass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which model each pass uses unless a row names its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// The model of the preview pass.
    pub preview: Model,
    /// The model of the final pass (`final` in configuration files).
    #[serde(rename = "final")]
    pub final_: Model,
}

impl Routing {
    /// The model `pass` uses unless a row names its own. A reframe is made by its source's model;
    /// without a source at hand (an estimate), the final pass's.
    pub fn model_for(&self, pass: Pass) -> Model {
        match pass {
            Pass::Preview => self.preview,
            Pass::Final | Pass::Reframe => self.final_,
        }
    }
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            preview: Model::PhotonFlash1,
            final_: Model::Photon1,
        }
    }
}

/// A reference image URL with an optional weight in 0..=1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightedUrl {
    /// The image's URL (http or https).
    pub url: String,
    /// How strongly it counts, 0..=1; the API's default when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

/// The reference images of a row, in the API's terms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct References {
    /// Up to 4 images guiding content.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_ref: Vec<WeightedUrl>,
    /// One image guiding style.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style_ref: Option<WeightedUrl>,
    /// Up to 4 images of one person (`identity0`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub character_ref: Vec<String>,
    /// One image to modify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modify_image_ref: Option<WeightedUrl>,
}

impl References {
    /// Whether the row gives no reference at all.
    pub fn is_empty(&self) -> bool {
        self.image_ref.is_empty()
            && self.style_ref.is_none()
            && self.character_ref.is_empty()
            && self.modify_image_ref.is_none()
    }
}

/// Row metadata: every column that is not a known one, carried through to the outputs.
pub type Metadata = BTreeMap<String, String>;

/// One valid row of a job file, after prompt-variable expansion and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// 1-based line of the file where the row starts.
    pub line: u64,
    /// Stable id; safe as a file name.
    pub id: String,
    /// The prompt, trimmed, 3..=5,000 characters.
    pub prompt: String,
    /// The aspect ratio (the file's default when the row leaves it empty).
    pub aspect_ratio: AspectRatio,
    /// 1..=100
    pub variants: u32,
    /// A per-row override of the pass routing.
    pub model: Option<Model>,
    /// The image format (JPEG when the row leaves it empty).
    pub format: Format,
    /// The reference images.
    pub refs: References,
    /// Every column that is not a known one, by name.
    pub metadata: Metadata,
}

/// One image to produce: (row, pass, variant).
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// The id of the row the task belongs to.
    pub row_id: String,
    /// The pass.
    pub pass: Pass,
    /// 1-based variant index.
    pub variant: u32,
    /// How many variants the row has: file names carry the index only when there are several.
    pub variants: u32,
    /// The model: the row's own, else the pass routing's.
    pub model: Model,
    /// The row's prompt.
    pub prompt: String,
    /// The row's aspect ratio.
    pub aspect_ratio: AspectRatio,
    /// The row's image format.
    pub format: Format,
    /// The row's reference images.
    pub refs: References,
    /// The row's metadata.
    pub metadata: Metadata,
    /// Hash of the normalized request (model, prompt, aspect ratio, format, references, variant).
    pub fingerprint: String,
}

impl Task {
    /// `ROWID` or `ROWID-VARIANT`, the file name without extension.
    pub fn file_stem(&self) -> String {
        if self.variants > 1 {
            format!("{}-{}", self.row_id, self.variant)
        } else {
            self.row_id.clone()
        }
    }

    /// `ROWID` or `ROWID-VARIANT`, the task's id in outputs.
    pub fn task_id(&self) -> String {
        self.file_stem()
    }
}
