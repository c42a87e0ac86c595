//! What a Block costs to open and to use, against the memory it is built from.
//!
//! Groups (read by `examples/bench_table.rs` for the README table):
//! - `init_16MiB_lazy`, `init_16MiB_warm`: open + release 16 MiB, against the bare syscall
//!   sequences, malloc and mmap; the warm group also measures every way the kernel offers to
//!   populate and lock shared memory, so the Block can be held to the fastest of them.
//! - `write_64MiB`, `read_64MiB`: volatile u64 stores and loads over 64 MiB, through a
//!   Block and through the usual peers.
//! - `warm_1GiB` (Linux): a warm open of 1 GiB with 4 KiB pages, transparent huge pages and
//!   hugetlb pages, on 1 thread and on every CPU, each beside the kernel's own fastest
//!   populate of the same kind of memfd (`MADV_POPULATE_WRITE`, split the same way) in the
//!   same run. Huge pages need two kernel knobs: run as root, this group sets each knob as
//!   its rows need (`shmem_enabled=advise` with an empty hugetlb pool for transparent huge
//!   pages, then a pool of 520 pages for hugetlb) and puts both back; otherwise it measures
//!   what the knobs allow and says which rows it skipped. Only `--bench block -- warm_1GiB`
//!   runs it alone (about a minute).

#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented pub fn"
)]

mod support;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::ptr;
use std::time::Duration;
use unimem::{Block, Pinning};

const INIT: usize = 16 << 20;
const BANDWIDTH: usize = 64 << 20;
const PAGE: usize = 4096;

/// Raw libc calls for the peers, each checked, so a failing call cannot look fast.
mod raw {
    use std::ptr;

    #[cfg(target_os = "linux")]
    pub fn memfd(len: usize, seal: bool) -> i32 {
        let flags = libc::MFD_CLOEXEC | if seal { libc::MFD_ALLOW_SEALING } else { 0 };
        // SAFETY: a valid name and flags.
        let fd = unsafe { libc::memfd_create(c"bench".as_ptr(), flags) };
        assert!(fd >= 0);
        // SAFETY: a descriptor we own.
        assert_eq!(unsafe { libc::ftruncate(fd, len as libc::off_t) }, 0);
        if seal {
            let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
            // SAFETY: F_ADD_SEALS takes an int.
            assert_eq!(unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) }, 0);
        }
        fd
    }

    pub fn map(fd: i32, len: usize, flags: i32) -> *mut u8 {
        let shared = if fd < 0 {
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS
        } else {
            libc::MAP_SHARED
        };
        // SAFETY: a fresh mapping chosen by the kernel.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                shared | flags,
                fd,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        p.cast()
    }

    pub fn check(rc: i32) {
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    }

    pub fn release(p: *mut u8, len: usize, fd: i32) {
        // SAFETY: `p` maps `len` bytes that nothing uses any more.
        check(unsafe { libc::munmap(p.cast(), len) });
        if fd >= 0 {
            // SAFETY: a descriptor we own.
            check(unsafe { libc::close(fd) });
        }
    }
}

/// Writes one byte per page, so every page is faulted in.
fn touch(p: *mut u8, len: usize) {
    for offset in (0..len).step_by(PAGE) {
        // SAFETY: callers pass a live, writable region of `len` bytes.
        unsafe { p.add(offset).write_volatile(1) };
    }
}

fn init(c: &mut Criterion) {
    let mut lazy = c.benchmark_group("init_16MiB_lazy");
    lazy.sample_size(30);
    lazy.bench_function("block", |b| {
        b.iter(|| Block::open(black_box(INIT)).unwrap())
    });
    lazy.bench_function("block_unpinned", |b| {
        b.iter(|| {
            Block::options()
                .pinning(Pinning::Off)
                .open(black_box(INIT))
                .unwrap()
        })
    });
    #[cfg(target_os = "linux")]
    lazy_floors(&mut lazy);
    lazy.bench_function("malloc", |b| {
        // SAFETY: malloc and free of a live pointer.
        b.iter(|| unsafe { libc::free(black_box(libc::malloc(INIT))) })
    });
    lazy.bench_function("mmap", |b| {
        b.iter(|| raw::release(black_box(raw::map(-1, INIT, 0)), INIT, -1))
    });
    lazy.finish();

    let mut warm = c.benchmark_group("init_16MiB_warm");
    warm.sample_size(10);
    warm.measurement_time(Duration::from_secs(4));
    warm.bench_function("block", |b| {
        b.iter(|| Block::options().warm(true).open(black_box(INIT)).unwrap())
    });
    warm.bench_function("block_unpinned", |b| {
        b.iter(|| {
            Block::options()
                .warm(true)
                .pinning(Pinning::Off)
                .open(black_box(INIT))
                .unwrap()
        })
    });
    warm.bench_function("malloc_touch", |b| {
        b.iter(|| {
            // SAFETY: a live allocation of INIT bytes, freed once.
            unsafe {
                let p = libc::malloc(INIT).cast::<u8>();
                touch(p, INIT);
                libc::free(black_box(p).cast());
            }
        })
    });
    warm.bench_function("mmap_mlock", |b| {
        b.iter(|| {
            let p = raw::map(-1, INIT, 0);
            // SAFETY: our own mapping.
            raw::check(unsafe { libc::mlock(p.cast(), INIT) });
            raw::release(black_box(p), INIT, -1);
        })
    });
    #[cfg(target_os = "linux")]
    warm_floors(&mut warm);
    warm.finish();
}

