//! Reads and validates a job file as `darkroom validate` does, and prints what it found: for
//! measuring the reader alone (`perf record`, `/usr/bin/time`) without building the whole
//! binary: `cargo run --release -p darkroom-jobs --example read_job -- PATH`.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "big.csv".to_string());
    let started = std::time::Instant::now();
    let mut tasks = 0u64;
    let report = darkroom_jobs::read_job(
        std::path::Path::new(&path),
        &darkroom_jobs::ReadOptions::default(),
        |row| tasks += u64::from(row.variants),
    )
    .unwrap();
    println!(
        "{} rows, {tasks} tasks, {} errors, {} renamed in {:.2} s",
        report.rows,
        report.error_count,
        report.renamed_count,
        started.elapsed().as_secs_f64()
    );
}
