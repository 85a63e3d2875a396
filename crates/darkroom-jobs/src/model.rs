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
    #[serde(rename = "photon-1")]
    Photon1,
    #[serde(rename = "photon-flash-1")]
    PhotonFlash1,
}

impl Model {
    pub const ALL: [Model; 2] = [Model::Photon1, Model::PhotonFlash1];

    pub fn as_str(self) -> &'static str {
        match self {
            Model::Photon1 => "photon-1",
            Model::PhotonFlash1 => "photon-flash-1",
        }
    }

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
    #[serde(rename = "1:1")]
    Square,
    #[serde(rename = "3:4")]
    Portrait3x4,
    #[serde(rename = "4:3")]
    Landscape4x3,
    #[serde(rename = "9:16")]
    Portrait9x16,
    #[serde(rename = "16:9")]
    Landscape16x9,
    #[serde(rename = "9:21")]
    Portrait9x21,
    #[serde(rename = "21:9")]
    Landscape21x9,
}

impl AspectRatio {
    pub const ALL: [AspectRatio; 7] = [
        AspectRatio::Square,
        AspectRatio::Portrait3x4,
        AspectRatio::Landscape4x3,
        AspectRatio::Portrait9x16,
        AspectRatio::Landscape16x9,
        AspectRatio::Portrait9x21,
        AspectRatio::Landscape21x9,
    ];

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
    #[default]
    #[serde(rename = "jpg")]
    Jpg,
    #[serde(rename = "png")]
    Png,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Jpg => "jpg",
            Format::Png => "png",
        }
    }

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
    Preview,
    Final,
}

impl Pass {
    pub fn as_str(self) -> &'static str {
        match self {
            Pass::Preview => "preview",
            Pass::Final => "final",
        }
    }

    pub fn parse(text: &str) -> Option<Pass> {
        match text {
            "preview" => Some(Pass::Preview),
            "final" => Some(Pass::Final),
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
    pub preview: Model,
    #[serde(rename = "final")]
    pub final_: Model,
}

impl Routing {
    pub fn model_for(&self, pass: Pass) -> Model {
        match pass {
            Pass::Preview => self.preview,
            Pass::Final => self.final_,
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
    pub url: String,
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
    pub prompt: String,
    pub aspect_ratio: AspectRatio,
    /// 1..=100
    pub variants: u32,
    /// A per-row override of the pass routing.
    pub model: Option<Model>,
    pub format: Format,
    pub refs: References,
    pub metadata: Metadata,
}

/// One image to produce: (row, pass, variant).
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub row_id: String,
    pub pass: Pass,
    /// 1-based variant index.
    pub variant: u32,
    /// How many variants the row has: file names carry the index only when there are several.
    pub variants: u32,
    pub model: Model,
    pub prompt: String,
    pub aspect_ratio: AspectRatio,
    pub format: Format,
    pub refs: References,
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
