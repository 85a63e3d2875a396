//! What darkroom writes inside every image it keeps: the prompt, the model, the provider, the
//! generation, the job, the row, the pass, the variant, the source image a final (or a reframe) was
//! made from, and darkroom's version, so whoever receives a file alone can tell what made it.
//!
//! - PNG: text chunks before `IEND`: an XMP packet (`iTXt` keyword `XML:com.adobe.xmp`), a
//!   `parameters` entry in the shape image tools that read prompt metadata display (the prompt,
//!   then one line of `Key: value` pairs), `Description` (the prompt), `Software` (darkroom and
//!   its version), and one `darkroom:FIELD` chunk per field. ASCII text goes in `tEXt`, anything
//!   else in `iTXt` (UTF-8).
//! - JPEG: the same XMP packet in an `APP1` segment after the `JFIF`/`Exif` segments.
//!
//! Only the container changes: chunks and segments are moved with `img-parts`, the pixels'
//! compressed data is copied byte for byte, never decoded or encoded again. [`embed`] replaces
//! whatever darkroom wrote before (a cache copy carries its own task's fields, not its source's),
//! and with no metadata strips what darkroom wrote, leaving the provider's own bytes alone.
//!
//! The XMP fields are in the namespace [`XMP_NAMESPACE`] (prefix `darkroom`), plus
//! `dc:description` (the prompt) and `xmp:CreatorTool` (darkroom's version), which every XMP reader
//! shows. Writing the file and recording its hash is `content`'s.

use bytes::Bytes;
use darkroom_jobs::Format;
use darkroom_ledger::{Ledger, TaskRecord};
use img_parts::jpeg::{markers, Jpeg, JpegSegment};
use img_parts::png::{Png, PngChunk};

use crate::EngineError;

/// The XMP namespace of darkroom's fields (prefix `darkroom`). A name, not a page: it resolves
/// nowhere.
pub const XMP_NAMESPACE: &str = "http://darkroom.invalid/ns/1.0/";

/// The identifier an XMP `APP1` segment starts with (Adobe's XMP specification, part 3).
const XMP_JPEG_ID: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";

/// The PNG text keyword of an XMP packet.
const XMP_PNG_KEYWORD: &str = "XML:com.adobe.xmp";

/// The largest payload of one JPEG segment (its 16-bit length counts its own two bytes).
const MAX_SEGMENT: usize = 65_533;

/// Plain PNG keywords darkroom writes besides its `darkroom:` ones: replaced whenever darkroom
/// writes its fields.
const PNG_KEYWORDS: [&str; 4] = [XMP_PNG_KEYWORD, "parameters", "Description", "Software"];

/// The image a final (or a reframe) was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Its file within the job's output directory, as `PASS/FILE` (`preview/sofa-2.jpg`): the same
    /// name `darkroom export` gives it.
    pub file: String,
    /// The upstream generation that made it, when known.
    pub generation_id: Option<String>,
}

/// The fields written into one image. Every field is text as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMetadata {
    /// The prompt as sent.
    pub prompt: String,
    /// The model's API name (`photon-1`).
    pub model: String,
    /// The provider's name (`luma`).
    pub provider: String,
    /// The upstream generation that made the pixels (for a cache copy, its source's generation).
    pub generation_id: Option<String>,
    /// The job's name.
    pub job: String,
    /// The row's id in the job file.
    pub row_id: String,
    /// The pass: `preview`, `final` or `reframe`.
    pub pass: String,
    /// Which variant of its row, from 1.
    pub variant: i64,
    /// For a final made from a preview: that preview; for a reframe: the image it extends.
    pub source: Option<Source>,
    /// darkroom's version (`0.1.0`).
    pub version: String,
}

