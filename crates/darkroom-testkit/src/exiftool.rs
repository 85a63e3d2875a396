//! Reading an image's metadata with `exiftool` (Debian's `libimage-exiftool-perl`), a reader no one
//! here wrote: what darkroom puts inside its images is checked the way a recipient's tools see it.
//! `scripts/test` installs it when missing.

use std::path::Path;
use std::process::Command;

/// Every tag `exiftool -json -groupHeadings1` reads from `path`, keyed `GROUP:Tag`
/// (`XMP-darkroom:GenerationId`, `PNG:Parameters`), as text.
///
/// # Panics
/// When exiftool is not installed (with how to install it), fails, or prints something else than
/// one JSON object.
pub fn tags(path: &Path) -> serde_json::Map<String, serde_json::Value> {
    let output = Command::new("exiftool")
        .args(["-json", "-G1", "-a", "-struct", "-charset", "UTF8"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| {
            panic!("the metadata tests need exiftool ({e}): run scripts/test, or `apt-get install libimage-exiftool-perl`")
        });
    assert!(
        output.status.success(),
        "exiftool failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut objects: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(&output.stdout).expect("exiftool prints JSON");
    assert_eq!(objects.len(), 1, "exiftool read one file");
    objects.remove(0)
}

/// The tag `name` (`XMP-darkroom:Prompt`) of `tags` as text (numbers as their digits); `None`
/// when absent.
pub fn text(tags: &serde_json::Map<String, serde_json::Value>, name: &str) -> Option<String> {
    match tags.get(name)? {
        serde_json::Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}
