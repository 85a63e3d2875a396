//! Unit tests of the measurements and the rules, on images drawn here.

#![allow(clippy::cast_possible_truncation)] // Test pictures: coordinates folded into bytes on purpose.

use darkroom_jobs::AspectRatio;
use darkroom_ledger::{CheckedSibling, QcKind};

use super::*;

/// A JPEG of `width × height` drawn by `pixel(x, y)`.
fn jpeg(width: u32, height: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| image::Rgb(pixel(x, y)));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .unwrap();
    out.into_inner()
}

fn kinds(check: &darkroom_ledger::ImageCheck) -> Vec<QcKind> {
    check.flags.iter().map(|f| f.kind).collect()
}

#[test]
fn a_flat_image_is_blank_and_a_busy_one_is_not() {
    let settings = QcSettings::default();
    let flat = measure(&jpeg(512, 288, |_, _| [40, 90, 200])).unwrap();
    assert!(flat.spread < 1.0, "{flat:?}");
    let check = judge(&flat, AspectRatio::Landscape16x9, 1_000_000, &settings);
    assert_eq!(kinds(&check), vec![QcKind::Blank]);
    assert!(check.flags[0].detail.contains("flat colour"));

    let busy = measure(&jpeg(512, 288, |x, y| {
        [(x % 256) as u8, (y % 256) as u8, ((x * y) % 251) as u8]
    }))
    .unwrap();
    assert!(busy.spread > 20.0, "{busy:?}");
    assert!(judge(&busy, AspectRatio::Landscape16x9, 1_000_000, &settings)
        .flags
        .is_empty());
}

#[test]
fn a_shape_off_the_aspect_ratio_is_flagged_with_how_far_off_it_is() {
    let settings = QcSettings::default();
    let busy = |x: u32, y: u32| [(x % 256) as u8, (y % 256) as u8, 7];
    let right = measure(&jpeg(2048, 1152, busy)).unwrap();
    assert!(judge(&right, AspectRatio::Landscape16x9, 1_000_000, &settings)
        .flags
        .is_empty());
    let off = measure(&jpeg(2048, 1160, busy)).unwrap();
    let check = judge(&off, AspectRatio::Landscape16x9, 1_000_000, &settings);
    assert_eq!(kinds(&check), vec![QcKind::Dimensions]);
    assert!((check.flags[0].measured - 0.69).abs() < 0.01, "{:?}", check.flags);
    assert!(
        check.flags[0].detail.contains("2048x1160"),
        "{}",
        check.flags[0].detail
    );
}

#[test]
fn the_published_size_of_every_aspect_ratio_is_exactly_on_it() {
    for aspect in AspectRatio::ALL {
        let (w, h) = aspect.pixels();
        assert!(aspect_off_percent(w, h, aspect) < 1e-9, "{aspect}");
    }
    assert!((aspect_off_percent(2432, 1032, AspectRatio::Landscape21x9) - 0.78).abs() < 0.01);
}

#[test]
fn a_file_under_the_minimum_size_is_small() {
    let settings = QcSettings::default();
    let measured = measure(&jpeg(64, 36, |x, y| [(x * 4) as u8, (y * 7) as u8, 1])).unwrap();
    let check = judge(&measured, AspectRatio::Landscape16x9, 900, &settings);
    assert_eq!(kinds(&check), vec![QcKind::SmallFile]);
    assert_eq!(check.flags[0].measured, 900.0);
    assert_eq!(check.flags[0].threshold, 20_480.0);
}

#[test]
fn the_same_picture_hashes_alike_and_a_different_one_does_not() {
    let a = |x: u32, y: u32| [(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8];
    let b = |x: u32, y: u32| {
        if (x / 64 + y / 64).is_multiple_of(2) {
            [250, 250, 250]
        } else {
            [5, 5, 5]
        }
    };
    let first = measure(&jpeg(512, 288, a)).unwrap();
    let again = measure(&jpeg(512, 288, a)).unwrap();
    let other = measure(&jpeg(512, 288, b)).unwrap();
    assert_eq!(first.perceptual_hash.len(), 16);
    assert_eq!(distance(&first.perceptual_hash, &again.perceptual_hash), Some(0));
    assert!(distance(&first.perceptual_hash, &other.perceptual_hash).unwrap() > 10);
    assert_eq!(
        distance("00ff", "0f"),
        None,
        "hashes of other lengths are never compared"
    );
}

#[test]
fn a_duplicate_is_flagged_on_the_later_variant_whichever_is_recorded_second() {
    let settings = QcSettings::default();
    let sibling = |id, variant, hash: &str| CheckedSibling {
        task_id: id,
        task_key: format!("row-{variant}"),
        variant,
        perceptual_hash: hash.into(),
    };
    let own = |id, variant| Checked {
        task_id: id,
        task_key: format!("row-{variant}"),
        variant,
        perceptual_hash: "00000000000000ff".into(),
    };
    // Variant 2 recorded after variant 1: the flag is its own, naming row-1.
    let found = duplicate_rule(own(12, 2), &settings)(&sibling(11, 1, "00000000000000fe")).unwrap();
    assert_eq!((found.holder, found.other), (12, 11));
    assert_eq!(found.flag.measured, 1.0);
    assert!(found.flag.detail.contains("row-1"));
    // Variant 1 recorded after variant 2: the flag still goes on variant 2.
    let found = duplicate_rule(own(11, 1), &settings)(&sibling(12, 2, "00000000000000fe")).unwrap();
    assert_eq!((found.holder, found.other), (12, 11));
    assert!(found.flag.detail.contains("row-1"));
    // Far apart: no flag.
    assert!(duplicate_rule(own(12, 2), &settings)(&sibling(11, 1, "ffffffffffff0000")).is_none());
}
