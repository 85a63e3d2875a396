//! The names rows hold in one file, by 128-bit hashes of their case-folded form: which given id or
//! derived name is taken, by which line, and whether a variant's `ID-N` collides with one.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The names rows have, and before that the ids the file gives its rows, keyed by a 128-bit hash
/// of the name with ASCII letters in lower case: names that differ only in case are one file on
/// case-insensitive file systems (macOS, Windows). Ids are ASCII (see [`crate::valid_id`]), so Unicode
/// normalization can't make two names one file, and a file name `ID.EXT` never ends in a dot or a
/// space. Memory grows with the number of rows, never with their contents or variants: a
/// variant's name `ID-N` is found through its row's entry.
#[derive(Debug, Default)]
pub(super) struct Names {
    map: HashMap<u128, Held, BuildHasherDefault<KeyHasher>>,
    /// How many names held end in `-N` (a number): only those can be a variant's file name.
    pub(super) numbered: u64,
    /// The rows whose given id an earlier row had already reserved, by line: the earlier row's
    /// line, and whether the two are written alike (else they differ in letter case). Rare, so
    /// the second pass asks this, not the whole table, whether a given id is another row's.
    repeated: HashMap<u64, (u64, bool)>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    /// The line of the row holding the name.
    line: u64,
    /// A hash of the name as written, to tell a duplicate from a difference in case.
    exact: u32,
    variants: u32,
}

/// A name found taken: the name asked for and who holds it.
#[derive(Debug)]
pub(super) struct Taken {
    pub(super) name: String,
    pub(super) line: u64,
    /// `Some(N)` when the name is variant N's file name of the row holding it.
    pub(super) variant: Option<u32>,
    same_case: bool,
}

impl Taken {
    pub(super) fn whose(&self) -> String {
        match self.variant {
            Some(n) => format!("variant {n} of the row on line {}", self.line),
            None if self.same_case => format!("the row on line {}", self.line),
            None => format!(
                "the row on line {} in other letter case (one file on macOS and Windows)",
                self.line
            ),
        }
    }

    /// The error for a given id that another row already has.
    pub(super) fn duplicate_message(&self, id: &str) -> String {
        if self.same_case {
            format!("duplicate id {id:?} (first used on line {})", self.line)
        } else {
            format!(
                "id {id:?} and the id on line {} differ only in letter case, so their images would be \
                 one file on macOS and Windows; make them differ in more than case",
                self.line
            )
        }
    }
}

impl Names {
    /// An empty table with room for about `rows` names (so a large file's table is not rebuilt
    /// each time it doubles).
    pub(super) fn with_capacity(rows: usize) -> Names {
        Names {
            map: HashMap::with_capacity_and_hasher(rows, BuildHasherDefault::default()),
            ..Names::default()
        }
    }

    /// Holds `id` for the row on `line` unless an earlier row holds it.
    pub(super) fn reserve(&mut self, id: &str, line: u64, variants: u32) {
        match self.map.entry(folded_key(id)) {
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(Held {
                    line,
                    exact: exact_hash(id),
                    variants,
                });
                self.numbered += u64::from(variant_number(id).is_some());
            }
            std::collections::hash_map::Entry::Occupied(entry) => {
                let held = entry.get();
                if held.line != line {
                    self.repeated
                        .entry(line)
                        .or_insert((held.line, held.exact == exact_hash(id)));
                }
            }
        }
    }

    /// Who holds the id `name` that the row on `line` gives itself, other than that row: the
    /// earlier row that reserved it in the first pass. Answered without the table: in the second
    /// pass a given id's entry is only ever its first row's (a derived name that would take it
    /// is made unique instead), so only a row found repeating it in the first pass can be refused.
    pub(super) fn reserved_by_another(&self, name: &str, line: u64) -> Option<Taken> {
        let &(holder, same_case) = self.repeated.get(&line)?;
        Some(Taken {
            name: name.to_string(),
            line: holder,
            variant: None,
            same_case,
        })
    }

    /// Gives `name` (and its variants' names) to the row on `line`.
    pub(super) fn claim(&mut self, name: &str, line: u64, variants: u32) {
        let held = Held {
            line,
            exact: exact_hash(name),
            variants,
        };
        if self.map.insert(folded_key(name), held).is_none() {
            self.numbered += u64::from(variant_number(name).is_some());
        }
    }

    /// Who holds `name`, directly or as a variant's file name, other than the row on `line` (0 for
    /// any row).
    pub(super) fn taken_by(&self, name: &str, line: u64) -> Option<Taken> {
        if let Some(taken) = self.held_by(name, line) {
            return Some(taken);
        }
        let other = |held: &Held| line == 0 || held.line != line;
        let (base, n) = variant_number(name)?;
        let held = self.map.get(&folded_key(base)).filter(|h| other(h))?;
        (held.variants > 1 && n <= held.variants).then(|| Taken {
            name: name.to_string(),
            line: held.line,
            variant: Some(n),
            same_case: true,
        })
    }

    /// Who holds `name` as its own id, other than the row on `line` (0 for any row).
    pub(super) fn held_by(&self, name: &str, line: u64) -> Option<Taken> {
        let held = self
            .map
            .get(&folded_key(name))
            .filter(|h| line == 0 || h.line != line)?;
        Some(Taken {
            name: name.to_string(),
            line: held.line,
            variant: None,
            same_case: held.exact == exact_hash(name),
        })
    }

    /// Whether `name` and its variants' names are held by no row.
    pub(super) fn is_free(&self, name: &str, variants: u32) -> bool {
        self.taken_by(name, 0).is_none()
            && (variants < 2 || (1..=variants).all(|n| self.taken_by(&format!("{name}-{n}"), 0).is_none()))
    }
}

/// `("sofa", 2)` for `"sofa-2"`: a name shaped like a variant's file name (no leading zero).
fn variant_number(name: &str) -> Option<(&str, u32)> {
    let (base, number) = name.rsplit_once('-')?;
    if number.is_empty() || number.starts_with('0') || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((base, number.parse().ok()?))
}

fn folded_key(name: &str) -> u128 {
    let mut folded = [0u8; 128];
    let hash = match folded.get_mut(..name.len()) {
        Some(buffer) => {
            buffer.copy_from_slice(name.as_bytes());
            buffer.make_ascii_lowercase();
            blake3::hash(buffer)
        }
        None => blake3::hash(name.to_ascii_lowercase().as_bytes()),
    };
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.as_bytes()[..16]);
    u128::from_le_bytes(bytes)
}

/// A 32-bit FNV-1a hash of the name as written: it only tells a duplicate from a name that differs
/// in letter case (its folded key already matched), so a collision would only change a message's
/// wording.
fn exact_hash(name: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.bytes() {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    hash
}

/// Hashes the table's keys, which are already uniform 128-bit hashes, by folding their two halves:
/// hashing them again (the standard library's SipHash) was a measurable part of reading a
/// million-row file.
#[derive(Debug, Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u128(&mut self, key: u128) {
        // Truncation intended: both halves are uniform.
        #[allow(clippy::cast_possible_truncation)]
        let (low, high) = (key as u64, (key >> 64) as u64);
        self.0 = low ^ high.rotate_left(32);
    }

    /// Only `u128` keys are hashed; anything else is folded in byte by byte (FNV-1a).
    fn write(&mut self, bytes: &[u8]) {
        let mut hash = self.0 ^ 0xcbf2_9ce4_8422_2325;
        for byte in bytes {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}
