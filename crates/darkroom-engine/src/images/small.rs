//! Decoding an image straight to a small size, for thumbnails and the quality checks.
//!
//! A JPEG is decoded at 1/8, 1/4 or 1/2 of its size by scaling its DCT (`jpeg-decoder`): the
//! smallest of those whose longer side still covers the size asked for. A 2048×1152 Photon image
//! comes out as 256×144 directly, without ever holding its 2.4 million pixels, several times less
//! CPU than a full decode and a resize. Anything else (PNG, a JPEG in CMYK or 16-bit, a file the
//! scaled decoder refuses) takes `image`'s full decode and a resize, so every image `image` reads
//! still reads. What is done with the pixels is the caller's.

use std::panic::{catch_unwind, AssertUnwindSafe};

use image::{DynamicImage, GrayImage, RgbImage};

/// An image decoded to at most a given size, with the size it has in full.
#[derive(Debug, Clone)]
pub struct Small {
    /// The full image's width in pixels.
    pub width: u32,
    /// The full image's height in pixels.
    pub height: u32,
    /// The pixels, with neither side longer than asked and the full image's proportions.
    pub image: DynamicImage,
}

/// Decodes `bytes` to an image whose longer side is at most `longest` pixels (an image already
/// smaller keeps its size). CPU work: call it on a blocking thread.
///
/// # Errors
/// `image`'s error when the bytes are not an image it can decode.
pub fn decode_small(bytes: &[u8], longest: u32) -> Result<Small, image::ImageError> {
    if let Some(small) = scaled_jpeg(bytes, longest) {
        return Ok(small);
    }
    let full = image::load_from_memory(bytes)?;
    let (width, height) = (full.width(), full.height());
    Ok(Small {
        width,
        height,
        image: fit(full, longest),
    })
}

/// A JPEG decoded at the smallest DCT scale that still covers `longest`, then fitted; `None` for
/// anything that is not a JPEG in 8-bit grey or RGB, or that this decoder refuses (the full
/// decode then has its say).
fn scaled_jpeg(bytes: &[u8], longest: u32) -> Option<Small> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.read_info().ok()?;
    let info = decoder.info()?;
    let side = u16::try_from(longest).unwrap_or(u16::MAX);
    let (width, height) = decoder.scale(side, side).ok()?;
    // Bytes from the network: a decoder panic on a malformed file is a refusal, not a crash.
    let pixels = catch_unwind(AssertUnwindSafe(|| decoder.decode())).ok()?.ok()?;
    let (width, height) = (u32::from(width), u32::from(height));
    let image = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => {
            DynamicImage::ImageRgb8(RgbImage::from_raw(width, height, pixels)?)
        }
        jpeg_decoder::PixelFormat::L8 => {
            DynamicImage::ImageLuma8(GrayImage::from_raw(width, height, pixels)?)
        }
        _ => return None,
    };
    Some(Small {
        width: u32::from(info.width),
        height: u32::from(info.height),
        image: fit(image, longest),
    })
}

/// `image` itself when neither side is longer than `longest`, else resized to fit it.
fn fit(image: DynamicImage, longest: u32) -> DynamicImage {
    if image.width().max(image.height()) <= longest {
        image
    } else {
        image.thumbnail(longest, longest)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::cast_possible_truncation)] // Test pictures: coordinates folded into bytes.

    use super::*;

    fn encode(image: &DynamicImage, format: image::ImageFormat) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        image.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    /// Left half dark, right half light.
    fn halves(width: u32, height: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, _| {
            if x < width / 2 {
                image::Rgb([20, 30, 40])
            } else {
                image::Rgb([220, 210, 200])
            }
        }))
    }

    #[test]
    fn a_photon_sized_jpeg_decodes_at_an_eighth_with_its_full_size_reported() {
        let bytes = encode(&halves(2048, 1152), image::ImageFormat::Jpeg);
        let small = decode_small(&bytes, 256).unwrap();
        assert_eq!((small.width, small.height), (2048, 1152));
        assert_eq!((small.image.width(), small.image.height()), (256, 144));
        // The pixels are the picture's, not a blank buffer: dark on the left, light on the right.
        let rgb = small.image.to_rgb8();
        assert!(rgb.get_pixel(10, 70).0[0] < 60, "{:?}", rgb.get_pixel(10, 70));
        assert!(rgb.get_pixel(245, 70).0[0] > 180, "{:?}", rgb.get_pixel(245, 70));
    }

    #[test]
    fn a_square_jpeg_too_small_for_an_eighth_is_decoded_larger_and_fitted() {
        // 1536 / 8 = 192 would be under 256: a quarter (384) is decoded, then fitted to 256.
        let bytes = encode(&halves(1536, 1536), image::ImageFormat::Jpeg);
        let small = decode_small(&bytes, 256).unwrap();
        assert_eq!((small.width, small.height), (1536, 1536));
        assert_eq!((small.image.width(), small.image.height()), (256, 256));
    }

    #[test]
    fn a_grey_jpeg_a_png_and_a_small_image_decode_too_and_garbage_is_an_error() {
        let grey = DynamicImage::ImageLuma8(GrayImage::from_fn(800, 600, |x, y| {
            image::Luma([((x + y) % 256) as u8])
        }));
        let small = decode_small(&encode(&grey, image::ImageFormat::Jpeg), 256).unwrap();
        assert_eq!((small.width, small.height), (800, 600));
        assert_eq!((small.image.width(), small.image.height()), (256, 192));

        let png = encode(&halves(1024, 576), image::ImageFormat::Png);
        let small = decode_small(&png, 256).unwrap();
        assert_eq!((small.image.width(), small.image.height()), (256, 144));

        let tiny = encode(&halves(64, 36), image::ImageFormat::Jpeg);
        let small = decode_small(&tiny, 256).unwrap();
        assert_eq!((small.image.width(), small.image.height()), (64, 36));

        assert!(decode_small(b"<html>not an image</html>", 256).is_err());
        let mut cut = encode(&halves(2048, 1152), image::ImageFormat::Jpeg);
        cut.truncate(200);
        assert!(decode_small(&cut, 256).is_err());
    }
}