#[cfg(target_os = "linux")]
type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// The floors of a lazy open on Linux: the bare calls a pinned Block makes, and a plain memfd.
#[cfg(target_os = "linux")]
fn lazy_floors(lazy: &mut Group<'_>) {
    // The floor: exactly the calls a lazy pinned Block makes, and nothing else.
    lazy.bench_function("syscalls", |b| {
        b.iter(|| {
            let fd = raw::memfd(INIT, true);
            let p = raw::map(fd, INIT, 0);
            // SAFETY: our own mapping.
            raw::check(unsafe { libc::mlock2(p.cast(), INIT, libc::MLOCK_ONFAULT) });
            // SAFETY: as above.
            raw::check(unsafe { libc::munlock(p.cast(), INIT) });
            raw::release(black_box(p), INIT, fd);
        })
    });
    lazy.bench_function("memfd_plain", |b| {
        b.iter(|| {
            let fd = raw::memfd(INIT, false);
            raw::release(black_box(raw::map(fd, INIT, 0)), INIT, fd);
        })
    });
}

/// Every way the Linux kernel offers to populate and lock a sealed memfd: the warm Block is
/// held to the fastest of these.
#[cfg(target_os = "linux")]
fn warm_floors(warm: &mut Group<'_>) {
    type Populate = fn(i32) -> *mut u8;
    let ways: [(&str, Populate); 4] = [
        ("memfd_mlock", |fd| {
            let p = raw::map(fd, INIT, 0);
            // SAFETY: our own mapping.
            raw::check(unsafe { libc::mlock(p.cast(), INIT) });
            p
        }),
        ("memfd_map_populate_locked", |fd| {
            raw::map(fd, INIT, libc::MAP_POPULATE | libc::MAP_LOCKED)
        }),
        ("memfd_onfault_populate_write", |fd| {
            let p = raw::map(fd, INIT, 0);
            // SAFETY: our own mapping.
            raw::check(unsafe { libc::mlock2(p.cast(), INIT, libc::MLOCK_ONFAULT) });
            // SAFETY: as above.
            raw::check(unsafe { libc::madvise(p.cast(), INIT, libc::MADV_POPULATE_WRITE) });
            p
        }),
        ("memfd_fallocate_mlock", |fd| {
            // SAFETY: a memfd we own, INIT bytes long.
            raw::check(unsafe { libc::fallocate(fd, 0, 0, INIT as libc::off_t) });
            let p = raw::map(fd, INIT, 0);
            // SAFETY: our own mapping.
            raw::check(unsafe { libc::mlock(p.cast(), INIT) });
            p
        }),
    ];
    for (name, populate) in ways {
        warm.bench_function(name, |b| {
            b.iter(|| {
                let fd = raw::memfd(INIT, true);
                let p = populate(fd);
                raw::release(black_box(p), INIT, fd);
            })
        });
    }
}

/// 64 MiB of memory held for the bandwidth groups, touched before measuring.
enum Memory {
    Block(Block),
    Malloc(*mut u8),
    Vec(Vec<u64>),
    Boxed(Box<[u64]>),
    Mmap(*mut u8),
}

impl Memory {
    fn ptr(&mut self) -> *mut u64 {
        match self {
            Memory::Block(block) => block.as_ptr().cast(),
            Memory::Malloc(p) | Memory::Mmap(p) => p.cast(),
            Memory::Vec(v) => v.as_mut_ptr(),
            Memory::Boxed(b) => b.as_mut_ptr(),
        }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        match self {
            // SAFETY: allocated by malloc below, freed once.
            Memory::Malloc(p) => unsafe { libc::free(p.cast()) },
            Memory::Mmap(p) => raw::release(*p, BANDWIDTH, -1),
            _ => {}
        }
    }
}

