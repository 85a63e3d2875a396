//! `darkroom config`: every setting as resolved, with where it came from (the built-in default,
//! the config file, an environment variable, a flag). Secrets are shown only as set or not set.

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;

use crate::commands::{Upstream, LUMA_BASE_URL};
use crate::config::{self, env, Origin};
use crate::exit::Exit;

/// Show every setting as resolved and where each came from (secrets redacted).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The output directory, as `run` and `promote` would resolve it.
    #[arg(long, value_name = "DIR", env = crate::config::env::OUT, default_value = "out")]
    pub out: PathBuf,
    #[command(flatten)]
    pub upstream: Upstream,
    /// One JSON object on stdout: each setting's `value` and `origin`.
    #[arg(long)]
    pub json: bool,
}

/// One resolved setting for printing.
struct Line {
    key: String,
    value: toml::Value,
    origin: String,
}

/// Prints the settings; `matches` are this command's own, to tell a flag from its variable.
pub fn run(
    config_file: Option<&Path>,
    args: &Args,
    matches: Option<&clap::ArgMatches>,
) -> anyhow::Result<Exit> {
    let settings = config::resolve(config_file)?;
    let origins = &settings.origins;
    let mut lines = command_line_settings(args, matches);
    lines.extend(file_settings(origins));
    let file = match &origins.file {
        Some((path, origin)) => format!("{} ({origin})", path.display()),
        None => format!("none (name one with --config FILE or {})", env::CONFIG),
    };
    if args.json {
        let settings: serde_json::Map<String, serde_json::Value> = lines
            .iter()
            .map(|l| {
                let value = serde_json::to_value(&l.value).unwrap_or(serde_json::Value::Null);
                (
                    l.key.clone(),
                    serde_json::json!({"value": value, "origin": l.origin}),
                )
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"config_file": file, "settings": settings})
        );
        return Ok(Exit::Done);
    }
    println!("# darkroom's settings as resolved, each with where it came from");
    println!("# config file: {file}");
    for line in &lines {
        println!("{} = {}  # {}", line.key, line.value, line.origin);
    }
    Ok(Exit::Done)
}

/// The settings flags and variables give (`--db`, `--out`, `--base-url`) and the secrets, which
/// show only whether they are set.
fn command_line_settings(args: &Args, matches: Option<&clap::ArgMatches>) -> Vec<Line> {
    let origin_of = |id: &str, flag: &'static str, variable: &'static str| {
        match matches.and_then(|m| m.value_source(id)) {
            Some(ValueSource::CommandLine) => Origin::Flag(flag),
            Some(ValueSource::EnvVariable) => Origin::Environment(variable),
            _ => Origin::Default,
        }
        .to_string()
    };
    let text = |value: &str| toml::Value::String(value.to_string());
    let secret = |variable: &str| {
        let set = std::env::var(variable).is_ok_and(|v| !v.trim().is_empty());
        text(if set { "<redacted>" } else { "<not set>" })
    };
    vec![
        Line {
            key: "db".into(),
            value: text(&args.upstream.db.display().to_string()),
            origin: origin_of("db", "--db", env::DB),
        },
        Line {
            key: "out".into(),
            value: text(&args.out.display().to_string()),
            origin: origin_of("out", "--out", env::OUT),
        },
        Line {
            key: "base_url".into(),
            value: text(args.upstream.base_url.as_deref().unwrap_or(LUMA_BASE_URL)),
            origin: origin_of("base_url", "--base-url", env::BASE_URL),
        },
        Line {
            key: "sim_state".into(),
            value: text(&config::sim_state_dir(&args.upstream.db).display().to_string()),
            origin: "beside the ledger (used with --sim)".into(),
        },
        Line {
            key: "api_key".into(),
            value: secret(env::API_KEY),
            origin: format!("environment {}", env::API_KEY),
        },
        Line {
            key: "notify_secret".into(),
            value: secret(env::NOTIFY_SECRET),
            origin: format!("environment {}", env::NOTIFY_SECRET),
        },
    ]
}

/// The settings of the config layers (defaults, file, `DARKROOM_*`), by dotted key.
fn file_settings(origins: &config::Origins) -> Vec<Line> {
    let mut lines = Vec::new();
    for (key, origin) in &origins.settings {
        let mut value = None;
        let mut table = Some(&origins.values);
        let mut parts = key.split('.').peekable();
        while let Some(part) = parts.next() {
            let found = table.and_then(|t| t.get(part));
            if parts.peek().is_none() {
                value = found.cloned();
            } else {
                table = found.and_then(toml::Value::as_table);
            }
        }
        if let Some(value) = value {
            lines.push(Line {
                key: key.clone(),
                value,
                origin: origin.to_string(),
            });
        }
    }
    lines
}
