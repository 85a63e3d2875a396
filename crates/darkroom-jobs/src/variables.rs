//! Prompt variables: `{leather|linen|velvet}` in a prompt expands a row into one row per alternative;
//! several groups give the cartesian product. `\{`, `\}` and `\|` are literal characters.

/// A prompt split into literal text and groups of alternatives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Group(Vec<String>),
}

/// Why a prompt's braces don't parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{` at this character (0-based) is never closed.
    #[error("prompt has an unbalanced '{{' (opened at character {0} and never closed)")]
    Unclosed(usize),
    /// A `}` at this character (0-based) closes no group.
    #[error("prompt has an unbalanced '}}' at character {0} (write \\}} for a literal brace)")]
    UnexpectedClose(usize),
    /// A `{` at this character (0-based) opens a group inside a group.
    #[error("prompt has a '{{' inside a '{{...}}' group at character {0} (groups don't nest)")]
    Nested(usize),
}

/// Most rows one row may expand into.
pub const MAX_EXPANSION: u64 = 10_000;

impl Template {
    /// Parses `prompt`'s `{a|b}` groups (`\{` and `\}` are literal braces).
    pub fn parse(prompt: &str) -> Result<Template, TemplateError> {
        // Most prompts have no braces and no escapes: the whole prompt is one text part.
        if !prompt.bytes().any(|b| matches!(b, b'{' | b'}' | b'\\')) {
            let parts = if prompt.is_empty() {
                Vec::new()
            } else {
                vec![Part::Text(prompt.to_string())]
            };
            return Ok(Template { parts });
        }
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut group: Option<(usize, Vec<String>, String)> = None;
        let mut chars = prompt.chars().enumerate().peekable();
        while let Some((i, c)) = chars.next() {
            let escaped = c == '\\' && chars.peek().is_some_and(|(_, n)| matches!(n, '{' | '}' | '|'));
            let (c, literal) = if escaped {
                (chars.next().map_or(c, |(_, n)| n), true)
            } else {
                (c, false)
            };
            match (&mut group, c, literal) {
                (None, '{', false) => {
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    group = Some((i + 1, Vec::new(), String::new()));
                }
                (None, '}', false) => return Err(TemplateError::UnexpectedClose(i + 1)),
                (None, c, _) => text.push(c),
                (Some(_), '{', false) => return Err(TemplateError::Nested(i + 1)),
                (Some((_, alternatives, current)), '|', false) => alternatives.push(std::mem::take(current)),
                (Some(_), '}', false) => {
                    if let Some((_, mut alternatives, current)) = group.take() {
                        alternatives.push(current);
                        parts.push(Part::Group(alternatives));
                    }
                }
                (Some((_, _, current)), c, _) => current.push(c),
            }
        }
        if let Some((opened, _, _)) = group {
            return Err(TemplateError::Unclosed(opened));
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template { parts })
    }

    /// How many prompts the template expands into (saturating).
    pub fn count(&self) -> u64 {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Group(alternatives) => alternatives.len() as u64,
                Part::Text(_) => 1,
            })
            .fold(1u64, u64::saturating_mul)
    }

    /// Whether the prompt has any group.
    pub fn has_groups(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Group(_)))
    }

    /// Every expansion in a stable order (the first group varies slowest), with the alternatives
    /// chosen for each.
    pub fn expand(&self) -> impl Iterator<Item = (String, Vec<&str>)> + '_ {
        let groups: Vec<&Vec<String>> = self
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Group(g) => Some(g),
                Part::Text(_) => None,
            })
            .collect();
        let total = self.count();
        (0..total).map(move |mut index| {
            let mut picks = vec![0usize; groups.len()];
            for (slot, group) in picks.iter_mut().zip(groups.iter()).rev() {
                let n = group.len() as u64;
                *slot = usize::try_from(index % n).unwrap_or(0);
                index /= n;
            }
            let mut prompt = String::new();
            let mut chosen = Vec::with_capacity(groups.len());
            let mut g = 0;
            for part in &self.parts {
                match part {
                    Part::Text(t) => prompt.push_str(t),
                    Part::Group(alternatives) => {
                        let pick = alternatives[picks[g]].as_str();
                        prompt.push_str(pick);
                        chosen.push(pick);
                        g += 1;
                    }
                }
            }
            (prompt, chosen)
        })
    }
}

/// An id for an expanded row: the row id and a slug of each chosen alternative, kept to the id
/// character set and length; a short hash replaces the slugs when they would be too long or empty.
pub fn expanded_id(row_id: &str, chosen: &[&str]) -> String {
    let slugs: Vec<String> = chosen.iter().map(|c| slug(c)).collect();
    let candidate = format!("{row_id}-{}", slugs.join("-"));
    if candidate.len() <= 100 && slugs.iter().all(|s| !s.is_empty()) {
        return candidate;
    }
    let hash = blake3::hash(chosen.join("\u{1f}").as_bytes()).to_hex();
    let keep = row_id.len().min(100 - 13);
    format!("{}-{}", &row_id[..keep], &hash[..12])
}

fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
        if out.len() >= 24 {
            break;
        }
    }
    out.trim_end_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(prompt: &str) -> Vec<String> {
        Template::parse(prompt)
            .unwrap()
            .expand()
            .map(|(p, _)| p)
            .collect()
    }

    #[test]
    fn groups_expand_to_the_cartesian_product_in_order() {
        assert_eq!(
            expand("a {red|blue} {sofa|chair}"),
            ["a red sofa", "a red chair", "a blue sofa", "a blue chair"]
        );
        assert_eq!(expand("no groups"), ["no groups"]);
        assert_eq!(expand("optional{| word}"), ["optional", "optional word"]);
    }

    #[test]
    fn escaped_braces_and_bars_are_literal() {
        assert_eq!(
            expand(r"a \{literal\} \| {x\|y|z}"),
            ["a {literal} | x|y", "a {literal} | z"]
        );
    }

    #[test]
    fn unbalanced_and_nested_braces_are_errors_with_positions() {
        assert_eq!(Template::parse("a {b|c"), Err(TemplateError::Unclosed(3)));
        assert_eq!(Template::parse("a b}"), Err(TemplateError::UnexpectedClose(4)));
        assert_eq!(Template::parse("{a{b}}"), Err(TemplateError::Nested(3)));
    }

    #[test]
    fn expanded_ids_are_stable_readable_and_bounded() {
        assert_eq!(
            expanded_id("sofa", &["Leather", "dark oak"]),
            "sofa-leather-dark-oak"
        );
        let long = "x".repeat(95);
        let id = expanded_id(&long, &["velvet"]);
        assert!(id.len() <= 100, "{id}");
        assert_eq!(id, expanded_id(&long, &["velvet"]));
        assert_ne!(expanded_id("a", &["!!!"]), expanded_id("a", &["???"]));
    }

    #[test]
    fn the_count_saturates_instead_of_overflowing() {
        let prompt = "{a|b|c|d|e|f|g|h|i|j}".repeat(30);
        assert_eq!(Template::parse(&prompt).unwrap().count(), u64::MAX);
    }
}
