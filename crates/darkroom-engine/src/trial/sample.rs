//! The trial's sample: which rows of a job file a trial makes. Seeded and reproducible (the same
//! file, size and seed give the same rows, on every platform and release: the generator is our own
//! SplitMix64, not a library's whose stream may change), stratified by the `group`/`arm` metadata
//! when the file has it (each stratum gets its share, at least one row each when the sample is big
//! enough), and spread evenly over each stratum (or the whole file) rather than bunched.

use std::collections::BTreeMap;
use std::path::Path;

use darkroom_jobs::{FileError, ReadOptions, Report, Row};
use serde::Serialize;

/// The metadata columns a sample is stratified by, when any row has them.
pub const STRATA_COLUMNS: [&str; 2] = ["group", "arm"];

/// How many rows to sample and with what seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleSpec {
    /// Rows to take (at least 1; more than the file has takes every row).
    pub size: u32,
    /// The seed: the same seed takes the same rows.
    pub seed: u64,
}

/// One stratum of the file: its `group`/`arm` values, its rows and how many the sample took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stratum {
    /// `group=G arm=A` (only the columns the file has), or `all rows` without metadata.
    pub key: String,
    /// Rows of the file in it.
    pub rows: u64,
    /// Rows the sample took from it.
    pub taken: u64,
}

/// The sampled rows (in file order) and what they were drawn from.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The rows taken, in file order.
    pub rows: Vec<Row>,
    /// Rows in the whole file.
    pub job_rows: u64,
    /// Tasks (rows × variants) in the whole file: the images of one pass of the job.
    pub job_images: u64,
    /// The strata, by key (a single `all rows` one when the file has no `group`/`arm` column).
    pub strata: Vec<Stratum>,
    /// The size asked for was more than the file's rows: every row was taken.
    pub capped: bool,
}

/// Why no sample could be drawn. Nothing was recorded or spent.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// The file can't be read as a job file.
    #[error(transparent)]
    File(#[from] FileError),
    /// Rows are invalid: the report lists each with its line.
    #[error("the job file has {} invalid row(s)", .0.error_count)]
    Invalid(Box<Report>),
    /// The file has no row.
    #[error("the job file has no row to sample")]
    Empty,
}

/// Draws the sample: reads the file once for its strata (validating every row), picks the rows,
/// and reads it again for the picked ones, so only the sample is held in memory.
///
/// # Errors
/// [`SampleError`]: a file that can't be read, an invalid row, no row at all.
pub fn draw(path: &Path, options: &ReadOptions, spec: SampleSpec) -> Result<Sample, SampleError> {
    let mut strata_of_rows: Vec<[Option<String>; 2]> = Vec::new();
    let mut job_images = 0u64;
    let report = darkroom_jobs::read_job(path, options, |row| {
        job_images += u64::from(row.variants);
        strata_of_rows.push(STRATA_COLUMNS.map(|c| row.metadata.get(c).filter(|v| !v.is_empty()).cloned()));
    })?;
    if report.error_count > 0 {
        return Err(SampleError::Invalid(Box::new(report)));
    }
    if strata_of_rows.is_empty() {
        return Err(SampleError::Empty);
    }
    let keys = stratum_keys(&strata_of_rows);
    let picked = pick(&keys, spec);
    let mut strata: BTreeMap<&str, Stratum> = BTreeMap::new();
    for (index, key) in keys.iter().enumerate() {
        let stratum = strata.entry(key).or_insert_with(|| Stratum {
            key: key.clone(),
            rows: 0,
            taken: 0,
        });
        stratum.rows += 1;
        stratum.taken += u64::from(picked.binary_search(&index).is_ok());
    }
    let mut rows = Vec::with_capacity(picked.len());
    let mut index = 0usize;
    darkroom_jobs::read_job(path, options, |row| {
        if picked.binary_search(&index).is_ok() {
            rows.push(row);
        }
        index += 1;
    })?;
    Ok(Sample {
        rows,
        job_rows: keys.len() as u64,
        job_images,
        strata: strata.into_values().collect(),
        capped: u64::from(spec.size) > keys.len() as u64,
    })
}

