//! Turns the estimates of the last `cargo bench -p unimem-bench` run into the README's
//! benchmark table.
//!
//! ```text
//! cargo bench -p unimem-bench                   # all groups, about 8 minutes here
//! cargo run -p unimem-bench --bin bench_table   # print the table and the targets
//! cargo run -p unimem-bench --bin bench_table -- --write README.md
//! ```
//!
//! It reads criterion's `new/estimates.json` files (the mean of each benchmark) under
//! the directory criterion wrote them to (see [`criterion_home`]), lays them out as [`spec::ROWS`] says,
//! checks every target in [`spec::TARGETS`] as a ratio measured in the same run, and with
//! `--write` replaces the part of the file between `<!-- bench-table:begin -->` and
//! `<!-- bench-table:end -->`. No dependencies: the few numbers needed are picked out of the
//! JSON by hand.
//!
//! A table with holes is not a result: when a benchmark the table or a target needs has no
//! estimates (every baseline of a target counts), or a target's estimates were written too far
//! apart to come from one run ([`SAME_RUN`]), the tool says which, writes nothing, and exits
//! with status 1.

mod spec;

use spec::{Bench, Bound, COLUMNS, Measure, ROWS, TARGETS, Target, Unit};

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use std::{env, fs, process};

const BEGIN: &str = "<!-- bench-table:begin -->";
const END: &str = "<!-- bench-table:end -->";

/// The estimates of the last run of each benchmark, read on demand; which were not found.
struct Estimates {
    root: PathBuf,
    missing: BTreeSet<String>,
}

/// One benchmark's mean time per iteration, in nanoseconds, and when criterion wrote it.
#[derive(Clone, Copy)]
struct Estimate {
    mean_ns: f64,
    written: SystemTime,
}

impl Estimates {
    fn mean_ns(&mut self, bench: Bench) -> Option<f64> {
        self.estimate(bench).map(|estimate| estimate.mean_ns)
    }

    /// `bench`'s estimate, or `None` (and `bench` noted as missing) if it was not run.
    fn estimate(&mut self, Bench(group, function): Bench) -> Option<Estimate> {
        let path = self
            .root
            .join(group)
            .join(function)
            .join("new/estimates.json");
        let found = fs::read_to_string(&path).ok().and_then(|json| {
            Some(Estimate {
                mean_ns: point_estimate(&json, "mean")?,
                written: fs::metadata(&path).ok()?.modified().ok()?,
            })
        });
        if found.is_none() {
            self.missing.insert(format!("{group}/{function}"));
        }
        found
    }
}

/// The `point_estimate` of the statistic named `stat` in criterion's estimates.json.
fn point_estimate(json: &str, stat: &str) -> Option<f64> {
    let at = json.find(&format!("\"{stat}\""))?;
    let rest = &json[at..];
    let value = &rest[rest.find("\"point_estimate\"")? + "\"point_estimate\"".len()..];
    let value = value.trim_start().strip_prefix(':')?.trim_start();
    let end = value
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+')))
        .unwrap_or(value.len());
    value[..end].parse().ok()
}

fn time(ns: f64) -> String {
    match ns {
        ns if ns < 10.0 => format!("{ns:.2} ns"),
        ns if ns < 1e3 => format!("{ns:.1} ns"),
        ns if ns < 1e6 => format!("{:.1} µs", ns / 1e3),
        ns => format!("{:.2} ms", ns / 1e6),
    }
}

impl Unit {
    fn show(self, ns: f64) -> String {
        match self {
            Unit::Time => time(ns),
            Unit::Bandwidth(bytes) => format!("{:.1} GB/s", bytes / ns),
        }
    }
}