impl ImageMetadata {
    /// The fields in the order they are written, as (XMP property, value); absent ones left out.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("Prompt", self.prompt.clone()),
            ("Model", self.model.clone()),
            ("Provider", self.provider.clone()),
        ];
        if let Some(id) = &self.generation_id {
            fields.push(("GenerationId", id.clone()));
        }
        fields.extend([
            ("Job", self.job.clone()),
            ("RowId", self.row_id.clone()),
            ("Pass", self.pass.clone()),
            ("Variant", self.variant.to_string()),
        ]);
        if let Some(source) = &self.source {
            fields.push(("Source", source.file.clone()));
            if let Some(id) = &source.generation_id {
                fields.push(("SourceGenerationId", id.clone()));
            }
        }
        fields.push(("Version", self.version.clone()));
        fields
    }

    /// `darkroom VERSION`, as `Software` and `xmp:CreatorTool` say it.
    fn software(&self) -> String {
        format!("darkroom {}", self.version)
    }
}

/// darkroom's version, as written into images (`0.1.0`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The file name a task's image has in its pass's directory and in an export: `TASK_KEY.EXT`.
pub fn file_name(task: &TaskRecord) -> String {
    let format = Format::parse(&task.format).unwrap_or_default();
    format!("{}.{}", task.task_key, format.extension())
}

/// The fields of `task`'s image, made by `generation_id` with `provider`, in job `job`. A final
/// made from a preview names that preview (read from the ledger) as its source.
///
/// # Errors
/// The ledger's, reading the preview.
pub async fn for_task(
    ledger: &Ledger,
    task: &TaskRecord,
    job: &str,
    provider: &str,
    generation_id: Option<&str>,
) -> Result<ImageMetadata, EngineError> {
    // A reframe names the image it extends; a final, the preview it was made from, unless that
    // preview could not be sent (then the final was made from the prompt alone: no source).
    let source_task = if task.reference_lost {
        None
    } else {
        task.source_task_id.or(task.preview_task_id)
    };
    let source = match source_task {
        Some(preview) => {
            let preview = ledger.task(preview).await?;
            Some(Source {
                file: format!("{}/{}", preview.pass, file_name(&preview)),
                generation_id: preview.generation_id,
            })
        }
        None => None,
    };
    Ok(ImageMetadata {
        prompt: task.prompt.clone(),
        model: task.model.clone(),
        provider: provider.to_string(),
        generation_id: generation_id.map(str::to_string),
        job: job.to_string(),
        row_id: task.row_id.clone(),
        pass: task.pass.clone(),
        variant: task.variant,
        source,
        version: VERSION.to_string(),
    })
}

/// `bytes` as they are to be written: [`embed`] on the blocking pool. Bytes whose container
/// `img-parts` can't rewrite are kept as they are, with a warning naming `task_key`: a paid,
/// verified image is never lost for its metadata.
pub(crate) async fn stamp(bytes: Vec<u8>, metadata: Option<ImageMetadata>, task_key: &str) -> Vec<u8> {
    let original = Bytes::from(bytes);
    let copy = original.clone();
    let stamped = tokio::task::spawn_blocking(move || embed(&copy, metadata.as_ref()))
        .await
        .map_err(|panic| MetadataError::Container(panic.to_string()))
        .and_then(|result| result);
    match stamped {
        Ok(stamped) => stamped,
        Err(error) => {
            tracing::warn!(task = task_key, %error, "the image is kept without darkroom's metadata");
            Vec::from(original)
        }
    }
}

/// Why metadata could not be written into an image.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// Neither a PNG nor a JPEG, or a container `img-parts` could not read.
    #[error("not a PNG or JPEG container darkroom can write metadata into: {0}")]
    Container(String),
    /// The XMP packet is larger than one JPEG segment holds.
    #[error("the metadata is {0} bytes, more than one JPEG segment holds ({MAX_SEGMENT})")]
    TooLarge(usize),
}