/// Each row's stratum key: `group=G arm=A` over the columns any row fills, `all rows` when none does.
fn stratum_keys(values: &[[Option<String>; 2]]) -> Vec<String> {
    let used: Vec<usize> = (0..STRATA_COLUMNS.len())
        .filter(|&c| values.iter().any(|v| v[c].is_some()))
        .collect();
    values
        .iter()
        .map(|v| {
            if used.is_empty() {
                return "all rows".to_string();
            }
            used.iter()
                .map(|&c| format!("{}={}", STRATA_COLUMNS[c], v[c].as_deref().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// The indexes (in file order, ascending) of the rows the sample takes: each stratum's share
/// (`allocate`), spread over the stratum's rows from a seeded offset (`spread`).
pub(crate) fn pick(keys: &[String], spec: SampleSpec) -> Vec<usize> {
    let mut members: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, key) in keys.iter().enumerate() {
        members.entry(key).or_default().push(index);
    }
    let sizes: Vec<u64> = members.values().map(|m| m.len() as u64).collect();
    let shares = allocate(&sizes, u64::from(spec.size).min(keys.len() as u64));
    let mut picked: Vec<usize> = Vec::new();
    for ((key, rows), share) in members.iter().zip(shares) {
        let mut rng = SplitMix64::for_stratum(spec.seed, key);
        picked.extend(
            spread(rows.len() as u64, share, &mut rng).map(|i| rows[usize::try_from(i).unwrap_or(0)]),
        );
    }
    picked.sort_unstable();
    picked
}

/// Splits `n` over strata of `sizes` in proportion (largest remainders, ties to the earlier
/// stratum), then, when `n` allows, gives every stratum at least one, taken from the largest shares.
pub(crate) fn allocate(sizes: &[u64], n: u64) -> Vec<u64> {
    let total: u64 = sizes.iter().sum();
    if total == 0 {
        return vec![0; sizes.len()];
    }
    let mut shares: Vec<u64> = sizes.iter().map(|s| s * n / total).collect();
    let mut left = n - shares.iter().sum::<u64>();
    let mut by_remainder: Vec<usize> = (0..sizes.len()).collect();
    by_remainder.sort_by_key(|&i| std::cmp::Reverse(sizes[i] * n % total));
    for &i in by_remainder.iter().cycle() {
        if left == 0 {
            break;
        }
        if shares[i] < sizes[i] {
            shares[i] += 1;
            left -= 1;
        }
    }
    if n >= sizes.len() as u64 {
        for i in 0..sizes.len() {
            if shares[i] == 0 && sizes[i] > 0 {
                let largest = (0..sizes.len()).max_by_key(|&j| (shares[j], std::cmp::Reverse(j)));
                if let Some(j) = largest.filter(|&j| shares[j] > 1) {
                    shares[j] -= 1;
                    shares[i] += 1;
                }
            }
        }
    }
    shares
}

/// `k` of `0..n`, evenly spaced from a seeded offset: `(i·n + offset) / k` for `i` in `0..k`.
fn spread(n: u64, k: u64, rng: &mut SplitMix64) -> impl Iterator<Item = u64> {
    let k = k.min(n);
    let offset = if n == 0 { 0 } else { rng.next() % n };
    (0..k).map(move |i| (i * n + offset) / k)
}

/// SplitMix64 (Steele, Lea and Flood, 2014): a tiny generator whose stream is fixed by its
/// definition, so a seed means the same sample forever.
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    /// The generator for one stratum: the seed mixed with the stratum's key, so adding rows to
    /// one stratum does not move another's picks.
    fn for_stratum(seed: u64, key: &str) -> SplitMix64 {
        let hash = blake3::hash(format!("{seed}:{key}").as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        SplitMix64(u64::from_le_bytes(first))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(spec: &[(&str, usize)]) -> Vec<String> {
        spec.iter()
            .flat_map(|(k, n)| std::iter::repeat_n(k.to_string(), *n))
            .collect()
    }

    #[test]
    fn the_same_seed_takes_the_same_rows_and_another_seed_others() {
        let all = keys(&[("all rows", 1000)]);
        let a = pick(&all, SampleSpec { size: 50, seed: 7 });
        assert_eq!(a, pick(&all, SampleSpec { size: 50, seed: 7 }));
        assert_ne!(a, pick(&all, SampleSpec { size: 50, seed: 8 }));
        assert_eq!(a.len(), 50);
    }

    #[test]
    fn without_strata_the_sample_is_spread_over_the_whole_file() {
        let all = keys(&[("all rows", 1000)]);
        let picked = pick(&all, SampleSpec { size: 10, seed: 3 });
        // One row from every tenth of the file.
        for (i, index) in picked.iter().enumerate() {
            assert_eq!(index / 100, i, "{picked:?}");
        }
    }

    #[test]
    fn strata_get_their_share_and_a_small_one_still_gets_a_row() {
        let all = keys(&[("group=a", 90), ("group=b", 9), ("group=c", 1)]);
        let picked = pick(&all, SampleSpec { size: 10, seed: 1 });
        let count = |range: std::ops::Range<usize>| picked.iter().filter(|i| range.contains(i)).count();
        assert_eq!(
            (count(0..90), count(90..99), count(99..100)),
            (8, 1, 1),
            "{picked:?}"
        );
    }

    #[test]
    fn a_share_never_exceeds_its_stratum_and_the_total_is_kept() {
        assert_eq!(allocate(&[2, 100], 20), vec![1, 19]);
        assert_eq!(allocate(&[3, 3, 3], 9), vec![3, 3, 3]);
        assert_eq!(allocate(&[5, 5], 3).iter().sum::<u64>(), 3);
    }
}