fn table(est: &mut Estimates) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| Operation | {} |", COLUMNS.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(COLUMNS.len()));
    for row in ROWS {
        let cells: Vec<String> = row
            .cells
            .iter()
            .map(|cell| {
                let parts: Vec<String> = cell
                    .iter()
                    .filter_map(|(prefix, function)| {
                        let ns = est.mean_ns(Bench(row.group, function))?;
                        Some(format!("{prefix}{}", row.unit.show(ns)))
                    })
                    .collect();
                if parts.is_empty() {
                    "-".to_owned()
                } else {
                    parts.join(" · ")
                }
            })
            .collect();
        let _ = writeln!(out, "| {} | {} |", row.label, cells.join(" | "));
    }
    let _ = writeln!(
        out,
        "| pinned | {} | no | no | no | no | no | yes |",
        if cfg!(target_os = "linux") {
            "yes (mlock2, on fault when lazy)"
        } else if cfg!(target_vendor = "apple") {
            "yes (mlock on the locked IOSurface)"
        } else {
            "no (portable backend)"
        }
    );
    let _ = writeln!(
        out,
        "| HW shared | {} | CPU | CPU | CPU | CPU | CPU | CPU |",
        if cfg!(target_os = "linux") {
            "CPU + other processes + fd importers (sealed memfd)"
        } else if cfg!(target_vendor = "apple") {
            "CPU + GPU + AMX + ANE (IOSurface)"
        } else {
            "CPU"
        }
    );
    out
}

/// How far apart in time the estimates of one target may have been written and still count
/// as one run. A target compares benchmarks of one bench binary, which criterion runs one
/// after another in a few minutes; estimates written further apart come from different runs
/// (one of them rerun alone, or left over from an older run), and their ratio means nothing.
const SAME_RUN: Duration = Duration::from_secs(15 * 60);

/// Why a target has no measurement.
enum Unmeasured {
    /// These benchmarks have no estimates.
    Missing(Vec<String>),
    /// The estimates were written this far apart: not one run.
    DifferentRuns(Duration),
}

impl fmt::Display for Unmeasured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unmeasured::Missing(benches) => write!(f, "not measured: no {}", benches.join(", ")),
            Unmeasured::DifferentRuns(apart) => write!(
                f,
                "not measured together: estimates written {} min apart",
                apart.as_secs() / 60
            ),
        }
    }
}

/// What `target` measured, or why it cannot say: a benchmark it needs (any of them, every
/// baseline included) was not run, or its estimates come from different runs.
fn measure(est: &mut Estimates, target: &Target) -> Result<f64, Unmeasured> {
    let benches: Vec<Bench> = match target.measure {
        Measure::Time(bench) => vec![bench],
        Measure::Ratio(bench, baselines) => [bench]
            .into_iter()
            .chain(baselines.iter().copied())
            .collect(),
    };
    let mut estimates = Vec::new();
    let mut missing = Vec::new();
    for bench in benches {
        match est.estimate(bench) {
            Some(estimate) => estimates.push(estimate),
            None => missing.push(format!("{}/{}", bench.0, bench.1)),
        }
    }
    if !missing.is_empty() {
        return Err(Unmeasured::Missing(missing));
    }
    let first = estimates
        .iter()
        .map(|e| e.written)
        .min()
        .expect("a target names a benchmark");
    let last = estimates
        .iter()
        .map(|e| e.written)
        .max()
        .expect("a target names a benchmark");
    let apart = last.duration_since(first).unwrap_or_default();
    if apart > SAME_RUN {
        return Err(Unmeasured::DifferentRuns(apart));
    }
    let fastest_baseline = estimates[1..].iter().map(|e| e.mean_ns).reduce(f64::min);
    Ok(match fastest_baseline {
        Some(fastest) => estimates[0].mean_ns / fastest,
        None => estimates[0].mean_ns,
    })
}

/// The targets' table, and how many targets could not be measured.
fn target_table(est: &mut Estimates) -> (String, usize) {
    let mut out = String::from("| target | limit | measured | met |\n|---|---|---|---|\n");
    let mut unmeasured = 0;
    for target in TARGETS {
        let (sign, limit) = match target.bound {
            Bound::AtMost(limit) => ("≤", limit),
            Bound::AtLeast(limit) => ("≥", limit),
        };
        let unit = target.unit;
        let (measured, met) = match measure(est, target) {
            Ok(v) => {
                let met = match target.bound {
                    Bound::AtMost(limit) => v <= limit,
                    Bound::AtLeast(limit) => v >= limit,
                };
                (format!("{v:.2}{unit}"), if met { "yes" } else { "**no**" })
            }
            Err(why) => {
                unmeasured += 1;
                eprintln!("target {:?}: {why}", target.what);
                (why.to_string(), "?")
            }
        };
        let what = target.what;
        let _ = writeln!(
            out,
            "| {what} | {sign} {limit}{unit} | {measured} | {met} |"
        );
    }
    (out, unmeasured)
}