/// `bytes` with `metadata` written inside (replacing what darkroom wrote before), or, with `None`,
/// with darkroom's own metadata removed. The pixels' data is copied unchanged; the container is
/// told by its first bytes.
///
/// # Errors
/// [`MetadataError::Container`] for bytes that are neither PNG nor JPEG (or are malformed), and
/// [`MetadataError::TooLarge`] when a JPEG's XMP would not fit one segment.
pub fn embed(bytes: &[u8], metadata: Option<&ImageMetadata>) -> Result<Vec<u8>, MetadataError> {
    let bytes = Bytes::copy_from_slice(bytes);
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        let mut png = Png::from_bytes(bytes).map_err(|e| MetadataError::Container(e.to_string()))?;
        png_embed(&mut png, metadata);
        Ok(png.encoder().bytes().to_vec())
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        let mut jpeg = Jpeg::from_bytes(bytes).map_err(|e| MetadataError::Container(e.to_string()))?;
        jpeg_embed(&mut jpeg, metadata)?;
        Ok(jpeg.encoder().bytes().to_vec())
    } else {
        Err(MetadataError::Container("unknown signature".into()))
    }
}

/// The PNG's text chunks: darkroom's removed, then (with metadata) written again before `IEND`.
fn png_embed(png: &mut Png, metadata: Option<&ImageMetadata>) {
    let ours = png.chunks().iter().any(|chunk| {
        text_keyword(chunk).is_some_and(|k| k.starts_with("darkroom:"))
            || (text_keyword(chunk).as_deref() == Some(XMP_PNG_KEYWORD)
                && mentions_namespace(chunk.contents()))
    });
    // Without metadata, only a file darkroom wrote loses its keywords: a provider's own stay.
    let replace = metadata.is_some() || ours;
    png.chunks_mut().retain(|chunk| match text_keyword(chunk) {
        Some(keyword) => {
            !(keyword.starts_with("darkroom:") || (replace && PNG_KEYWORDS.contains(&keyword.as_str())))
        }
        None => true,
    });
    let Some(metadata) = metadata else { return };
    let mut chunks = vec![
        text_chunk(XMP_PNG_KEYWORD, &xmp_packet(metadata)),
        text_chunk("parameters", &parameters(metadata)),
        text_chunk("Description", &metadata.prompt),
        text_chunk("Software", &metadata.software()),
    ];
    for (name, value) in metadata.fields() {
        chunks.push(text_chunk(&format!("darkroom:{name}"), &value));
    }
    let chunks_mut = png.chunks_mut();
    let at = chunks_mut
        .iter()
        .position(|chunk| &chunk.kind() == b"IEND")
        .unwrap_or(chunks_mut.len());
    chunks_mut.splice(at..at, chunks);
}

/// The keyword of a `tEXt`, `iTXt` or `zTXt` chunk.
fn text_keyword(chunk: &PngChunk) -> Option<String> {
    if !matches!(&chunk.kind(), b"tEXt" | b"iTXt" | b"zTXt") {
        return None;
    }
    let contents = chunk.contents();
    let end = contents.iter().position(|b| *b == 0)?;
    Some(String::from_utf8_lossy(&contents[..end]).into_owned())
}

/// A `tEXt` chunk for ASCII text, else an uncompressed `iTXt` (UTF-8).
fn text_chunk(keyword: &str, text: &str) -> PngChunk {
    let mut contents = keyword.as_bytes().to_vec();
    contents.push(0);
    if text.is_ascii() && !text.contains('\0') {
        contents.extend_from_slice(text.as_bytes());
        return PngChunk::new(*b"tEXt", Bytes::from(contents));
    }
    // Compression flag and method, an empty language tag and an empty translated keyword.
    contents.extend_from_slice(&[0, 0, 0, 0]);
    contents.extend_from_slice(text.replace('\0', "").as_bytes());
    PngChunk::new(*b"iTXt", Bytes::from(contents))
}

/// The JPEG's XMP: darkroom's removed (any XMP, when writing: a file holds one packet), then (with
/// metadata) written after the leading `APP0`/`APP1` segments.
fn jpeg_embed(jpeg: &mut Jpeg, metadata: Option<&ImageMetadata>) -> Result<(), MetadataError> {
    let packet = metadata.map(xmp_packet);
    let mut contents = XMP_JPEG_ID.to_vec();
    if let Some(packet) = &packet {
        contents.extend_from_slice(packet.as_bytes());
        if contents.len() > MAX_SEGMENT {
            return Err(MetadataError::TooLarge(contents.len()));
        }
    }
    jpeg.segments_mut().retain(|segment| {
        let is_xmp = segment.marker() == markers::APP1 && segment.contents().starts_with(XMP_JPEG_ID);
        !(is_xmp && (packet.is_some() || mentions_namespace(segment.contents())))
    });
    if packet.is_none() {
        return Ok(());
    }
    let segments = jpeg.segments_mut();
    let at = segments
        .iter()
        .position(|s| !matches!(s.marker(), markers::APP0 | markers::APP1))
        .unwrap_or(segments.len());
    segments.insert(
        at,
        JpegSegment::new_with_contents(markers::APP1, Bytes::from(contents)),
    );
    Ok(())
}

