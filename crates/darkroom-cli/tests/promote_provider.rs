//! Promotion resumed on another provider, with the real binary and its built-in simulator
//! (`--sim`): what it announces before sending is priced at the table of the provider it runs on,
//! as the pass re-prices every final not yet sent, not at the price the finals were first added
//! with on the earlier provider.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use support::{code, darkroom, text, write};

const ROWS: &str = "id,prompt,aspect_ratio\n\
                    oak,An oak dining chair in a bright room,1:1\n\
                    teak,A teak lounge chair on a terrace,16:9\n\
                    pine,A pine stool in a workshop,4:3\n\
                    ash,An ash bench in a hallway,3:4\n";

#[test]
fn a_promotion_stopped_on_replicate_and_resumed_on_luma_announces_lumas_price_for_what_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write(dir, "chairs.csv", ROWS);
    // Replicate takes one image reference, not `modify_image_ref`.
    write(dir, "darkroom.toml", "[promote]\nreference = \"image_ref\"\n");
    let previews = darkroom(dir)
        .args(["run", "chairs.csv", "--sim", "--budget", "1"])
        .output()
        .unwrap();
    assert_eq!(code(&previews), 0, "{}", text(&previews.stderr));

    // Replicate's photon-1 is $0.03: a $0.06 final budget makes two and skips two.
    let stopped = darkroom(dir)
        .args(["promote", "chairs", "--all", "--sim", "--provider", "replicate"])
        .args(["--budget", "0.06", "--config", "darkroom.toml"])
        .output()
        .unwrap();
    assert_eq!(code(&stopped), 3, "{}", text(&stopped.stderr));

    // On Luma the two left cost $0.015 each.
    let resumed = darkroom(dir)
        .args(["promote", "chairs", "--all", "--sim", "--provider", "luma"])
        .args(["--budget", "1", "--config", "darkroom.toml"])
        .output()
        .unwrap();
    let said = text(&resumed.stderr);
    assert_eq!(code(&resumed), 0, "{said}");
    assert!(
        said.contains("promoting: 2 final(s) to make with photon-1 for $0.03,"),
        "{said}"
    );
}