/// "CPU model, N cores, Linux x.y.z, date": where and when the numbers were taken.
fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| env::consts::ARCH.to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| format!("{} {}", env::consts::OS, k.trim()))
        .unwrap_or_else(|_| env::consts::OS.to_owned());
    let date = process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|d| d.trim().to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {kernel}, measured {date}")
}

fn main() {
    let mut args = env::args().skip(1);
    let mut write_to = None;
    let mut root = criterion_home();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--write" => match args.next() {
                Some(path) => write_to = Some(PathBuf::from(path)),
                None => {
                    eprintln!("--write needs a file: bench_table --write README.md");
                    process::exit(2);
                }
            },
            "--criterion" => root = args.next().map(PathBuf::from).unwrap_or(root),
            other => {
                eprintln!(
                    "unknown argument {other:?}; usage: bench_table [--criterion DIR] [--write README.md]"
                );
                process::exit(2);
            }
        }
    }
    if !root.is_dir() {
        eprintln!(
            "no criterion results under {}: run `cargo bench -p unimem-bench` first",
            root.display()
        );
        process::exit(1);
    }
    let mut est = Estimates {
        root,
        missing: BTreeSet::new(),
    };
    let rows = table(&mut est);
    let (targets, unmeasured) = target_table(&mut est);
    let section = format!(
        "{BEGIN}\n_{}_\n\n{rows}\nTargets, as ratios measured in the same run:\n\n{targets}{END}",
        machine(),
    );
    println!("{section}");
    // A table with holes, or with a ratio of estimates from different runs, is not a result:
    // say what is wrong and fail, and do not write it.
    let mut complete = true;
    if !est.missing.is_empty() {
        eprintln!(
            "not measured: {}; run `cargo bench` (all of it) and then this tool again",
            Vec::from_iter(est.missing).join(", ")
        );
        complete = false;
    }
    if unmeasured > 0 {
        eprintln!(
            "{unmeasured} of {} targets could not be checked (see above); run `cargo bench` \
             (all of it) and then this tool again",
            TARGETS.len()
        );
        complete = false;
    }
    if !complete {
        if let Some(path) = write_to {
            eprintln!("did not write {}: the table is incomplete", path.display());
        }
        process::exit(1);
    }
    if let Some(path) = write_to {
        if let Err(err) = splice(&path, &section) {
            eprintln!("{}: {err}", path.display());
            process::exit(1);
        }
        eprintln!("wrote the table into {}", path.display());
    }
}

/// Where criterion writes its results when cargo runs the benchmarks, whatever directory this
/// tool runs in: `$CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`, else `criterion` in the
/// workspace's target directory. Relative paths are relative to the benchmark crate, where
/// cargo runs the benchmarks.
fn criterion_home() -> PathBuf {
    let benches = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Some(home) = env::var_os("CRITERION_HOME") {
        return benches.join(home);
    }
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(|dir| benches.join(dir))
        .or_else(cargo_target_directory)
        .unwrap_or_else(|| benches.join("../target"));
    target.join("criterion")
}

/// The workspace's target directory, as `cargo metadata` reports it (the build may have
/// configured it elsewhere).
fn cargo_target_directory() -> Option<PathBuf> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let json = String::from_utf8(output.stdout).ok()?;
    let key = "\"target_directory\":\"";
    let rest = &json[json.find(key)? + key.len()..];
    Some(PathBuf::from(&rest[..rest.find('"')?]))
}

/// Replaces the marked section of the file at `path` with `section`.
fn splice(path: &Path, section: &str) -> Result<(), String> {
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        return Err(format!("the file has no {BEGIN} … {END} section"));
    };
    let updated = format!("{}{section}{}", &text[..begin], &text[end + END.len()..]);
    fs::write(path, updated).map_err(|e| e.to_string())
}
