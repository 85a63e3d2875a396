//! A minimal baseline JPEG encoder for images made of flat 8×8 blocks.
//!
//! The simulator's pictures are drawn one colour per 8×8 block, so every block's DCT has only its DC
//! coefficient: each block encodes as a DC difference and an end-of-block code. That makes a
//! 2048×1152 image take well under a millisecond, where a general encoder takes tens: the simulator
//! must never be the bottleneck of a benchmark. The output is an ordinary baseline JFIF file any
//! decoder reads.

/// Encodes `blocks` (one YCbCr colour per 8×8 block, row-major, `bw × bh` blocks) as a JPEG of
/// `bw*8 × bh*8` pixels.
pub fn encode_flat_blocks(bw: u32, bh: u32, blocks: &[[u8; 3]]) -> Vec<u8> {
    let width = u16::try_from(bw * 8).unwrap_or(u16::MAX);
    let height = u16::try_from(bh * 8).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(blocks.len() * 2 + 1024);
    out.extend_from_slice(&[0xFF, 0xD8]); // SOI
                                          // APP0 JFIF
    out.extend_from_slice(&[
        0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00,
        0x00,
    ]);
    // DQT: table 0, all ones (a flat block's DC is stored exactly).
    out.extend_from_slice(&[0xFF, 0xDB, 0x00, 0x43, 0x00]);
    out.extend_from_slice(&[1u8; 64]);
    // SOF0: 8-bit, height, width, 3 components, 1×1 sampling, quant table 0.
    out.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 0x08]);
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&width.to_be_bytes());
    out.extend_from_slice(&[0x03, 0x01, 0x11, 0x00, 0x02, 0x11, 0x00, 0x03, 0x11, 0x00]);
    // DHT: DC table 0 (the standard luminance DC table), AC table 0 (one symbol: end of block).
    let dc_bits: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
    let dc_vals: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
    out.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x1F, 0x00]);
    out.extend_from_slice(&dc_bits);
    out.extend_from_slice(&dc_vals);
    let ac_bits: [u8; 16] = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    out.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x14, 0x10]);
    out.extend_from_slice(&ac_bits);
    out.push(0x00); // EOB
                    // SOS: 3 components, all with tables 0/0, full spectral range.
    out.extend_from_slice(&[
        0xFF, 0xDA, 0x00, 0x0C, 0x03, 0x01, 0x00, 0x02, 0x00, 0x03, 0x00, 0x00, 0x3F, 0x00,
    ]);

    let dc_codes = canonical_codes(&dc_bits, &dc_vals);
    let mut bits = BitWriter { out, acc: 0, n: 0 };
    let mut previous = [0i32; 3];
    for block in blocks {
        for (c, value) in block.iter().enumerate() {
            let dc = 8 * (i32::from(*value) - 128);
            let diff = dc - previous[c];
            previous[c] = dc;
            let (category, magnitude) = category_of(diff);
            let (code, length) = dc_codes[category as usize];
            bits.put(u32::from(code), length);
            if category > 0 {
                bits.put(magnitude, category);
            }
            bits.put(0, 1); // EOB: the single AC code "0"
        }
    }
    let mut out = bits.finish();
    out.extend_from_slice(&[0xFF, 0xD9]); // EOI
    out
}

/// RGB to JPEG's YCbCr (full range, as JFIF specifies).
pub fn ycbcr([r, g, b]: [u8; 3]) -> [u8; 3] {
    let (r, g, b) = (f32::from(r), f32::from(g), f32::from(b));
    let y = 0.299 * r + 0.587 * g + 0.114 * b;
    let cb = 128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b;
    let cr = 128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let clamp = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    [clamp(y), clamp(cb), clamp(cr)]
}

/// The size category of a DC difference and its magnitude bits (JPEG's one's-complement form).
fn category_of(diff: i32) -> (u8, u32) {
    if diff == 0 {
        return (0, 0);
    }
    let abs = diff.unsigned_abs();
    let category = 32 - abs.leading_zeros();
    let magnitude = if diff > 0 {
        abs
    } else {
        ((1u32 << category) - 1) - abs
    };
    (u8::try_from(category).unwrap_or(11), magnitude)
}

/// Canonical Huffman codes (code, length) indexed by symbol.
fn canonical_codes(bits: &[u8; 16], vals: &[u8]) -> [(u16, u8); 12] {
    let mut codes = [(0u16, 0u8); 12];
    let mut code: u16 = 0;
    let mut k = 0;
    for (i, count) in bits.iter().enumerate() {
        for _ in 0..*count {
            if let Some(symbol) = vals.get(k) {
                codes[*symbol as usize] = (code, u8::try_from(i + 1).unwrap_or(16));
            }
            code += 1;
            k += 1;
        }
        code <<= 1;
    }
    codes
}

struct BitWriter {
    out: Vec<u8>,
    acc: u32,
    n: u8,
}

impl BitWriter {
    fn put(&mut self, value: u32, length: u8) {
        for i in (0..length).rev() {
            self.acc = (self.acc << 1) | ((value >> i) & 1);
            self.n += 1;
            if self.n == 8 {
                self.emit();
            }
        }
    }

    fn emit(&mut self) {
        let byte = u8::try_from(self.acc & 0xFF).unwrap_or(0);
        self.out.push(byte);
        if byte == 0xFF {
            self.out.push(0x00);
        }
        self.acc = 0;
        self.n = 0;
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            let pad = 8 - self.n;
            self.put((1 << pad) - 1, pad); // pad with ones
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_blocks_decode_to_the_same_colours_at_the_right_size() {
        let (bw, bh) = (4u32, 3u32);
        let colours: Vec<[u8; 3]> = (0..bw * bh)
            .map(|i| u8::try_from(i).unwrap())
            .map(|i| [i * 20, 255 - i * 15, i * 7])
            .collect();
        let blocks: Vec<[u8; 3]> = colours.iter().map(|c| ycbcr(*c)).collect();
        let bytes = encode_flat_blocks(bw, bh, &blocks);
        let image = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)
            .unwrap()
            .to_rgb8();
        assert_eq!((image.width(), image.height()), (32, 24));
        for by in 0..bh {
            for bx in 0..bw {
                let want = colours[(by * bw + bx) as usize];
                let got = image.get_pixel(bx * 8 + 4, by * 8 + 4).0;
                for c in 0..3 {
                    assert!(
                        (i32::from(want[c]) - i32::from(got[c])).abs() <= 3,
                        "block {bx},{by}: {want:?} vs {got:?}"
                    );
                }
            }
        }
    }
}
