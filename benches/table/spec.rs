//! What the README table shows and which targets it checks: data, one entry a line.
//!
//! Names are criterion's: a benchmark is a group (a directory under `target/criterion`) and a
//! function in it. A row or target whose benchmarks were not run shows as not measured.

/// One benchmark: its criterion group and function.
#[derive(Clone, Copy)]
pub struct Bench(pub &'static str, pub &'static str);

/// What a table cell shows for one contender: a time, or bandwidth over that many bytes.
#[derive(Clone, Copy)]
pub enum Unit {
    Time,
    Bandwidth(f64),
}

/// The table's columns, after the operation: the usual peers, plus bumpalo.
pub const COLUMNS: [&str; 7] = [
    "unimem",
    "malloc",
    "Vec",
    "Box",
    "bumpalo",
    "mmap",
    "mmap+mlock",
];

/// The functions shown per column, each with a prefix when a cell shows more than one.
type Cells = [&'static [(&'static str, &'static str)]; 7];

/// A row: its label, its criterion group, and what each column shows.
pub struct Row {
    pub label: &'static str,
    pub group: &'static str,
    pub unit: Unit,
    pub cells: Cells,
}

const SIXTY_FOUR_MIB: f64 = (64 << 20) as f64;

#[rustfmt::skip]
const TAKE: Cells = [&[("Tape ", "tape"), ("Lane ", "lane")], &[("", "malloc")], &[("", "vec")], &[("", "box")], &[("", "bumpalo")], &[("", "mmap")], &[]];
#[rustfmt::skip]
const BANDWIDTH: Cells = [&[("", "block")], &[("", "malloc")], &[("", "vec")], &[("", "box")], &[], &[("", "mmap")], &[("", "mmap_mlock")]];
#[rustfmt::skip]
const UCX_PUT: Cells = [&[("", "unimem"), ("ucx_perftest ", "ucx_perftest")], &[], &[], &[], &[], &[], &[]];

#[rustfmt::skip]
pub const ROWS: &[Row] = &[
    Row { label: "take 64 B", group: "take_64B", unit: Unit::Time, cells: TAKE },
    Row { label: "take 4 KiB", group: "take_4KiB", unit: Unit::Time, cells: TAKE },
    Row { label: "take 1 MiB", group: "take_1MiB", unit: Unit::Time, cells: TAKE },
    Row { label: "free all (1,000 allocations)", group: "free_all", unit: Unit::Time,
          cells: [&[("", "tape")], &[("", "malloc")], &[("", "vec")], &[("", "box")], &[("", "bumpalo")], &[("", "munmap")], &[]] },
    Row { label: "grid cycle 4 KiB", group: "grid_cycle_4KiB", unit: Unit::Time,
          cells: [&[("Grid ", "grid"), ("stash ", "stash")], &[("", "malloc")], &[("", "vec")], &[("", "box")], &[], &[("", "mmap")], &[]] },
    Row { label: "init 16 MiB (lazy)", group: "init_16MiB_lazy", unit: Unit::Time,
          cells: [&[("", "block")], &[("", "malloc")], &[], &[], &[], &[("", "mmap")], &[]] },
    Row { label: "init 16 MiB (warm)", group: "init_16MiB_warm", unit: Unit::Time,
          cells: [&[("", "block")], &[("", "malloc_touch")], &[], &[], &[], &[], &[("", "mmap_mlock")]] },
    Row { label: "write 64 MiB", group: "write_64MiB", unit: Unit::Bandwidth(SIXTY_FOUR_MIB), cells: BANDWIDTH },
    Row { label: "read 64 MiB", group: "read_64MiB", unit: Unit::Bandwidth(SIXTY_FOUR_MIB), cells: BANDWIDTH },
    Row { label: "1 take 64 B + clear", group: "take_clear_1", unit: Unit::Time, cells: TAKE_CLEAR },
    Row { label: "8 takes 64 B + clear", group: "take_clear_8", unit: Unit::Time, cells: TAKE_CLEAR },
    Row { label: "take 64 B, 1/2/3/4 tapes in turn", group: "round_robin_64B", unit: Unit::Time,
          cells: [&[("1 ", "one_tape"), ("2 ", "tapes_2"), ("3 ", "tapes_3"), ("4 ", "tapes_4")], &[], &[], &[], &[], &[], &[]] },
    Row { label: "Vec<u64>: 1,000 pushes", group: "vec_push_1000", unit: Unit::Time,
          cells: [&[("", "tape")], &[], &[], &[], &[("", "bumpalo")], &[], &[]] },
    Row { label: "scope: 8 takes 64 B", group: "scope_8_takes", unit: Unit::Time,
          cells: [&[("scope ", "scope"), ("clear ", "take_clear")], &[], &[], &[], &[("", "bumpalo")], &[], &[]] },
    // benches/steps.rs: one step of persistent workers (two barriers, each worker's part, a
    // clear), safe `Steps` guards beside the `unsafe` `clear_shared` loop. `steps`: hot_loop's
    // kind of step (16 inputs through a 256×256 layer); `steps_bare`: 32 takes per worker.
    Row { label: "hot_loop step, 1 worker", group: "steps", unit: Unit::Time,
          cells: [&[("Steps ", "guard_1_worker"), ("clear_shared ", "clear_shared_1_worker")], &[], &[], &[], &[], &[], &[]] },
    Row { label: "hot_loop step, 2 workers", group: "steps", unit: Unit::Time,
          cells: [&[("Steps ", "guard_2_workers"), ("clear_shared ", "clear_shared_2_workers")], &[], &[], &[], &[], &[], &[]] },
    Row { label: "bare step (32 takes), 1 worker", group: "steps_bare", unit: Unit::Time,
          cells: [&[("Steps ", "guard_1_worker"), ("clear_shared ", "clear_shared_1_worker")], &[], &[], &[], &[], &[], &[]] },
    Row { label: "bare step (32 takes), 2 workers", group: "steps_bare", unit: Unit::Time,
          cells: [&[("Steps ", "guard_2_workers"), ("clear_shared ", "clear_shared_2_workers")], &[], &[], &[], &[], &[], &[]] },
    // Warm opens of 1 GiB (Linux): the mmap column is the kernel's own populate of the same
    // kind of memfd (MADV_POPULATE_WRITE), split over the same threads.
    Row { label: "warm 1 GiB, 4 KiB pages (1 thread / all)", group: "warm_1GiB", unit: Unit::Time,
          cells: [&[("1: ", "block_4KiB_1_thread"), ("all: ", "block_4KiB_threads")], &[], &[], &[], &[], &[("1: ", "populate_4KiB_1_thread"), ("all: ", "populate_4KiB_threads")], &[]] },
    Row { label: "warm 1 GiB, transparent huge pages (1 thread / all)", group: "warm_1GiB", unit: Unit::Time,
          cells: [&[("1: ", "block_thp_1_thread"), ("all: ", "block_thp_threads")], &[], &[], &[], &[], &[("1: ", "populate_thp_1_thread"), ("all: ", "populate_thp_threads")], &[]] },
    Row { label: "warm 1 GiB, hugetlb pages (1 thread / all)", group: "warm_1GiB", unit: Unit::Time,
          cells: [&[("1: ", "block_hugetlb_1_thread"), ("all: ", "block_hugetlb_threads")], &[], &[], &[], &[], &[("1: ", "populate_hugetlb_1_thread"), ("all: ", "populate_hugetlb_threads")], &[]] },
    // benches/ucx.rs: a put into another process's registered Block, beside
    // `ucx_perftest -t ucp_put_bw` with the same size and transport, in the unimem column.
    Row { label: "UCX put 64 MiB, TCP loopback", group: "ucx_put_64MiB_tcp", unit: Unit::Bandwidth(SIXTY_FOUR_MIB), cells: UCX_PUT },
    Row { label: "UCX put 64 MiB, shared memory", group: "ucx_put_64MiB_shm", unit: Unit::Bandwidth(SIXTY_FOUR_MIB), cells: UCX_PUT },
];

#[rustfmt::skip]
const TAKE_CLEAR: Cells = [&[("", "tape")], &[], &[], &[], &[("", "bumpalo")], &[], &[]];

/// What a target measures.
pub enum Measure {
    /// One benchmark's mean time, in nanoseconds.
    Time(Bench),
    /// The mean time of the first over the fastest mean of the others: a slowdown, or (as an
    /// `AtLeast` target) a speed-up of the others over the first.
    Ratio(Bench, &'static [Bench]),
}

/// Which side of its limit a target must be on.
#[derive(Clone, Copy)]
pub enum Bound {
    AtMost(f64),
    AtLeast(f64),
}

/// One performance target of the project, checked in the run that measured it.
pub struct Target {
    pub what: &'static str,
    pub measure: Measure,
    pub bound: Bound,
    pub unit: &'static str,
}

use Bound::{AtLeast, AtMost};
use Measure::{Ratio, Time};

const FASTEST_WARM_MEMFD: &[Bench] = &[
    Bench("init_16MiB_warm", "memfd_mlock"),
    Bench("init_16MiB_warm", "memfd_map_populate_locked"),
    Bench("init_16MiB_warm", "memfd_onfault_populate_write"),
    Bench("init_16MiB_warm", "memfd_fallocate_mlock"),
];

#[rustfmt::skip]
pub const TARGETS: &[Target] = &[
    Target { what: "Lane::take 64 B / bumpalo", measure: Ratio(Bench("take_64B", "lane"), &[Bench("take_64B", "bumpalo")]), bound: AtMost(1.2), unit: "×" },
    Target { what: "Tape::take 64 B / bare CAS loop", measure: Ratio(Bench("take_64B", "tape"), &[Bench("take_64B", "cas_floor")]), bound: AtMost(0.6), unit: "×" },
    Target { what: "Lane::take 4 KiB / bumpalo", measure: Ratio(Bench("take_4KiB", "lane"), &[Bench("take_4KiB", "bumpalo")]), bound: AtMost(1.2), unit: "×" },
    Target { what: "Tape::take 4 KiB / bare CAS loop", measure: Ratio(Bench("take_4KiB", "tape"), &[Bench("take_4KiB", "cas_floor")]), bound: AtMost(1.2), unit: "×" },
    Target { what: "Lane::take 1 MiB / bumpalo", measure: Ratio(Bench("take_1MiB", "lane"), &[Bench("take_1MiB", "bumpalo")]), bound: AtMost(1.2), unit: "×" },
    Target { what: "Tape::take 1 MiB / bare CAS loop", measure: Ratio(Bench("take_1MiB", "tape"), &[Bench("take_1MiB", "cas_floor")]), bound: AtMost(1.2), unit: "×" },
    Target { what: "clear after 1 take", measure: Time(Bench("clear", "after_1_take")), bound: AtMost(2.0), unit: " ns" },
    Target { what: "clear after 10000 takes", measure: Time(Bench("clear", "after_10000_takes")), bound: AtMost(2.0), unit: " ns" },
    Target { what: "Grid cycle / malloc+free 4 KiB", measure: Ratio(Bench("grid_cycle_4KiB", "grid"), &[Bench("grid_cycle_4KiB", "malloc")]), bound: AtMost(1.0), unit: "×" },
    Target { what: "stash cycle / malloc+free 4 KiB", measure: Ratio(Bench("grid_cycle_4KiB", "stash"), &[Bench("grid_cycle_4KiB", "malloc")]), bound: AtMost(0.25), unit: "×" },
    Target { what: "Grid cycle on 2 threads / on 1", measure: Ratio(Bench("grid_cycle_4KiB_2threads", "grid"), &[Bench("grid_cycle_4KiB", "grid")]), bound: AtMost(2.0), unit: "×" },
    Target { what: "Block lazy open 16 MiB / its bare syscalls", measure: Ratio(Bench("init_16MiB_lazy", "block"), &[Bench("init_16MiB_lazy", "syscalls")]), bound: AtMost(1.5), unit: "×" },
    Target { what: "Block warm open 16 MiB / fastest memfd populate+lock", measure: Ratio(Bench("init_16MiB_warm", "block"), FASTEST_WARM_MEMFD), bound: AtMost(1.2), unit: "×" },
    Target { what: "1 take + clear / bumpalo alloc + reset", measure: Ratio(Bench("take_clear_1", "tape"), &[Bench("take_clear_1", "bumpalo")]), bound: AtMost(1.2), unit: "×" },
    Target { what: "8 takes + clear / bumpalo", measure: Ratio(Bench("take_clear_8", "tape"), &[Bench("take_clear_8", "bumpalo")]), bound: AtMost(1.2), unit: "×" },
    Target { what: "take, 2 tapes in turn / bare CAS loop", measure: Ratio(Bench("round_robin_64B", "tapes_2"), &[Bench("round_robin_64B", "cas_floor")]), bound: AtMost(0.6), unit: "×" },
    Target { what: "take, 3 tapes in turn / bare CAS loop", measure: Ratio(Bench("round_robin_64B", "tapes_3"), &[Bench("round_robin_64B", "cas_floor")]), bound: AtMost(0.6), unit: "×" },
    Target { what: "take, 4 tapes in turn / bare CAS loop", measure: Ratio(Bench("round_robin_64B", "tapes_4"), &[Bench("round_robin_64B", "cas_floor")]), bound: AtMost(0.6), unit: "×" },
    Target { what: "take, 2 tapes in turn / one tape", measure: Ratio(Bench("round_robin_64B", "tapes_2"), &[Bench("round_robin_64B", "one_tape")]), bound: AtMost(1.5), unit: "×" },
    Target { what: "take, 3 tapes in turn / one tape", measure: Ratio(Bench("round_robin_64B", "tapes_3"), &[Bench("round_robin_64B", "one_tape")]), bound: AtMost(1.5), unit: "×" },
    Target { what: "take, 4 tapes in turn / one tape", measure: Ratio(Bench("round_robin_64B", "tapes_4"), &[Bench("round_robin_64B", "one_tape")]), bound: AtMost(1.5), unit: "×" },
    Target { what: "Vec<u64, &Tape> / Vec<u64, &Bump>, 1,000 pushes", measure: Ratio(Bench("vec_push_1000", "tape"), &[Bench("vec_push_1000", "bumpalo")]), bound: AtMost(1.2), unit: "×" },
    // Speed-ups and bandwidths: the slower contender's time over the faster's.
    Target { what: "Tape::take: 2 threads / 1 thread, takes per second", measure: Ratio(Bench("threads_2", "tape_1_thread"), &[Bench("threads_2", "tape_2_threads")]), bound: AtLeast(1.7), unit: "×" },
    Target { what: "lanes: 2 threads / 1 thread, takes per second", measure: Ratio(Bench("threads_2", "lane_1_thread"), &[Bench("threads_2", "lane_2_threads")]), bound: AtLeast(1.8), unit: "×" },
    Target { what: "write 64 MiB: Block bandwidth / Vec's", measure: Ratio(Bench("write_64MiB", "vec"), &[Bench("write_64MiB", "block")]), bound: AtLeast(0.95), unit: "×" },
    Target { what: "read 64 MiB: Block bandwidth / Vec's", measure: Ratio(Bench("read_64MiB", "vec"), &[Bench("read_64MiB", "block")]), bound: AtLeast(0.95), unit: "×" },
    // benches/steps.rs: on hot_loop's kind of step, the safe protocol costs at most 5% over
    // the unsafe clear.
    Target { what: "hot_loop step, 1 worker: Steps / clear_shared", measure: Ratio(Bench("steps", "guard_1_worker"), &[Bench("steps", "clear_shared_1_worker")]), bound: AtMost(1.05), unit: "×" },
    Target { what: "hot_loop step, 2 workers: Steps / clear_shared", measure: Ratio(Bench("steps", "guard_2_workers"), &[Bench("steps", "clear_shared_2_workers")]), bound: AtMost(1.05), unit: "×" },
    // Pools (issue 19): threads speed a warm open up, huge pages cut it, and each Block stays
    // beside the kernel's own populate of the same kind.
    Target { what: "warm open 1 GiB: all threads / 1 thread, speed-up", measure: Ratio(Bench("warm_1GiB", "block_4KiB_1_thread"), &[Bench("warm_1GiB", "block_4KiB_threads")]), bound: AtLeast(1.5), unit: "×" },
    Target { what: "warm open 1 GiB: transparent huge pages / 4 KiB pages", measure: Ratio(Bench("warm_1GiB", "block_thp_1_thread"), &[Bench("warm_1GiB", "block_4KiB_1_thread")]), bound: AtMost(0.45), unit: "×" },
    Target { what: "warm open 1 GiB: hugetlb pages / 4 KiB pages", measure: Ratio(Bench("warm_1GiB", "block_hugetlb_1_thread"), &[Bench("warm_1GiB", "block_4KiB_1_thread")]), bound: AtMost(0.45), unit: "×" },
    Target { what: "warm open 1 GiB, 4 KiB, all threads / kernel populate", measure: Ratio(Bench("warm_1GiB", "block_4KiB_threads"), &[Bench("warm_1GiB", "populate_4KiB_threads")]), bound: AtMost(1.1), unit: "×" },
    Target { what: "warm open 1 GiB, THP, all threads / kernel populate", measure: Ratio(Bench("warm_1GiB", "block_thp_threads"), &[Bench("warm_1GiB", "populate_thp_threads")]), bound: AtMost(1.1), unit: "×" },
    Target { what: "warm open 1 GiB, hugetlb, all threads / kernel populate", measure: Ratio(Bench("warm_1GiB", "block_hugetlb_threads"), &[Bench("warm_1GiB", "populate_hugetlb_threads")]), bound: AtMost(1.1), unit: "×" },
    Target { what: "UCX put 64 MiB over TCP: bandwidth / ucx_perftest's", measure: Ratio(Bench("ucx_put_64MiB_tcp", "ucx_perftest"), &[Bench("ucx_put_64MiB_tcp", "unimem")]), bound: AtLeast(0.9), unit: "×" },
    Target { what: "UCX put 64 MiB over shared memory: bandwidth / ucx_perftest's", measure: Ratio(Bench("ucx_put_64MiB_shm", "ucx_perftest"), &[Bench("ucx_put_64MiB_shm", "unimem")]), bound: AtLeast(0.9), unit: "×" },
];