fn contenders() -> Vec<(&'static str, Memory)> {
    let words = BANDWIDTH / 8;
    // SAFETY: malloc of a valid size; checked for null.
    let malloc = unsafe { libc::malloc(BANDWIDTH) }.cast::<u8>();
    assert!(!malloc.is_null());
    let mlocked = raw::map(-1, BANDWIDTH, 0);
    // SAFETY: our own mapping.
    raw::check(unsafe { libc::mlock(mlocked.cast(), BANDWIDTH) });
    let mut all = vec![
        (
            "block",
            Memory::Block(Block::options().warm(true).open(BANDWIDTH).unwrap()),
        ),
        ("malloc", Memory::Malloc(malloc)),
        ("vec", Memory::Vec(vec![0u64; words])),
        ("box", Memory::Boxed(vec![0u64; words].into_boxed_slice())),
        ("mmap", Memory::Mmap(raw::map(-1, BANDWIDTH, 0))),
        ("mmap_mlock", Memory::Mmap(mlocked)),
    ];
    for (_, memory) in &mut all {
        touch(memory.ptr().cast(), BANDWIDTH);
    }
    all
}

fn bandwidth(c: &mut Criterion) {
    let words = BANDWIDTH / 8;
    let mut memories = contenders();
    for (group_name, write) in [("write_64MiB", true), ("read_64MiB", false)] {
        let mut group = c.benchmark_group(group_name);
        group.sample_size(20);
        group.throughput(Throughput::Bytes(BANDWIDTH as u64));
        for (name, memory) in &mut memories {
            let p = memory.ptr();
            group.bench_function(BenchmarkId::from_parameter(*name), |b| {
                if write {
                    b.iter(|| {
                        for i in 0..words {
                            // SAFETY: i < words; the memory is live and only used here.
                            unsafe { ptr::write_volatile(p.add(i), i as u64) };
                        }
                    })
                } else {
                    b.iter(|| {
                        let mut sum = 0u64;
                        for i in 0..words {
                            // SAFETY: as above.
                            sum = sum.wrapping_add(unsafe { ptr::read_volatile(p.add(i)) });
                        }
                        black_box(sum)
                    })
                }
            });
        }
        group.finish();
    }
}

/// The warm opens of 1 GiB: see the module docs.
#[cfg(target_os = "linux")]
mod pools {
    use super::{Group, raw};
    use criterion::Criterion;
    use std::hint::black_box;
    use std::time::Duration;
    use unimem::{Block, HugePages, Pinning};

    const LEN: usize = 1 << 30;
    const HUGE: usize = 2 << 20;
    const SHMEM_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";
    const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

