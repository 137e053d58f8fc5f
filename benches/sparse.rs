//! A row-sparse step of an embedding table against a dense step of the same
//! table: 1M rows × 64 lanes, 1% of the rows (10,000 lookups, drawn at
//! random with replacement, as a batch of lookups would be) touched per
//! step.
//!
//! `cargo bench --bench sparse`: criterion medians for the sparse step (in
//! the global rayon pool, on one thread, and with the rows pre-sorted and
//! unique so nothing needs coalescing) and the dense step, then a paired
//! measurement (sparse and dense calls alternating) that prints the ratio
//! and the bytes moved per touched lane. `ADOPT_PAIRS` sets the pairs
//! (default 15).

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
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements((ROWS * DIM) as u64));
    group.bench_function(BenchmarkId::from_parameter("dense"), |b| {
        b.iter(|| t.dense_step())
    });
    group.finish();
    c.final_summary();

    // Paired: one sparse step, one dense step, alternating.
    let pairs: usize = std::env::var("ADOPT_PAIRS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let (mut sparse, mut dense, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..pairs {
        let s = Instant::now();
        t.sparse_step(false);
        let s = s.elapsed().as_secs_f64();
        let d = Instant::now();
        t.dense_step();
        let d = d.elapsed().as_secs_f64();
        sparse.push(s);
        dense.push(d);
        ratios.push(d / s);
    }
    let (s, d) = (median(sparse), median(dense));
    let touched = LOOKUPS * DIM;
    // Per touched lane: read p, g, m, v and write p, m, v (7 × 4 bytes);
    // per touched row: its step count read and written (16 bytes) and its
    // index read (4 bytes).
    let bytes_per_lane = 28.0 + 20.0 / DIM as f64;
    println!(
        "paired medians over {pairs} pairs: sparse {:.3} ms, dense {:.3} ms, dense/sparse {:.1}x (median of ratios {:.1}x)",
        s * 1e3,
        d * 1e3,
        d / s,
        median(ratios)
    );
    println!(
        "sparse: {bytes_per_lane:.2} bytes per touched lane, {:.1} GB/s; dense: 28 bytes per lane, {:.1} GB/s",
        touched as f64 * bytes_per_lane / s / 1e9,
        (ROWS * DIM) as f64 * 28.0 / d / 1e9
    );
}
