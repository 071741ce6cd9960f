//! Filters 50 MB logs through `incident::filter` and records throughput and peak memory in
//! `bench-results/incident-filter.txt`. Run with `cargo bench -p operator --bench incident_filter`.
//!
//! The log is generated from a small pool of chunks cycled to the full size, so the
//! input itself never sits in memory and peak RSS reflects the filter.

use std::fmt::Write as _;
use std::time::Instant;

use operator::incident::filter::{FilterConfig, LogFilter};

const TOTAL: usize = 50 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// Peak resident set size in KiB, from the kernel.
fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets the peak RSS to the current RSS, so each scenario is measured on its own.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn chunks(make_line: impl Fn(u64) -> String) -> Vec<Vec<u8>> {
    let mut n = 0u64;
    (0..16)
        .map(|_| {
            let mut chunk = Vec::with_capacity(CHUNK + 4096);
            while chunk.len() < CHUNK {
                n += 1;
                chunk.extend_from_slice(make_line(n).as_bytes());
            }
            chunk
        })
        .collect()
}

fn main() {
    let scenarios: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "typical: 1 ERROR per 1000 lines",
            chunks(|n| match n % 1000 {
                0 => format!("2026-11-25T19:00:00Z ERROR request {n} failed: store unavailable\n"),
                _ => format!(
                    "2026-11-25T19:00:00Z INFO GET /abc{} 302 in {}ms\n",
                    n % 97,
                    n % 13
                ),
            }),
        ),
        (
            "no line matches",
            chunks(|n| format!("2026-11-25T19:00:00Z INFO GET /abc{} 302\n", n % 97)),
        ),
        (
            "every line matches (cap hit at once)",
            chunks(|n| format!("2026-11-25T19:00:00Z ERROR request {n} failed\n")),
        ),
        (
            "64 KiB lines, 1 in 4 matching at the end",
            chunks(|n| {
                let tail = if n % 4 == 0 { " panic" } else { "" };
                format!("{}{tail}\n", "x".repeat(CHUNK))
            }),
        ),
    ];

    let mut report = String::new();
    let _ = writeln!(
        report,
        "incident log filter: {} MiB per scenario, pushed in {} KiB chunks, default config (context 3, cap 256 KiB, 4 KiB per line)",
        TOTAL / (1024 * 1024),
        CHUNK / 1024
    );
    let _ = writeln!(
        report,
        "build profile: bench (release); machine: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let baseline = vm_hwm_kib().unwrap_or(0);
    let _ = writeln!(
        report,
        "process peak RSS before any scenario (generated chunk pools included): {baseline} KiB"
    );
    for (name, pool) in &scenarios {
        let resettable = reset_peak();
        let before = vm_hwm_kib().unwrap_or(0);
        let start = Instant::now();
        let mut filter = LogFilter::new(FilterConfig::default());
        let mut fed = 0;
        let mut held_peak = 0;
        for chunk in pool.iter().cycle() {
            if fed >= TOTAL {
                break;
            }
            filter.push(chunk);
            fed += chunk.len();
            held_peak = held_peak.max(filter.held_bytes());
        }
        let excerpt = filter.finish();
        let rendered = excerpt.render();
        let elapsed = start.elapsed();
        let peak = vm_hwm_kib().unwrap_or(0);
        let mib = fed as f64 / (1024.0 * 1024.0);
        let _ = writeln!(
            report,
            "- {name}: {mib:.1} MiB, {} lines, {} matching in {:.3} s = {:.0} MiB/s; excerpt {} bytes, {} items, truncated: {}; filter held at most {} bytes; peak RSS {} KiB{} (was {} KiB before)",
            excerpt.stats.lines_read,
            excerpt.stats.matching_lines,
            elapsed.as_secs_f64(),
            mib / elapsed.as_secs_f64(),
            rendered.len(),
            excerpt.items.len(),
            excerpt.truncation.is_some(),
            held_peak,
            peak,
            if resettable {
                ""
            } else {
                " (cumulative: clear_refs unavailable)"
            },
            before,
        );
    }
    print!("{report}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench-results");
    if let Err(e) = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("incident-filter.txt"), &report))
    {
        eprintln!("could not write bench-results/incident-filter.txt: {e}");
        std::process::exit(1);
    }
}
