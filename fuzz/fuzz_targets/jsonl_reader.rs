//! Any bytes as a JSONL job file: the reader answers with rows or line-numbered errors, never a panic.
#![no_main]

use darkroom_jobs::{read_from, FileFormat, ReadOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Lines end at \n, \r\n or a lone \r.
    let lines = data.iter().filter(|b| matches!(b, b'\n' | b'\r')).count() as u64 + 1;
    if let Ok(report) = read_from(std::io::Cursor::new(data), "fuzz", FileFormat::Jsonl, &ReadOptions::default(), |_| {}) {
        for error in &report.errors {
            assert!(error.line <= lines + 1, "{error}");
        }
    }
});
