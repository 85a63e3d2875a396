//! The commands darkroom prints for the user to run next (`next: ...`, "run `...` again"): each
//! carries the flags that put it in the same situation as the command that printed it
//! (`--provider`, `--sim`, `--db`, `--out`), so it works as printed.

use std::path::Path;

use crate::commands::Upstream;

/// The ledger `--db` names when not given.
const DEFAULT_DB: &str = "darkroom.db";
/// The output directory `--out` names when not given.
const DEFAULT_OUT: &str = "out";

/// The flags a printed command needs to act on the same ledger, outputs and upstream, each with a
/// leading space: `" --sim --db shared.db"`, or `""` when every one is at its default.
pub fn same_situation(upstream: &Upstream, out: &Path) -> String {
    let mut flags = String::new();
    if let Some(provider) = upstream.provider {
        flags.push_str(&format!(" --provider {}", provider.as_str()));
    }
    if upstream.sim {
        flags.push_str(" --sim");
    }
    flags.push_str(&db_flag(&upstream.db));
    if out != Path::new(DEFAULT_OUT) {
        flags.push_str(&format!(" --out {}", quoted(&out.display().to_string())));
    }
    flags
}

/// `" --db PATH"` for a ledger other than the default, `""` for the default.
pub fn db_flag(db: &Path) -> String {
    if db == Path::new(DEFAULT_DB) {
        String::new()
    } else {
        format!(" --db {}", quoted(&db.display().to_string()))
    }
}

/// The `darkroom run` that resumes a pass: its file, `--job` when one was given, `--pass final` for
/// the final pass, then the situation's flags.
pub fn resume_run(file: &Path, job: Option<&str>, pass: darkroom_jobs::Pass, situation: &str) -> String {
    let mut command = format!("darkroom run {}", quoted(&file.display().to_string()));
    if let Some(job) = job {
        command.push_str(&format!(" --job {}", quoted(job)));
    }
    if pass == darkroom_jobs::Pass::Final {
        command.push_str(" --pass final");
    }
    command.push_str(situation);
    command
}

/// A word as a POSIX shell reads it back: as is when it holds only safe characters, otherwise in
/// single quotes.
pub fn quoted(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':' | '=' | '+' | ','));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(db: &str, sim: bool) -> Upstream {
        Upstream {
            db: db.into(),
            base_url: None,
            sim,
            provider: None,
        }
    }

    #[test]
    fn a_command_printed_by_a_run_on_fal_stays_on_fal() {
        let mut on_fal = upstream("darkroom.db", true);
        on_fal.provider = Some(crate::config::provider::ProviderName::Fal);
        assert_eq!(same_situation(&on_fal, Path::new("out")), " --provider fal --sim");
    }

    #[test]
    fn defaults_add_nothing_and_each_change_adds_its_flag() {
        assert_eq!(
            same_situation(&upstream("darkroom.db", false), Path::new("out")),
            ""
        );
        assert_eq!(
            same_situation(&upstream("shared.db", true), Path::new("renders")),
            " --sim --db shared.db --out renders"
        );
    }

    #[test]
    fn a_path_with_spaces_or_quotes_is_quoted_for_the_shell() {
        assert_eq!(quoted("my ledger.db"), "'my ledger.db'");
        assert_eq!(quoted("it's.db"), r"'it'\''s.db'");
    }
}
