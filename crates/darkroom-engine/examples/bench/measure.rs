//! Measuring the process: the machine, CPU time (the simulator's threads apart) and peak memory.

/// The machine: cores, memory, CPU model, date.
pub(crate) fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".into(), |m| m.trim().to_string());
    let date = time::OffsetDateTime::now_utc().date();
    format!(
        "Machine: {cores} cores ({model}), {:.1} GiB memory, shared with other work. Measured {date}.\n",
        mem_kb as f64 / 1024.0 / 1024.0
    )
}

/// CPU seconds (user + system) of the whole process, and of the simulator's threads.
pub(crate) fn cpu_seconds() -> (f64, f64) {
    fn ticks(stat: &str) -> u64 {
        // Fields after the command name (which may hold spaces): state is the first; utime and
        // stime are the 12th and 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        n(11) + n(12)
    }
    const TICKS_PER_SECOND: f64 = 100.0;
    let all = ticks(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default());
    let mut sim = 0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() == "sim" {
                sim += ticks(&std::fs::read_to_string(task.path().join("stat")).unwrap_or_default());
            }
        }
    }
    (all as f64 / TICKS_PER_SECOND, sim as f64 / TICKS_PER_SECOND)
}

/// Peak resident memory since the last [`reset_peak_memory`], in MB.
pub(crate) fn peak_memory_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

pub(crate) fn reset_peak_memory() {
    // Linux: writing 5 to clear_refs resets the peak resident set size.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
