//! Writes a large CSV job file for benchmarks: `cargo run --release -p darkroom-jobs --example
//! generate_job -- ROWS PATH`. Rows vary in prompt, aspect ratio, variants and metadata.

use std::io::Write;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let rows: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    let path = args.next().unwrap_or_else(|| "big.csv".to_string());
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
    writeln!(out, "id,prompt,aspect_ratio,variants,sku,group")?;
    let ratios = ["1:1", "16:9", "9:16", "4:3", "3:4"];
    let materials = ["linen", "velvet", "leather", "boucle", "wool", "cotton"];
    for i in 0..rows {
        let ratio = ratios[(i % 5) as usize];
        let material = materials[(i % 6) as usize];
        writeln!(
            out,
            "p{i},\"A {material} armchair number {i} in a bright living room, product photography\",{ratio},{},SKU-{},{}",
            1 + i % 3,
            i / 4,
            i % 100
        )?;
    }
    out.flush()?;
    eprintln!("wrote {rows} rows to {path}");
    Ok(())
}
