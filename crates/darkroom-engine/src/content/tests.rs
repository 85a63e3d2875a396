//! Unit tests of `content`: paths under another output directory, kept-aside paths.

use super::*;

fn kept(path: &str) -> KeptImage {
    KeptImage {
        task_id: 1,
        job_name: "shop".into(),
        pass: "preview".into(),
        task_key: "bike".into(),
        row_id: "bike".into(),
        output_path: path.into(),
        content_hash: None,
        content_bytes: None,
        damage: None,
    }
}

#[test]
fn a_recorded_path_is_looked_for_under_another_output_directory_from_job_and_pass_on() {
    let out = Path::new("/mnt/archive");
    assert_eq!(
        rebase(&kept("out/shop/preview/bike.jpg"), out),
        Path::new("/mnt/archive/shop/preview/bike.jpg")
    );
    assert_eq!(
        rebase(&kept("/old/shop/preview/.superseded/bike-1a2b3c4d.jpg"), out),
        Path::new("/mnt/archive/shop/preview/.superseded/bike-1a2b3c4d.jpg")
    );
    // A directory named like the pass higher up does not confuse it.
    assert_eq!(
        rebase(&kept("preview/shop/preview/bike.jpg"), out),
        Path::new("/mnt/archive/shop/preview/bike.jpg")
    );
    assert_eq!(
        rebase(&kept("elsewhere/bike.jpg"), out),
        Path::new("elsewhere/bike.jpg")
    );
}

#[test]
fn only_paths_inside_a_superseded_directory_are_kept_aside_ones() {
    assert!(is_kept_aside(Path::new(
        "out/j/preview/.superseded/a-12345678.jpg"
    )));
    assert!(!is_kept_aside(Path::new("out/j/preview/a.jpg")));
}
