//! What makes a raw row valid: its id, prompt (and prompt variables), aspect ratio, variants,
//! model, format and references, every problem reported, not only the first.

use crate::ids::check_id;
use crate::model::{AspectRatio, Format, Model, References, Row, WeightedUrl};
use crate::variables::{expanded_id, Template, MAX_EXPANSION};

use super::{RawRow, ReadOptions, MAX_CHARACTER_REFS, MAX_IMAGE_REFS, MAX_VARIANTS, PROMPT_MAX, PROMPT_MIN};

/// Validates a raw row: every problem, not the first. A valid row yields one row per prompt
/// expansion, and whether the row's id is the one the file gives it (an id given and no prompt
/// variables) rather than one darkroom derived. An invalid row yields its problems and the id the
/// file gives it, if any, for the messages.
pub(super) fn validate(mut raw: RawRow, options: &ReadOptions) -> Result<(Vec<Row>, bool), Invalid> {
    let mut errors = std::mem::take(&mut raw.errors);
    let given = raw.id.as_deref().is_some_and(|id| !id.trim().is_empty());
    let id = row_id(&raw, &mut errors);
    let prompt = prompt_of(raw.prompt.take(), &mut errors);
    let base = Row {
        line: raw.line,
        id,
        prompt: String::new(),
        aspect_ratio: aspect_ratio(raw.aspect_ratio.as_deref(), options, &mut errors),
        variants: variants(raw.variants.as_deref(), &mut errors),
        model: model(raw.model.as_deref(), &mut errors),
        format: format(raw.format.as_deref(), &mut errors),
        refs: raw.refs,
        metadata: raw.metadata,
    };
    check_refs(&base.refs, &mut errors);
    let Some(prompt) = prompt.filter(|_| errors.is_empty()) else {
        return Err((errors, raw.id.filter(|_| given)));
    };
    let has_groups = matches!(&prompt, Prompt::Template(t) if t.has_groups());
    let rows = expand_prompts(prompt, base).map_err(|problems| (problems, raw.id.filter(|_| given)))?;
    Ok((rows, given && !has_groups))
}

/// An invalid row's problems, and the id the file gives it (if any) for the messages.
pub(super) type Invalid = (Vec<String>, Option<String>);

/// A prompt as validated: plain text (no braces or escapes, the usual case: no parser, no copy),
/// or parsed for prompt variables.
enum Prompt {
    Plain(String),
    Template(Template),
}

/// The row's id: the one given (checked against the id rule), else `row-LINE`.
fn row_id(raw: &RawRow, errors: &mut Vec<String>) -> String {
    match raw.id.as_deref().map(str::trim) {
        None | Some("") => format!("row-{}", raw.line),
        Some(id) => {
            if let Err(e) = check_id(id) {
                errors.push(format!("id {e}"));
            }
            id.to_string()
        }
    }
}

/// The prompt, trimmed and, when it has braces or escapes, parsed for prompt variables; `None`
/// (with the problem in `errors`) when it is empty, holds a control character or expands into
/// too many rows.
fn prompt_of(prompt: Option<String>, errors: &mut Vec<String>) -> Option<Prompt> {
    let mut prompt = prompt.unwrap_or_default();
    if prompt.trim().len() != prompt.len() {
        prompt = prompt.trim().to_string();
    }
    if let Some(bad) = prompt
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r'))
    {
        errors.push(format!(
            "prompt contains the control character U+{:04X}",
            u32::from(bad)
        ));
    }
    if prompt.is_empty() {
        errors.push("prompt is empty (it is required)".into());
        return None;
    }
    if !prompt.bytes().any(|b| matches!(b, b'{' | b'}' | b'\\')) {
        return Some(Prompt::Plain(prompt));
    }
    match Template::parse(&prompt) {
        Ok(t) if t.count() > MAX_EXPANSION => {
            errors.push(format!(
                "prompt variables expand this row into {} rows; at most {MAX_EXPANSION} are allowed",
                if t.count() == u64::MAX {
                    "too many".to_string()
                } else {
                    t.count().to_string()
                }
            ));
            None
        }
        Ok(t) => Some(Prompt::Template(t)),
        Err(e) => {
            errors.push(e.to_string());
            None
        }
    }
}

fn aspect_ratio(text: Option<&str>, options: &ReadOptions, errors: &mut Vec<String>) -> AspectRatio {
    match text.map(str::trim) {
        None | Some("") => options.default_aspect_ratio,
        Some(text) => AspectRatio::parse(text).unwrap_or_else(|| {
            errors.push(format!(
                "aspect_ratio {text:?} is not one of {}",
                AspectRatio::expected_list()
            ));
            options.default_aspect_ratio
        }),
    }
}