/// Whether bytes name darkroom's XMP namespace (an XMP packet darkroom wrote).
fn mentions_namespace(bytes: &[u8]) -> bool {
    bytes
        .windows(XMP_NAMESPACE.len())
        .any(|window| window == XMP_NAMESPACE.as_bytes())
}

/// The XMP packet: `dc:description`, `xmp:CreatorTool` and darkroom's fields.
fn xmp_packet(metadata: &ImageMetadata) -> String {
    let mut fields = String::new();
    for (name, value) in metadata.fields() {
        fields.push_str(&format!(
            "   <darkroom:{name}>{}</darkroom:{name}>\n",
            xml_text(&value)
        ));
    }
    format!(
        "<?xpacket begin=\"\u{feff}\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>\n\
         <x:xmpmeta xmlns:x=\"adobe:ns:meta/\">\n\
         <rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">\n\
         <rdf:Description rdf:about=\"\"\n    \
         xmlns:dc=\"http://purl.org/dc/elements/1.1/\"\n    \
         xmlns:xmp=\"http://ns.adobe.com/xap/1.0/\"\n    \
         xmlns:darkroom=\"{XMP_NAMESPACE}\">\n   \
         <dc:description><rdf:Alt><rdf:li xml:lang=\"x-default\">{}</rdf:li></rdf:Alt></dc:description>\n   \
         <xmp:CreatorTool>{}</xmp:CreatorTool>\n\
         {fields}\
         </rdf:Description>\n\
         </rdf:RDF>\n\
         </x:xmpmeta>\n\
         <?xpacket end=\"w\"?>",
        xml_text(&metadata.prompt),
        xml_text(&metadata.software()),
    )
}

/// Text as XML element content: `&`, `<`, `>` escaped; a carriage return as `&#xD;` (an XML
/// parser turns a literal one, or `\r\n`, into `\n`, so the prompt would not read back as sent);
/// characters XML 1.0 forbids (control characters other than tab, line feed and carriage return,
/// and U+FFFE, U+FFFF) dropped.
fn xml_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() || matches!(c, '\u{FFFE}' | '\u{FFFF}') => {}
            c => out.push(c),
        }
    }
    out
}

/// The `parameters` entry: the prompt, then one line of `Key: value` pairs separated by `, `, a
/// value holding `,`, `:`, `"` or a line break written as a JSON string (as the tools that read
/// this entry quote such values).
fn parameters(metadata: &ImageMetadata) -> String {
    let names = [
        ("Model", "Model"),
        ("Provider", "Provider"),
        ("GenerationId", "Generation id"),
        ("Job", "Job"),
        ("RowId", "Row id"),
        ("Pass", "Pass"),
        ("Variant", "Variant"),
        ("Source", "Source"),
        ("SourceGenerationId", "Source generation id"),
        ("Version", "Version"),
    ];
    let pairs: Vec<String> = metadata
        .fields()
        .into_iter()
        .filter_map(|(field, value)| {
            let label = names.iter().find(|(name, _)| *name == field)?.1;
            let value = if field == "Version" {
                metadata.software()
            } else {
                value
            };
            let needs_quotes = value.contains([',', ':', '"', '\n', '\r']);
            let value = if needs_quotes {
                serde_json::Value::String(value).to_string()
            } else {
                value
            };
            Some(format!("{label}: {value}"))
        })
        .collect();
    format!("{}\n{}", metadata.prompt, pairs.join(", "))
}

#[cfg(test)]
mod tests;
