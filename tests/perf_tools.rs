//! End-to-end test of the benchmarking scripts in perf/: `perf/compare` runs a real spate
//! seeder, tracker and leecher on loopback, checks every byte, and writes its table, JSON and
//! chart; `perf/versus` reads that JSON back. Small payload: this checks the machinery and
//! the completion signal it takes from spate, not speed.

mod common;

use common::*;
use std::process::Command;

#[test]
fn compare_runs_a_spate_pair_and_versus_reads_it() {
    let dir = tempdir();
    let out = dir.path().join("results");
    let work = dir.path().join("work");
    let repo = env!("CARGO_MANIFEST_DIR");
    let o = Command::new(format!("{repo}/perf/compare"))
        .args([
            "--size", "24M", "--files", "3", "--piece", "256K", "--runs", "1",
        ])
        .args(["--pairs", "spate:spate", "--timeout", "60"])
        .arg("--spate")
        .arg(env!("CARGO_BIN_EXE_spate"))
        .arg("--out")
        .arg(&out)
        .arg("--workdir")
        .arg(&work)
        .output()
        .expect("running perf/compare");
    assert!(o.status.success(), "perf/compare failed: {}", stderr(&o));

    let runs = std::fs::read_to_string(out.join("runs.jsonl")).unwrap();
    let run: serde_json::Value = serde_json::from_str(runs.lines().next().unwrap()).unwrap();
    assert_eq!(run["ok"], true, "{run}");
    assert_eq!(run["verified_while_running"], true, "{run}");
    let via = run["done_via"].as_str().unwrap_or_default();
    assert!(
        via.starts_with("verified event"),
        "completion signal: {via}"
    );
    assert!(run["leecher_peak_rss_mib"].as_f64().unwrap() > 1.0, "{run}");
    assert_eq!(run["spate_report"]["complete"], true, "{run}");
    assert!(run["mb_s"].as_f64().unwrap() > 0.0);

    let table = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(table.contains("| spate → spate |"), "{table}");
    let chart = std::fs::read(out.join("chart.png")).unwrap();
    assert!(
        chart.starts_with(b"\x89PNG\r\n\x1a\n"),
        "chart.png is not a PNG"
    );

    let v = Command::new(format!("{repo}/perf/versus"))
        .arg(out.join("results.json"))
        .output()
        .expect("running perf/versus");
    assert!(v.status.success(), "perf/versus failed: {}", stderr(&v));
    let summary = stdout(&v);
    assert!(
        summary.contains("| spate | **") && summary.contains("spate leecher peak RSS"),
        "perf/versus printed: {summary}"
    );
}
