//! The simulator's pictures: deterministic from the request (same request, same bytes), different
//! for every prompt (colours and shapes seeded from it), at the size Luma returns for the aspect
//! ratio. Drawn one colour per 8×8 block so JPEG encoding is nearly free (see `jpeg`).
//!
//! A prompt can ask for a picture a quality check should catch ([`Look`]): `[sim:blank]` (one flat
//! colour), `[sim:off-aspect]` (one 8-pixel block wider on the short side: off the ratio by 0.5 to
//! 1%, which darkroom keeps but flags), `[sim:tiny]` (the right shape at 256 pixels on the long
//! side, a file of a few kilobytes) and `[sim:duplicate]` (the request's own picture even when every
//! generation draws its own, so a row's variants come out identical).

use rand::{Rng, SeedableRng};

use crate::jpeg;

/// Luma's output size for an aspect ratio.
pub fn size_for(aspect_ratio: &str) -> (u32, u32) {
    match aspect_ratio {
        "1:1" => (1536, 1536),
        "4:3" => (1792, 1344),
        "3:4" => (1344, 1792),
        "9:16" => (1152, 2048),
        "21:9" => (2432, 1024),
        "9:21" => (1024, 2432),
        _ => (2048, 1152), // 16:9, the API's default
    }
}

/// Which picture a generation serves, asked for by a marker in its prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Look {
    /// The ordinary picture: a gradient and a few shapes.
    #[default]
    Normal,
    /// One flat colour (`[sim:blank]`).
    Blank,
    /// The ordinary picture one block larger on its short side (`[sim:off-aspect]`).
    OffAspect,
    /// The ordinary picture at 256 pixels on its long side (`[sim:tiny]`).
    Tiny,
}

impl Look {
    /// The look a generation's request (its echo, with `prompt`) asks for; `Normal` when none.
    pub fn of_request(request: &serde_json::Value) -> Look {
        let prompt = request
            .get("prompt")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        if prompt.contains("[sim:blank]") {
            Look::Blank
        } else if prompt.contains("[sim:off-aspect]") {
            Look::OffAspect
        } else if prompt.contains("[sim:tiny]") {
            Look::Tiny
        } else {
            Look::Normal
        }
    }

    /// Whether the request's prompt asks for the request's own picture (`[sim:duplicate]`).
    pub fn asked_duplicate(request: &serde_json::Value) -> bool {
        request
            .get("prompt")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|p| p.contains("[sim:duplicate]"))
    }

    /// The size this look is drawn at for an aspect ratio (multiples of 8).
    pub fn size_for(self, aspect_ratio: &str) -> (u32, u32) {
        let (width, height) = size_for(aspect_ratio);
        match self {
            Look::Normal | Look::Blank => (width, height),
            Look::OffAspect if width >= height => (width, height + 8),
            Look::OffAspect => (width + 8, height),
            Look::Tiny => {
                let long = width.max(height);
                let scale = |side: u32| (side * 256 / long).div_ceil(8).max(1) * 8;
                (scale(width), scale(height))
            }
        }
    }
}

enum Shape {
    Circle {
        cx: f32,
        cy: f32,
        r: f32,
        colour: [u8; 3],
    },
    Rect {
        x0: f32,
        y0: f32,
        x1: f32,
        y1: f32,
        colour: [u8; 3],
    },
}

/// Renders the picture for `seed` in this look at its size for the aspect ratio, as JPEG or PNG.
pub fn render_look(seed: [u8; 32], look: Look, aspect_ratio: &str, png: bool) -> Vec<u8> {
    let (width, height) = look.size_for(aspect_ratio);
    if look != Look::Blank {
        return render(seed, width, height, png);
    }
    let colour: [u8; 3] = rand::rngs::StdRng::from_seed(seed).gen();
    let (bw, bh) = (width / 8, height / 8);
    let blocks = vec![colour; (bw * bh) as usize];
    if png {
        encode_png(&blocks, bw, bh)
    } else {
        let ycc: Vec<[u8; 3]> = blocks.iter().map(|p| jpeg::ycbcr(*p)).collect();
        jpeg::encode_flat_blocks(bw, bh, &ycc)
    }
}

/// Where a reframe's source sits in its canvas, as fractions of the canvas (`x0 < x1`, `y0 < y1`,
/// all within 0..=1): the source at its own aspect ratio, as large as fits, centred.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame {
    /// Left edge.
    pub x0: f32,
    /// Top edge.
    pub y0: f32,
    /// Right edge.
    pub x1: f32,
    /// Bottom edge.
    pub y1: f32,
}