fn variants(text: Option<&str>, errors: &mut Vec<String>) -> u32 {
    match text.map(str::trim) {
        None | Some("") => 1,
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=MAX_VARIANTS).contains(&n) => n,
            _ => {
                errors.push(format!(
                    "variants {text:?} is not a whole number from 1 to {MAX_VARIANTS}"
                ));
                1
            }
        },
    }
}

fn model(text: Option<&str>, errors: &mut Vec<String>) -> Option<Model> {
    match text.map(str::trim) {
        None | Some("") => None,
        Some(text) => Model::parse(text).or_else(|| {
            errors.push(format!("model {text:?} is not one of photon-1, photon-flash-1"));
            None
        }),
    }
}

fn format(text: Option<&str>, errors: &mut Vec<String>) -> Format {
    match text.map(str::trim) {
        None | Some("") => Format::Jpg,
        Some(text) => Format::parse(&text.to_ascii_lowercase()).unwrap_or_else(|| {
            errors.push(format!("format {text:?} is not one of jpg, png"));
            Format::Jpg
        }),
    }
}

/// One row per expansion of the prompt, each prompt checked for length (at most five problems).
/// The last row takes `base` itself; only the others are copies of it (a plain prompt is one row
/// and no copy).
fn expand_prompts(prompt: Prompt, base: Row) -> Result<Vec<Row>, Vec<String>> {
    let template = match prompt {
        Prompt::Plain(prompt) => {
            return match length_problem(&prompt) {
                Some(problem) => Err(vec![problem]),
                None => Ok(vec![Row { prompt, ..base }]),
            }
        }
        Prompt::Template(template) => template,
    };
    let mut prompts = Vec::new();
    let mut problems = Vec::new();
    for (expanded, chosen) in template.expand() {
        let trimmed = expanded.trim();
        let expanded = if trimmed.len() == expanded.len() {
            expanded
        } else {
            trimmed.to_string()
        };
        problems.extend(length_problem(&expanded));
        let row_id = template.has_groups().then(|| expanded_id(&base.id, &chosen));
        prompts.push((row_id, expanded));
        if problems.len() >= 5 {
            break;
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut rows = Vec::with_capacity(prompts.len());
    let mut base = Some(base);
    let last = prompts.len().saturating_sub(1);
    for (i, (row_id, prompt)) in prompts.into_iter().enumerate() {
        let Some(mut row) = (if i == last { base.take() } else { base.clone() }) else {
            break;
        };
        if let Some(row_id) = row_id {
            row.id = row_id;
        }
        row.prompt = prompt;
        rows.push(row);
    }
    Ok(rows)
}

/// What is wrong with a prompt's length, if anything.
fn length_problem(prompt: &str) -> Option<String> {
    let length = prompt.chars().count();
    if length < PROMPT_MIN {
        Some(format!(
            "prompt {prompt:?} is too short: at least {PROMPT_MIN} characters"
        ))
    } else if length > PROMPT_MAX {
        Some(format!(
            "prompt is too long: {length} characters, at most {PROMPT_MAX}"
        ))
    } else {
        None
    }
}

fn check_refs(refs: &References, errors: &mut Vec<String>) {
    if refs.image_ref.len() > MAX_IMAGE_REFS {
        errors.push(format!(
            "image_ref has {} URLs; at most {MAX_IMAGE_REFS}",
            refs.image_ref.len()
        ));
    }
    if refs.character_ref.len() > MAX_CHARACTER_REFS {
        errors.push(format!(
            "character_ref has {} URLs; at most {MAX_CHARACTER_REFS}",
            refs.character_ref.len()
        ));
    }
    for r in &refs.image_ref {
        check_weighted("image_ref", r, errors);
    }
    if let Some(r) = &refs.style_ref {
        check_weighted("style_ref", r, errors);
    }
    if let Some(r) = &refs.modify_image_ref {
        check_weighted("modify_image_ref", r, errors);
    }
    for url in &refs.character_ref {
        if let Err(message) = check_url(url) {
            errors.push(format!("character_ref {message}"));
        }
    }
}

fn check_weighted(name: &str, reference: &WeightedUrl, errors: &mut Vec<String>) {
    if let Err(message) = check_url(&reference.url) {
        errors.push(format!("{name} {message}"));
    }
    if let Some(weight) = reference.weight {
        if !(0.0..=1.0).contains(&weight) {
            errors.push(format!("{name}_weight {weight} is outside 0 to 1"));
        }
    }
}

/// An http(s) URL with a host, no spaces.
fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} is not an http or https URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or("");
    let host_name = host.split(':').next().unwrap_or("");
    if host_name.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} contains spaces or control characters"));
    }
    Ok(())
}
