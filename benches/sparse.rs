//! A row-sparse step of an embedding table against a dense step of the same
//! table: 1M rows × 64 lanes, 1% of the rows (10,000 lookups, drawn at
//! random with replacement, as a batch of lookups would be) touched per
//! step.
//!
//! `cargo bench --bench sparse`: criterion medians for the sparse step (in
//! the global rayon pool, on one thread, and with the rows pre-sorted and
//! unique so nothing needs coalescing), its scattered roofline and the
//! dense step, then a paired measurement (the three alternating) that prints
//! the ratios and the bytes moved per touched lane. `ADOPT_PAIRS` sets the
//! rounds (default 15).
//!
//! The **scattered roofline** moves the bytes a sparse step must move (for
//! each distinct touched row: read p, g, m, v and write p, m, v, and its
//! step count) with trivial arithmetic, in the same order, split over the
//! same pool, prefetching rows ahead as the step does. It is what this
//! machine's memory system allows for the access pattern, so
//! `dense step / scattered roofline` bounds the ratio any sparse kernel can
//! reach here with this layout.

use adopt::{Hyper, SparseState, State, adopt_step, adopt_step_rows};
use criterion::{BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::{Duration, Instant};

const ROWS: usize = 1 << 20;
const DIM: usize = 64;
const LOOKUPS: usize = 10_000;
const BATCHES: usize = 16;

fn splitmix(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Table {
    table: Vec<f32>,
    sparse: SparseState,
    dense: State,
    dense_grads: Vec<f32>,
    /// Batches of random rows (with duplicates), and the same rows sorted
    /// and deduplicated.
    batches: Vec<Vec<u32>>,
    sorted: Vec<Vec<u32>>,
    grads: Vec<f32>,
    next: usize,
    /// The scattered roofline's own table, moments and step counts, the
    /// same size as the step's, and each batch's distinct rows in order of
    /// first appearance (what the step's coalescing leaves).
    roof: Roof,
    distinct: Vec<Vec<u32>>,
}

struct Roof {
    p: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    steps: Vec<u64>,
}

impl Table {
    fn new() -> Table {
        let n = ROWS * DIM;
        let mut seed = 1;
        let table = (0..n).map(|i| (i as f32 * 0.37).sin() * 0.1).collect();
        // Nonzero, so every page is written here: zeroed allocations would
        // be mapped lazily, and the first steps would time page faults.
        let (m, v) = (|| vec![1e-3_f32; n], || vec![0.01_f32; n]);
        // Every row past its first step, so every touched row runs the full
        // update (a first step only initialises v).
        let sparse = SparseState::from_parts(m(), v(), vec![1; ROWS], DIM).unwrap();
        let dense = State::from_parts(m(), v(), 1);
        let batches: Vec<Vec<u32>> = (0..BATCHES)
            .map(|_| {
                (0..LOOKUPS)
                    .map(|_| (splitmix(&mut seed) % ROWS as u64) as u32)
                    .collect()
            })
            .collect();
        let distinct = batches
            .iter()
            .map(|b| {
                let mut seen = vec![false; ROWS];
                b.iter()
                    .copied()
                    .filter(|&r| !std::mem::replace(&mut seen[r as usize], true))
                    .collect()
            })
            .collect();
        let sorted = batches
            .iter()
            .map(|b| {
                let mut s = b.clone();
                s.sort_unstable();
                s.dedup();
                s
            })
            .collect();
        Table {
            table,
            sparse,
            dense,
            dense_grads: (0..n).map(|i| (i as f32 * 0.91).sin() * 0.01).collect(),
            batches,
            sorted,
            grads: (0..LOOKUPS * DIM)
                .map(|i| (i as f32 * 0.53).sin() * 0.01)
                .collect(),
            next: 0,
            roof: Roof {
                p: (0..n).map(|i| (i as f32 * 0.37).sin() * 0.1).collect(),
                m: m(),
                v: v(),
                steps: vec![1; ROWS],
            },
            distinct,
        }
    }

    /// The scattered roofline (see the module documentation) for the next
    /// batch's distinct rows.
    fn roofline(&mut self) {
        let b = self.next % BATCHES;
        self.next += 1;
        let rows = &self.distinct[b][..];
        let grads = &self.grads[..rows.len() * DIM];
        let roof = &mut self.roof;
        let ptrs = RoofPtrs {
            p: roof.p.as_mut_ptr(),
            m: roof.m.as_mut_ptr(),
            v: roof.v.as_mut_ptr(),
            steps: roof.steps.as_mut_ptr(),
        };
        let run = |(rows, grads): (&[u32], &[f32])| {
            for (i, &row) in rows.iter().enumerate() {
                if let Some(&ahead) = rows.get(i + PREFETCH_AHEAD) {
                    ptrs.prefetch(ahead as usize);
                }
                let g = &grads[i * DIM..][..DIM];
                // SAFETY: rows are distinct and below ROWS; each chunk is
                // stepped by one thread.
                let (p, m, v, step) = unsafe { ptrs.row(row as usize) };
                for l in 0..DIM {
                    m[l] = m[l] * 0.9 + g[l] * 0.1;
                    v[l] = v[l] * 0.999 + g[l] * g[l];
                    p[l] -= 1e-3 * m[l];
                }
                *step += 1;
            }
        };
        // The step's split: a few chunks per thread, each of at least 16K
        // lanes, when the touched lanes reach the parallel threshold.
        let lanes = rows.len() * DIM;
        let threads = rayon::current_num_threads();
        if lanes >= adopt::PARALLEL_THRESHOLD && threads > 1 {
            use rayon::prelude::*;
            let chunk = lanes.div_ceil(4 * threads).max(1 << 14).div_ceil(DIM);
            rows.par_chunks(chunk)
                .zip(grads.par_chunks(chunk * DIM))
                .for_each(run);
        } else {
            run((rows, grads));
        }
    }

    fn sparse_step(&mut self, sorted: bool) {
        let b = self.next % BATCHES;
        self.next += 1;
        let rows = if sorted {
            &self.sorted[b]
        } else {
            &self.batches[b]
        };
        let grads = &self.grads[..rows.len() * DIM];
        adopt_step_rows(
            &mut self.table,
            black_box(rows),
            grads,
            &mut self.sparse,
            &Hyper::default(),
        )
        .unwrap();
    }

    fn dense_step(&mut self) {
        adopt_step(
            &mut self.table,
            black_box(&self.dense_grads),
            &mut self.dense,
            &Hyper::default(),
        )
        .unwrap();
    }
}

/// Rows ahead the roofline prefetches, as the step does.
const PREFETCH_AHEAD: usize = 4;

#[derive(Clone, Copy)]
struct RoofPtrs {
    p: *mut f32,
    m: *mut f32,
    v: *mut f32,
    steps: *mut u64,
}

// SAFETY: each thread dereferences only rows no other thread has.
unsafe impl Sync for RoofPtrs {}
unsafe impl Send for RoofPtrs {}

impl RoofPtrs {
    fn prefetch(&self, row: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            for base in [self.p, self.m, self.v] {
                let at = base.wrapping_add(row * DIM);
                for lane in (0..DIM).step_by(16).chain([DIM - 1]) {
                    // SAFETY: a prefetch accesses no memory.
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(lane).cast()) };
                }
            }
            // SAFETY: as above.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(self.steps.wrapping_add(row).cast()) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = row;
    }

    /// # Safety
    /// `row < ROWS`, and no other reference to the row exists.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, row: usize) -> (&mut [f32], &mut [f32], &mut [f32], &mut u64) {
        // SAFETY: guaranteed by the caller.
        unsafe {
            (
                std::slice::from_raw_parts_mut(self.p.add(row * DIM), DIM),
                std::slice::from_raw_parts_mut(self.m.add(row * DIM), DIM),
                std::slice::from_raw_parts_mut(self.v.add(row * DIM), DIM),
                &mut *self.steps.add(row),
            )
        }
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` compatibility
    }
    let serial = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let mut t = Table::new();
    eprintln!(
        "{ROWS} rows × {DIM} lanes, {LOOKUPS} lookups per step; kernel {}, {} rayon threads",
        adopt::Kernel::active().name(),
        rayon::current_num_threads()
    );

    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500));
    let mut group = c.benchmark_group("sparse/1Mx64");
    group.throughput(Throughput::Elements((LOOKUPS * DIM) as u64));
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(2));
    group.bench_function(BenchmarkId::from_parameter("rows_1pct"), |b| {
        b.iter(|| t.sparse_step(false))
    });
    group.bench_function(BenchmarkId::from_parameter("rows_1pct_serial"), |b| {
        serial.install(|| b.iter(|| t.sparse_step(false)))
    });
    group.bench_function(
        BenchmarkId::from_parameter("rows_1pct_sorted_unique"),
        |b| b.iter(|| t.sparse_step(true)),
    );
    group.bench_function(BenchmarkId::from_parameter("scattered_roofline"), |b| {
        b.iter(|| t.roofline())
    });
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements((ROWS * DIM) as u64));
    group.bench_function(BenchmarkId::from_parameter("dense"), |b| {
        b.iter(|| t.dense_step())
    });
    group.finish();
    c.final_summary();

    // Paired: one sparse step, one scattered roofline and one dense step,
    // alternating, so host noise hits all three alike.
    let rounds: usize = std::env::var("ADOPT_PAIRS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    let (mut sparse, mut roof, mut dense) = (Vec::new(), Vec::new(), Vec::new());
    let (mut dense_sparse, mut dense_roof, mut sparse_roof) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let s = time(&mut || t.sparse_step(false));
        let r = time(&mut || t.roofline());
        let d = time(&mut || t.dense_step());
        sparse.push(s);
        roof.push(r);
        dense.push(d);
        dense_sparse.push(d / s);
        dense_roof.push(d / r);
        sparse_roof.push(s / r);
    }
    let (s, r, d) = (median(sparse), median(roof), median(dense));
    println!(
        "paired medians over {rounds} rounds: sparse {:.3} ms, scattered roofline {:.3} ms, dense {:.3} ms",
        s * 1e3,
        r * 1e3,
        d * 1e3
    );
    println!(
        "medians of the per-round ratios: dense/sparse {:.1}x, dense/roofline {:.1}x (the ceiling), sparse/roofline {:.2}",
        median(dense_sparse),
        median(dense_roof),
        median(sparse_roof)
    );
    let touched = LOOKUPS * DIM;
    // Per touched lane: read p, g, m, v and write p, m, v (7 × 4 bytes);
    // per touched row: its step count read and written (16 bytes) and its
    // index read (4 bytes).
    let bytes_per_lane = 28.0 + 20.0 / DIM as f64;
    println!(
        "sparse: {bytes_per_lane:.2} bytes per touched lane, {:.1} GB/s; dense: 28 bytes per lane, {:.1} GB/s",
        touched as f64 * bytes_per_lane / s / 1e9,
        (ROWS * DIM) as f64 * 28.0 / d / 1e9
    );
}