/// The frame of a `source` picture (width, height) inside a `canvas` (width, height).
#[allow(clippy::cast_precision_loss)]
pub fn frame_for(source: (u32, u32), canvas: (u32, u32)) -> Frame {
    let source_aspect = source.0 as f32 / source.1.max(1) as f32;
    let canvas_aspect = canvas.0 as f32 / canvas.1.max(1) as f32;
    if source_aspect >= canvas_aspect {
        // Wider than the canvas: full width, bands above and below.
        let h = canvas_aspect / source_aspect;
        Frame {
            x0: 0.0,
            y0: (1.0 - h) / 2.0,
            x1: 1.0,
            y1: (1.0 + h) / 2.0,
        }
    } else {
        let w = source_aspect / canvas_aspect;
        Frame {
            x0: (1.0 - w) / 2.0,
            y0: 0.0,
            x1: (1.0 + w) / 2.0,
            y1: 1.0,
        }
    }
}

/// Renders the picture for `seed` at `width × height` as JPEG or PNG.
pub fn render(seed: [u8; 32], width: u32, height: u32, png: bool) -> Vec<u8> {
    render_framed(seed, width, height, None, png)
}

/// Renders the picture for `seed` inside `frame` of a `width × height` canvas (`None`: the whole
/// canvas), the rest of the canvas extending its background, as a reframe extends a picture.
pub fn render_framed(seed: [u8; 32], width: u32, height: u32, frame: Option<Frame>, png: bool) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::from_seed(seed);
    let top: [u8; 3] = rng.gen();
    let bottom: [u8; 3] = rng.gen();
    let shapes: Vec<Shape> = (0..rng.gen_range(3..7))
        .map(|_| {
            let colour = [rng.gen(), rng.gen(), rng.gen()];
            if rng.gen_bool(0.5) {
                Shape::Circle {
                    cx: rng.gen(),
                    cy: rng.gen(),
                    r: rng.gen_range(0.08..0.35),
                    colour,
                }
            } else {
                let (x0, y0) = (rng.gen::<f32>() * 0.8, rng.gen::<f32>() * 0.8);
                Shape::Rect {
                    x0,
                    y0,
                    x1: x0 + rng.gen_range(0.1..0.5),
                    y1: y0 + rng.gen_range(0.1..0.5),
                    colour,
                }
            }
        })
        .collect();
    let (bw, bh) = (width / 8, height / 8);
    let frame = frame.unwrap_or(Frame {
        x0: 0.0,
        y0: 0.0,
        x1: 1.0,
        y1: 1.0,
    });
    let (fw, fh) = (frame.x1 - frame.x0, frame.y1 - frame.y0);
    let aspect = width as f32 * fw / (height as f32 * fh);
    let mut blocks = Vec::with_capacity((bw * bh) as usize);
    for by in 0..bh {
        let v = ((by as f32 + 0.5) / bh as f32 - frame.y0) / fh;
        for bx in 0..bw {
            let u = ((bx as f32 + 0.5) / bw as f32 - frame.x0) / fw;
            let mut pixel = mix(top, bottom, v.clamp(0.0, 1.0));
            if !(0.0..=1.0).contains(&u) || !(0.0..=1.0).contains(&v) {
                // Outside the source: its background, extended.
                blocks.push(pixel);
                continue;
            }
            for shape in &shapes {
                match shape {
                    Shape::Circle { cx, cy, r, colour } => {
                        let (dx, dy) = ((u - cx) * aspect, v - cy);
                        if dx * dx + dy * dy <= r * r {
                            pixel = *colour;
                        }
                    }
                    Shape::Rect {
                        x0,
                        y0,
                        x1,
                        y1,
                        colour,
                    } => {
                        if (*x0..*x1).contains(&u) && (*y0..*y1).contains(&v) {
                            pixel = *colour;
                        }
                    }
                }
            }
            blocks.push(pixel);
        }
    }
    if png {
        encode_png(&blocks, bw, bh)
    } else {
        let ycc: Vec<[u8; 3]> = blocks.iter().map(|p| jpeg::ycbcr(*p)).collect();
        jpeg::encode_flat_blocks(bw, bh, &ycc)
    }
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn mix(a: [u8; 3], b: [u8; 3], t: f32) -> [u8; 3] {
    let m = |x: u8, y: u8| (f32::from(x) * (1.0 - t) + f32::from(y) * t) as u8;
    [m(a[0], b[0]), m(a[1], b[1]), m(a[2], b[2])]
}

