//! Any bytes as a JSONL job file: the reader answers with rows or line-numbered errors, never a panic.
#![no_main]

use darkroom_jobs::{read_from, FileFormat, ReadOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lines = data.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    if let Ok(report) = read_from(data, "fuzz", FileFormat::Jsonl, &ReadOptions::default(), |_| {}) {
        for error in &report.errors {
            assert!(error.line <= lines + 1, "{error}");
        }
    }
});