    /// The kinds of page measured, with the knobs each needs: (shmem_enabled, nr_hugepages),
    /// `None` for "leave as it is".
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Base,
        Transparent,
        HugeTlb,
    }

    impl Kind {
        fn name(self) -> &'static str {
            match self {
                Kind::Base => "4KiB",
                Kind::Transparent => "thp",
                Kind::HugeTlb => "hugetlb",
            }
        }

        fn knobs(self) -> (Option<&'static str>, Option<u64>) {
            match self {
                Kind::Base => (None, None),
                Kind::Transparent => (Some("advise"), Some(0)),
                Kind::HugeTlb => (None, Some((LEN / HUGE) as u64 + 8)),
            }
        }
    }

    fn chosen(path: &str) -> Option<String> {
        let text = std::fs::read_to_string(path).ok()?;
        match (text.find('['), text.find(']')) {
            (Some(start), Some(end)) => Some(text[start + 1..end].to_owned()),
            _ => Some(text.trim().to_owned()),
        }
    }

    /// Sets the knobs `kind` needs, and puts back what it changed when dropped.
    struct Knobs {
        restore: Vec<(&'static str, String)>,
    }

    impl Knobs {
        fn set(kind: Kind) -> Knobs {
            let mut knobs = Knobs {
                restore: Vec::new(),
            };
            let (shmem, pool) = kind.knobs();
            let wanted = [
                (SHMEM_ENABLED, shmem.map(str::to_owned)),
                (NR_HUGEPAGES, pool.map(|pages| pages.to_string())),
            ];
            for (path, value) in wanted {
                let (Some(value), Some(old)) = (value, chosen(path)) else {
                    continue;
                };
                if old != value && std::fs::write(path, &value).is_ok() {
                    knobs.restore.push((path, old));
                }
            }
            knobs
        }
    }

    impl Drop for Knobs {
        fn drop(&mut self) {
            for (path, old) in self.restore.drain(..).rev() {
                let _ = std::fs::write(path, old);
            }
        }
    }

    /// A warm Block of `kind` on `threads` threads.
    fn open(kind: Kind, threads: usize) -> Block {
        let huge = match kind {
            Kind::Base => HugePages::Off,
            Kind::Transparent | Kind::HugeTlb => HugePages::BestEffort,
        };
        Block::options()
            .pinning(Pinning::Off)
            .huge_pages(huge)
            .warm_threads(threads)
            .warm(true)
            .open(LEN)
            .unwrap()
    }

    /// Whether a warm block of `kind` gets that kind of page here, or why not.
    fn available(kind: Kind) -> Result<(), String> {
        let block = open(kind, 1);
        let page = block.page_size();
        let hugetlb =
            std::fs::read_to_string("/proc/self/smaps")
                .ok()
                .and_then(|smaps| {
                    let header = format!("{:08x}-", block.as_ptr() as usize);
                    let entry = smaps.split_once(&header)?.1;
                    Some(entry.lines().take(30).any(|line| {
                        line.starts_with("KernelPageSize:") && line.contains(" 2048 kB")
                    }))
                })
                .unwrap_or(false);
        let got = match (page, hugetlb) {
            (HUGE, true) => Kind::HugeTlb,
            (HUGE, false) => Kind::Transparent,
            _ => Kind::Base,
        };
        if got == kind {
            Ok(())
        } else {
            Err(format!(
                "a warm {} block got {page}-byte pages (shmem_enabled={:?}, nr_hugepages={:?}): \
                 run as root so that the benchmark can set them",
                kind.name(),
                chosen(SHMEM_ENABLED),
                chosen(NR_HUGEPAGES)
            ))
        }
    }

    /// The kernel's populate of the same kind of memfd, split over `threads` threads as the
    /// Block splits it: the floor.
    fn populate(kind: Kind, threads: usize) {
        let flags = libc::MFD_CLOEXEC
            | libc::MFD_ALLOW_SEALING
            | if kind == Kind::HugeTlb {
                libc::MFD_HUGETLB
            } else {
                0
            };
        // SAFETY: a valid name and flags.
        let fd = unsafe { libc::memfd_create(c"bench".as_ptr(), flags) };
        assert!(fd >= 0);
        // SAFETY: a descriptor we own.
        raw::check(unsafe { libc::ftruncate(fd, LEN as libc::off_t) });
        let p = raw::map(fd, LEN, 0);
        if kind == Kind::Transparent {
            // SAFETY: our own mapping.
            raw::check(unsafe { libc::madvise(p.cast(), LEN, libc::MADV_HUGEPAGE) });
        }
        let share = LEN / threads / HUGE * HUGE;
        let address = p as usize;
        std::thread::scope(|scope| {
            for i in 0..threads {
                let end = if i + 1 == threads {
                    LEN
                } else {
                    (i + 1) * share
                };
                let start = i * share;
                scope.spawn(move || {
                    // SAFETY: a part of our own mapping; populating changes no byte.
                    raw::check(unsafe {
                        libc::madvise(
                            (address + start) as *mut libc::c_void,
                            end - start,
                            libc::MADV_POPULATE_WRITE,
                        )
                    });
                });
            }
        });
        raw::release(black_box(p), LEN, fd);
    }

    pub fn warm(c: &mut Criterion) {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut group: Group<'_> = c.benchmark_group("warm_1GiB");
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(3));
        for kind in [Kind::Base, Kind::Transparent, Kind::HugeTlb] {
            let _knobs = Knobs::set(kind);
            if let Err(why) = available(kind) {
                eprintln!("warm_1GiB: skipping the {} rows: {why}", kind.name());
                continue;
            }
            for (threads, label) in [(1, "1_thread"), (cpus, "threads")] {
                group.bench_function(format!("block_{}_{label}", kind.name()), |b| {
                    b.iter(|| open(kind, threads))
                });
                group.bench_function(format!("populate_{}_{label}", kind.name()), |b| {
                    b.iter(|| populate(kind, threads))
                });
            }
        }
        group.finish();
    }
}

#[cfg(target_os = "linux")]
fn warm_1gib(c: &mut Criterion) {
    pools::warm(c);
}

#[cfg(not(target_os = "linux"))]
fn warm_1gib(_: &mut Criterion) {}

criterion_group! {
    name = benches;
    config = support::config();
    targets = init, bandwidth, warm_1gib
}
criterion_main!(benches);
