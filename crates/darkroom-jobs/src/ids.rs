//! The id rule: what a row id (and so a task's file stem, and a job's directory name) may be.
//! One rule for every name darkroom turns into a file or directory name.

use std::fmt;

/// The longest id, in bytes (ids are ASCII, so also in characters).
pub const MAX_ID_LEN: usize = 100;

/// Whether `id` is usable as a file name: letters, digits, `-`, `_`, `.`, no leading dot, ≤ 100,
/// and not a name Windows reserves for a device (`CON`, `NUL`, `COM1`, ... with any extension).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !is_device_name(id)
}

/// [`valid_id`] with an error that says what was expected: the rule for row ids, job names and
/// every other name darkroom makes a file or directory of.
///
/// # Errors
/// [`IdError`] (holding the name) when `id` breaks the rule.
pub fn check_id(id: &str) -> Result<(), IdError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(IdError { id: id.to_string() })
    }
}

/// A name that breaks the id rule. Displays as `"NAME" must be 1 to 100 letters, ...`, to be
/// prefixed with what the name is (`id`, `job name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdError {
    /// The name as given.
    pub id: String,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} must be 1 to {MAX_ID_LEN} letters, digits, '-', '_' or '.', not start with '.', \
             and not be a device name (CON, NUL, COM1, ...)",
            self.id
        )
    }
}

impl std::error::Error for IdError {}

fn is_device_name(id: &str) -> bool {
    let stem = id.split('.').next().unwrap_or(id).to_ascii_uppercase();
    matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_name_with_any_extension_or_case_is_refused_with_the_rule() {
        for id in ["CON", "nul.txt", "Com1", "lpt9.tar.gz"] {
            let error = check_id(id).unwrap_err();
            assert!(error.to_string().contains("device name"), "{error}");
        }
        assert!(check_id("COM10").is_ok(), "only COM1..COM9 are devices");
        assert!(check_id("console").is_ok());
    }

    #[test]
    fn the_error_names_the_id_and_the_limits() {
        let long = "a".repeat(MAX_ID_LEN + 1);
        for id in ["", ".hidden", "has space", "é", long.as_str()] {
            let error = check_id(id).unwrap_err();
            assert_eq!(error.id, id);
            assert!(error.to_string().starts_with(&format!("{id:?} must be 1 to 100")));
        }
        assert!(check_id(&"a".repeat(MAX_ID_LEN)).is_ok());
    }
}
