//! Unit tests of `metadata`: the container changes, the pixels do not, and what darkroom wrote is
//! replaced rather than piled up. The fields read back by a reader no one here wrote are checked in
//! `tests/metadata.rs` (exiftool).

use super::*;
use crate::images;
use darkroom_jobs::{AspectRatio, Format};

fn picture(format: image::ImageFormat) -> Vec<u8> {
    let pixels = image::RgbImage::from_fn(64, 64, |x, y| {
        image::Rgb([u8::try_from(x * 4).unwrap(), u8::try_from(y * 4).unwrap(), 90])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(pixels)
        .write_to(&mut out, format)
        .unwrap();
    out.into_inner()
}

fn metadata(job: &str, prompt: &str) -> ImageMetadata {
    ImageMetadata {
        prompt: prompt.into(),
        model: "photon-1".into(),
        provider: "luma".into(),
        generation_id: Some("gen-123".into()),
        job: job.into(),
        row_id: "sofa".into(),
        pass: "final".into(),
        variant: 2,
        source: Some(Source {
            file: "preview/sofa-2.jpg".into(),
            generation_id: Some("gen-prev".into()),
        }),
        version: "0.1.0".into(),
    }
}

fn xmp_segments(bytes: &[u8]) -> Vec<Vec<u8>> {
    Jpeg::from_bytes(Bytes::copy_from_slice(bytes))
        .unwrap()
        .segments()
        .iter()
        .filter(|s| s.marker() == markers::APP1 && s.contents().starts_with(XMP_JPEG_ID))
        .map(|s| s.contents().to_vec())
        .collect()
}

fn texts(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    Png::from_bytes(Bytes::copy_from_slice(bytes))
        .unwrap()
        .chunks()
        .iter()
        .filter_map(|c| text_keyword(c).map(|k| (k, c.contents().to_vec())))
        .collect()
}

fn decoded(bytes: &[u8]) -> Vec<u8> {
    image::load_from_memory(bytes).unwrap().to_rgb8().into_raw()
}

#[test]
fn a_jpeg_gets_one_xmp_packet_and_keeps_its_compressed_pixels_byte_for_byte() {
    let original = picture(image::ImageFormat::Jpeg);
    let written = embed(&original, Some(&metadata("ads", "A sofa & a lamp <sunlit>"))).unwrap();
    let packets = xmp_segments(&written);
    assert_eq!(packets.len(), 1);
    let packet = String::from_utf8(packets[0].clone()).unwrap();
    assert!(packet.contains("<darkroom:Prompt>A sofa &amp; a lamp &lt;sunlit&gt;</darkroom:Prompt>"));
    assert!(packet.contains("<darkroom:GenerationId>gen-123</darkroom:GenerationId>"));
    assert!(packet.contains("<darkroom:Source>preview/sofa-2.jpg</darkroom:Source>"));
    // The scan (everything from start of scan on) is the original's tail, unchanged.
    let scan = original.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    assert!(written.ends_with(&original[scan..]));
    assert_eq!(decoded(&written), decoded(&original));
    images::verify(&written, Format::Jpg, AspectRatio::Square).unwrap();
}

#[test]
fn a_png_gets_text_chunks_before_iend_and_keeps_its_image_data() {
    let original = picture(image::ImageFormat::Png);
    let written = embed(&original, Some(&metadata("ads", "Ein Café in Zürich, 東京"))).unwrap();
    let chunks = texts(&written);
    let keywords: Vec<&str> = chunks.iter().map(|(k, _)| k.as_str()).collect();
    for expected in [
        "XML:com.adobe.xmp",
        "parameters",
        "Description",
        "Software",
        "darkroom:Prompt",
        "darkroom:GenerationId",
        "darkroom:Job",
        "darkroom:RowId",
        "darkroom:Pass",
        "darkroom:Variant",
        "darkroom:Source",
        "darkroom:Version",
    ] {
        assert!(
            keywords.contains(&expected),
            "{expected} missing from {keywords:?}"
        );
    }
    let png = Png::from_bytes(Bytes::from(written.clone())).unwrap();
    assert_eq!(&png.chunks().last().unwrap().kind(), b"IEND");
    // Non-ASCII text is UTF-8 in iTXt; ASCII stays tEXt.
    let prompt = png
        .chunks()
        .iter()
        .find(|c| text_keyword(c).as_deref() == Some("darkroom:Prompt"))
        .unwrap();
    assert_eq!(&prompt.kind(), b"iTXt");
    let job = png
        .chunks()
        .iter()
        .find(|c| text_keyword(c).as_deref() == Some("darkroom:Job"))
        .unwrap();
    assert_eq!(&job.kind(), b"tEXt");
    assert_eq!(&job.contents()[..], b"darkroom:Job\0ads");
    assert_eq!(decoded(&written), decoded(&original));
    images::verify(&written, Format::Png, AspectRatio::Square).unwrap();
}

#[test]
fn writing_again_replaces_what_darkroom_wrote_instead_of_adding_to_it() {
    for format in [image::ImageFormat::Jpeg, image::ImageFormat::Png] {
        let original = picture(format);
        let first = embed(&original, Some(&metadata("source-job", "a prompt"))).unwrap();
        let second = embed(&first, Some(&metadata("copy-job", "a prompt"))).unwrap();
        assert_eq!(
            second,
            embed(&original, Some(&metadata("copy-job", "a prompt"))).unwrap(),
            "{format:?}: a copy carries only its own task's fields"
        );
        assert!(!String::from_utf8_lossy(&second).contains("source-job"));
        // The same fields twice give the same bytes (so the same hash).
        assert_eq!(
            embed(&second, Some(&metadata("copy-job", "a prompt"))).unwrap(),
            second
        );
    }
}

#[test]
fn no_metadata_strips_darkrooms_own_and_leaves_a_providers_untouched() {
    for format in [image::ImageFormat::Jpeg, image::ImageFormat::Png] {
        let original = picture(format);
        // A provider's bytes pass through unchanged.
        assert_eq!(embed(&original, None).unwrap(), original, "{format:?}");
        let ours = embed(&original, Some(&metadata("job", "a prompt"))).unwrap();
        let stripped = embed(&ours, None).unwrap();
        assert!(
            !String::from_utf8_lossy(&stripped).contains("darkroom"),
            "{format:?}"
        );
        assert_eq!(decoded(&stripped), decoded(&original));
    }
    // A provider's own XMP packet (not darkroom's namespace) is not darkroom's to strip.
    let mut jpeg = Jpeg::from_bytes(Bytes::from(picture(image::ImageFormat::Jpeg))).unwrap();
    let mut theirs = XMP_JPEG_ID.to_vec();
    theirs.extend_from_slice(b"<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"/>");
    jpeg.segments_mut().insert(
        1,
        JpegSegment::new_with_contents(markers::APP1, Bytes::from(theirs.clone())),
    );
    let with_theirs = jpeg.encoder().bytes().to_vec();
    assert_eq!(xmp_segments(&embed(&with_theirs, None).unwrap()), vec![theirs]);
}

#[test]
fn the_parameters_entry_is_the_prompt_then_one_line_of_quoted_pairs() {
    let mut m = metadata("ads", "A red chair\non a rug");
    m.row_id = "chair,red".into();
    let text = parameters(&m);
    let (prompt, pairs) = text.rsplit_once('\n').unwrap();
    assert_eq!(prompt, "A red chair\non a rug");
    assert_eq!(
        pairs,
        "Model: photon-1, Provider: luma, Generation id: gen-123, Job: ads, Row id: \"chair,red\", \
         Pass: final, Variant: 2, Source: preview/sofa-2.jpg, Source generation id: gen-prev, \
         Version: darkroom 0.1.0"
    );
}

#[test]
fn bytes_that_are_no_image_are_refused_by_name() {
    let error = embed(b"<html>not an image</html>", None).unwrap_err();
    assert!(error.to_string().contains("not a PNG or JPEG"), "{error}");
}

/// What an XML processor hands an application for element content: line ends normalized first
/// (XML 1.0, 2.11: `\r\n` and a lone `\r` become `\n`), then the references this packet uses
/// replaced.
fn as_an_xml_reader_sees_it(raw: &str) -> String {
    raw.replace("\r\n", "\n")
        .replace('\r', "\n")
        .replace("&#xD;", "\r")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[test]
fn a_prompt_with_carriage_returns_and_markup_reads_back_from_the_xmp_exactly_as_sent() {
    let prompt = "line one\r\nline two\rline three\n<b>&amp;</b> ]]> ?> \"quoted\" café 東京";
    let stamped = embed(&picture(image::ImageFormat::Jpeg), Some(&metadata("ads", prompt))).unwrap();
    let packet = xmp_segments(&stamped).remove(0);
    let packet = std::str::from_utf8(&packet[XMP_JPEG_ID.len()..]).unwrap();
    assert!(
        !packet.contains('\r'),
        "a literal carriage return is lost by XML readers"
    );
    let start = packet.find("<darkroom:Prompt>").unwrap() + "<darkroom:Prompt>".len();
    let end = packet.find("</darkroom:Prompt>").unwrap();
    assert_eq!(as_an_xml_reader_sees_it(&packet[start..end]), prompt);
}