fn encode_png(blocks: &[[u8; 3]], bw: u32, bh: u32) -> Vec<u8> {
    use image::ImageEncoder;
    let (width, height) = (bw * 8, bh * 8);
    let mut pixels = Vec::with_capacity((width * height * 3) as usize);
    for by in 0..bh {
        let row_start = (by * bw) as usize;
        let row: Vec<u8> = blocks[row_start..row_start + bw as usize]
            .iter()
            .flat_map(|p| std::iter::repeat_n(*p, 8).flatten())
            .collect();
        for _ in 0..8 {
            pixels.extend_from_slice(&row);
        }
    }
    let mut out = Vec::new();
    let encoder = image::codecs::png::PngEncoder::new_with_quality(
        &mut out,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::Sub,
    );
    // A freshly built RGB buffer of the declared size always encodes.
    let _ = encoder.write_image(&pixels, width, height, image::ExtendedColorType::Rgb8);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pictures_are_deterministic_sized_and_differ_by_seed() {
        let a = render([1; 32], 256, 144, false);
        assert_eq!(a, render([1; 32], 256, 144, false));
        assert_ne!(a, render([2; 32], 256, 144, false));
        let decoded = image::load_from_memory(&a).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (256, 144));
        let png = render([1; 32], 64, 64, true);
        assert_eq!(image::guess_format(&png).unwrap(), image::ImageFormat::Png);
        assert_eq!(image::load_from_memory(&png).unwrap().width(), 64);
    }

    #[test]
    fn a_prompt_marker_asks_for_the_picture_a_quality_check_should_catch() {
        let request = |prompt: &str| serde_json::json!({ "prompt": prompt });
        assert_eq!(Look::of_request(&request("a boat")), Look::Normal);
        assert_eq!(Look::of_request(&request("a boat [sim:blank]")), Look::Blank);
        assert_eq!(
            Look::of_request(&request("[sim:off-aspect] a boat")),
            Look::OffAspect
        );
        assert_eq!(Look::of_request(&request("a boat [sim:tiny]")), Look::Tiny);
        assert!(Look::asked_duplicate(&request("a boat [sim:duplicate]")));
        assert!(!Look::asked_duplicate(&request("a boat")));

        // Blank: one colour everywhere.
        let blank = image::load_from_memory(&render_look([3; 32], Look::Blank, "16:9", false))
            .unwrap()
            .to_rgb8();
        let first = *blank.get_pixel(0, 0);
        assert!(blank
            .pixels()
            .all(|p| p.0.iter().zip(first.0).all(|(a, b)| a.abs_diff(b) <= 2)));
        // Off the aspect ratio: one 8-pixel block more on the short side.
        for aspect in ["1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21"] {
            let (w, h) = size_for(aspect);
            let (ow, oh) = Look::OffAspect.size_for(aspect);
            assert_eq!(ow * oh - w * h, 8 * w.max(h), "{aspect}");
            assert_eq!(ow + oh, w + h + 8, "{aspect}");
        }
        // Tiny: the right shape, 256 pixels on the long side, a file of a few kilobytes.
        assert_eq!(Look::Tiny.size_for("16:9"), (256, 144));
        assert!(render_look([3; 32], Look::Tiny, "16:9", false).len() < 8 * 1024);
    }

    #[test]
    fn a_reframe_shows_its_source_inside_the_new_canvas() {
        // A 16:9 source in a square canvas: full width, a band above and below.
        let frame = frame_for((2048, 1152), (1536, 1536));
        assert!((frame.y1 - frame.y0 - 0.5625).abs() < 1e-4, "{frame:?}");
        assert_eq!((frame.x0, frame.x1), (0.0, 1.0));
        // A 1:1 source in a 9:16 canvas: full width too, bands above and below.
        let tall = frame_for((1536, 1536), (1152, 2048));
        assert!((tall.y1 - tall.y0 - 0.5625).abs() < 1e-4, "{tall:?}");
        // The source drawn at the frame's size is the framed picture's middle band, block for block.
        let seed = [7; 32];
        let source = image::load_from_memory(&render(seed, 256, 144, true))
            .unwrap()
            .to_rgb8();
        let framed = render_framed(seed, 256, 256, Some(frame_for((256, 144), (256, 256))), true);
        let framed = image::load_from_memory(&framed).unwrap().to_rgb8();
        assert_eq!((framed.width(), framed.height()), (256, 256));
        let offset = (256 - 144) / 2;
        let mut same = 0;
        for y in (4..144).step_by(8) {
            for x in (4..256).step_by(8) {
                same += u32::from(source.get_pixel(x, y) == framed.get_pixel(x, y + offset));
            }
        }
        assert!(
            same >= 18 * 32 * 9 / 10,
            "the source is inside the canvas: {same} of 576 blocks"
        );
        assert_ne!(
            render(seed, 256, 256, true),
            render_framed(seed, 256, 256, Some(frame_for((256, 144), (256, 256))), true)
        );
    }
}
