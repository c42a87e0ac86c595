//! Turns the estimates of the last `cargo bench` run into the README's benchmark table.
//!
//! ```text
//! cargo bench                                        # all groups, about 8 minutes here
//! cargo run -p unimem-bench --bin bench_table   # print the table and the targets
//! cargo run -p unimem-bench --bin bench_table -- --write README.md
//! ```
//!
//! It reads criterion's `new/estimates.json` files (the mean of each benchmark) under
//! `$CARGO_TARGET_DIR/criterion` (or `target/criterion`), lays them out like the seed card's
//! table, checks every performance target of the project as a ratio measured in the same run,
//! and with `--write` replaces the part of the file between `<!-- bench-table:begin -->` and
//! `<!-- bench-table:end -->`. No dependencies: the few numbers needed are picked out of the
//! JSON by hand.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs, process};

const BEGIN: &str = "<!-- bench-table:begin -->";
const END: &str = "<!-- bench-table:end -->";

/// One benchmark's mean time per iteration, in nanoseconds, or `None` if it was not run.
struct Estimates {
    root: PathBuf,
    missing: BTreeSet<String>,
}

impl Estimates {
    fn mean_ns(&mut self, group: &str, function: &str) -> Option<f64> {
        let path = self
            .root
            .join(group)
            .join(function)
            .join("new/estimates.json");
        let found = fs::read_to_string(&path)
            .ok()
            .and_then(|json| point_estimate(&json, "mean"));
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

/// What a table cell shows for one contender: a time, or bandwidth for the 64 MiB rows.
#[derive(Clone, Copy)]
enum Unit {
    Time,
    Bandwidth(f64),
}

impl Unit {
    fn show(self, ns: f64) -> String {
        match self {
            Unit::Time => time(ns),
            Unit::Bandwidth(bytes) => format!("{:.1} GB/s", bytes / ns),
        }
    }
}

/// The table's columns, after the operation: the seed's, plus bumpalo.
const COLUMNS: [&str; 7] = [
    "unimem",
    "malloc",
    "Vec",
    "Box",
    "bumpalo",
    "mmap",
    "mmap+mlock",
];

/// A row: its label, its criterion group, and per column the functions shown (with a prefix
/// when a cell shows more than one).
struct Row {
    label: &'static str,
    group: &'static str,
    unit: Unit,
    cells: [&'static [(&'static str, &'static str)]; 7],
}

const SIXTY_FOUR_MIB: f64 = (64 << 20) as f64;

fn take_row(label: &'static str, group: &'static str) -> Row {
    Row {
        label,
        group,
        unit: Unit::Time,
        cells: [
            &[("Tape ", "tape"), ("Lane ", "lane")],
            &[("", "malloc")],
            &[("", "vec")],
            &[("", "box")],
            &[("", "bumpalo")],
            &[("", "mmap")],
            &[],
        ],
    }
}

fn rows() -> Vec<Row> {
    let bandwidth = |label, group| Row {
        label,
        group,
        unit: Unit::Bandwidth(SIXTY_FOUR_MIB),
        cells: [
            &[("", "block")],
            &[("", "malloc")],
            &[("", "vec")],
            &[("", "box")],
            &[],
            &[("", "mmap")],
            &[("", "mmap_mlock")],
        ],
    };
    vec![
        take_row("take 64 B", "take_64B"),
        take_row("take 4 KiB", "take_4KiB"),
        take_row("take 1 MiB", "take_1MiB"),
        Row {
            label: "free all (1,000 allocations)",
            group: "free_all",
            unit: Unit::Time,
            cells: [
                &[("", "tape")],
                &[("", "malloc")],
                &[("", "vec")],
                &[("", "box")],
                &[("", "bumpalo")],
                &[("", "munmap")],
                &[],
            ],
        },
        Row {
            label: "grid cycle 4 KiB",
            group: "grid_cycle_4KiB",
            unit: Unit::Time,
            cells: [
                &[("Grid ", "grid"), ("stash ", "stash")],
                &[("", "malloc")],
                &[("", "vec")],
                &[("", "box")],
                &[],
                &[("", "mmap")],
                &[],
            ],
        },
        Row {
            label: "init 16 MiB (lazy)",
            group: "init_16MiB_lazy",
            unit: Unit::Time,
            cells: [
                &[("", "block")],
                &[("", "malloc")],
                &[],
                &[],
                &[],
                &[("", "mmap")],
                &[],
            ],
        },
        Row {
            label: "init 16 MiB (warm)",
            group: "init_16MiB_warm",
            unit: Unit::Time,
            cells: [
                &[("", "block")],
                &[("", "malloc_touch")],
                &[],
                &[],
                &[],
                &[],
                &[("", "mmap_mlock")],
            ],
        },
        bandwidth("write 64 MiB", "write_64MiB"),
        bandwidth("read 64 MiB", "read_64MiB"),
    ]
}

fn table(est: &mut Estimates) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| Operation | {} |", COLUMNS.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(COLUMNS.len()));
    for row in rows() {
        let cells: Vec<String> = row
            .cells
            .iter()
            .map(|cell| {
                let parts: Vec<String> = cell
                    .iter()
                    .filter_map(|(prefix, function)| {
                        let ns = est.mean_ns(row.group, function)?;
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

/// One performance target: `measured <= limit` (or `>=` for `at_least`).
struct Target {
    what: String,
    measured: Option<f64>,
    limit: f64,
    at_least: bool,
    unit: &'static str,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? / b?)
}

fn targets(est: &mut Estimates) -> Vec<Target> {
    let mut m = |group: &str, function: &str| est.mean_ns(group, function);
    let fastest_warm = [
        "memfd_mlock",
        "memfd_map_populate_locked",
        "memfd_onfault_populate_write",
        "memfd_fallocate_mlock",
    ]
    .iter()
    .filter_map(|f| m("init_16MiB_warm", f))
    .reduce(f64::min);
    let at_most = |what, measured, limit, unit| Target {
        what,
        measured,
        limit,
        at_least: false,
        unit,
    };
    let mut all = Vec::new();
    for (size, group) in [
        ("64 B", "take_64B"),
        ("4 KiB", "take_4KiB"),
        ("1 MiB", "take_1MiB"),
    ] {
        let lane = ratio(m(group, "lane"), m(group, "bumpalo"));
        let tape = ratio(m(group, "tape"), m(group, "cas_floor"));
        all.push(at_most(
            format!("Lane::take {size} / bumpalo"),
            lane,
            1.2,
            "×",
        ));
        all.push(at_most(
            format!("Tape::take {size} / bare CAS loop"),
            tape,
            1.2,
            "×",
        ));
    }
    for takes in ["1_take", "10000_takes"] {
        let what = format!("clear after {}", takes.replace('_', " "));
        all.push(at_most(
            what,
            m("clear", &format!("after_{takes}")),
            2.0,
            " ns",
        ));
    }
    let grid_1 = m("grid_cycle_4KiB", "grid");
    let malloc = m("grid_cycle_4KiB", "malloc");
    let grid_ratios = [
        ("Grid cycle / malloc+free 4 KiB", grid_1, malloc, 1.0),
        (
            "stash cycle / malloc+free 4 KiB",
            m("grid_cycle_4KiB", "stash"),
            malloc,
            0.25,
        ),
        (
            "Grid cycle on 2 threads / on 1",
            m("grid_cycle_4KiB_2threads", "grid"),
            grid_1,
            2.0,
        ),
    ];
    for (what, a, b, limit) in grid_ratios {
        all.push(at_most(what.to_owned(), ratio(a, b), limit, "×"));
    }
    let lazy = ratio(
        m("init_16MiB_lazy", "block"),
        m("init_16MiB_lazy", "syscalls"),
    );
    let warm = ratio(m("init_16MiB_warm", "block"), fastest_warm);
    all.push(at_most(
        "Block lazy open 16 MiB / its bare syscalls".to_owned(),
        lazy,
        1.5,
        "×",
    ));
    let what = "Block warm open 16 MiB / fastest memfd populate+lock".to_owned();
    all.push(at_most(what, warm, 1.2, "×"));
    // Speed-ups and bandwidths are ratios of times the other way round.
    let speedups = [
        (
            "lanes: 2 threads / 1 thread, takes per second",
            "threads_2",
            "lane_1_thread",
            "lane_2_threads",
            1.8,
        ),
        (
            "write 64 MiB: Block bandwidth / Vec's",
            "write_64MiB",
            "vec",
            "block",
            0.95,
        ),
        (
            "read 64 MiB: Block bandwidth / Vec's",
            "read_64MiB",
            "vec",
            "block",
            0.95,
        ),
    ];
    for (what, group, slower, faster, limit) in speedups {
        all.push(Target {
            what: what.to_owned(),
            measured: ratio(m(group, slower), m(group, faster)),
            limit,
            at_least: true,
            unit: "×",
        });
    }
    all
}

fn target_table(targets: &[Target]) -> String {
    let mut out = String::from("| target | limit | measured | met |\n|---|---|---|---|\n");
    for t in targets {
        let limit = format!(
            "{} {}{}",
            if t.at_least { "≥" } else { "≤" },
            t.limit,
            t.unit
        );
        let (measured, met) = match t.measured {
            Some(v) => {
                let met = if t.at_least {
                    v >= t.limit
                } else {
                    v <= t.limit
                };
                (
                    format!("{v:.2}{}", t.unit),
                    if met { "yes" } else { "**no**" },
                )
            }
            None => ("not measured".to_owned(), "?"),
        };
        let _ = writeln!(out, "| {} | {limit} | {measured} | {met} |", t.what);
    }
    out
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
    let mut root = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("criterion");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--write" => write_to = args.next().map(PathBuf::from),
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
            "no criterion results under {}: run `cargo bench` first",
            root.display()
        );
        process::exit(1);
    }
    let mut est = Estimates {
        root,
        missing: BTreeSet::new(),
    };
    let section = format!(
        "{BEGIN}\n_{}_\n\n{}\nTargets, as ratios measured in the same run:\n\n{}{END}",
        machine(),
        table(&mut est),
        target_table(&targets(&mut est)),
    );
    println!("{section}");
    if !est.missing.is_empty() {
        eprintln!("not measured: {}", Vec::from_iter(est.missing).join(", "));
    }
    if let Some(path) = write_to {
        if let Err(err) = splice(&path, &section) {
            eprintln!("{}: {err}", path.display());
            process::exit(1);
        }
        eprintln!("wrote the table into {}", path.display());
    }
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
