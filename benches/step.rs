//! Throughput of one ADOPT step per kernel and size, beside a same-bytes
//! roofline (read p, g, m, v; write p, m, v; trivial arithmetic).
//!
//! `cargo bench --bench step`; then `python3 benches/report.py` turns
//! criterion's estimates into the table and chart of BENCHMARKS.md.
//! `ADOPT_BENCH_SIZES=4096,65536` limits the sizes.

use adopt::{Hyper, Kernel, StateView, StepOptions, adopt_step_ext, reference};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Duration;

const SIZES: [usize; 5] = [1 << 12, 1 << 16, 1 << 20, 1 << 24, 1 << 26];

struct Buffers {
    p: Vec<f32>,
    g: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    step: u64,
}

impl Buffers {
    fn new(n: usize) -> Buffers {
        let wave = |i: usize, s: f32| (i as f32 * s).sin() * 0.5;
        let mut b = Buffers {
            p: (0..n).map(|i| wave(i, 0.37)).collect(),
            g: (0..n).map(|i| wave(i, 0.91)).collect(),
            m: vec![0.0; n],
            v: vec![0.0; n],
            step: 0,
        };
        // Past the first step, which only initialises v.
        b.step_with(Kernel::Portable);
        b
    }

    fn step_with(&mut self, kernel: Kernel) {
        let mut state = StateView::new(&mut self.m, &mut self.v, &mut self.step);
        let options = StepOptions {
            kernel: Some(kernel),
            ..StepOptions::default()
        };
        adopt_step_ext(
            &mut self.p,
            &self.g,
            &mut state,
            &Hyper::default(),
            &options,
        )
        .unwrap();
    }

    fn step_reference(&mut self) {
        let mut state = StateView::new(&mut self.m, &mut self.v, &mut self.step);
        reference::adopt_step_view(&mut self.p, &self.g, &mut state, &Hyper::default()).unwrap();
    }
}

/// The same bytes as a step with next to no arithmetic.
fn roofline(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    for (((p, g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        // p and m trade places (±g), v gains and loses g: values stay
        // bounded over any number of calls.
        let (pv, mv, vv) = (*p, *m, *v);
        *p = mv + g;
        *m = pv - g;
        *v = (vv + g) - g;
    }
}

fn roofline_parallel(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    let chunk = p
        .len()
        .div_ceil(4 * rayon::current_num_threads())
        .max(1 << 14);
    p.par_chunks_mut(chunk)
        .zip(g.par_chunks(chunk))
        .zip(m.par_chunks_mut(chunk))
        .zip(v.par_chunks_mut(chunk))
        .for_each(|(((p, g), m), v)| roofline(p, g, m, v));
}

fn sizes() -> Vec<usize> {
    match std::env::var("ADOPT_BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|s| s.trim().parse().expect("ADOPT_BENCH_SIZES: integers"))
            .collect(),
        Err(_) => SIZES.to_vec(),
    }
}

fn bench(c: &mut Criterion) {
    let serial = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let best = Kernel::best();
    eprintln!(
        "dispatch picks {} ({} rayon threads in the global pool)",
        best.name(),
        rayon::current_num_threads()
    );
    for n in sizes() {
        let mut group = c.benchmark_group(format!("step/{n}"));
        group.throughput(Throughput::Elements(n as u64));
        if n >= 1 << 20 {
            group.sample_size(10);
            group.warm_up_time(Duration::from_millis(500));
            group.measurement_time(Duration::from_secs(if n >= 1 << 24 { 4 } else { 2 }));
        } else {
            group.measurement_time(Duration::from_secs(2));
        }
        let mut b = Buffers::new(n);
        group.bench_function(BenchmarkId::from_parameter("reference"), |bench| {
            bench.iter(|| b.step_reference())
        });
        group.bench_function(BenchmarkId::from_parameter("portable"), |bench| {
            serial.install(|| bench.iter(|| b.step_with(Kernel::Portable)))
        });
        group.bench_function(BenchmarkId::from_parameter("dispatched"), |bench| {
            serial.install(|| bench.iter(|| b.step_with(best)))
        });
        // Every other kernel this CPU runs (e.g. AVX2+FMA on an AVX-512 CPU).
        for kernel in Kernel::ALL
            .into_iter()
            .filter(|&k| k.is_available() && k != best && k != Kernel::Portable)
        {
            group.bench_function(BenchmarkId::from_parameter(kernel.name()), |bench| {
                serial.install(|| bench.iter(|| b.step_with(kernel)))
            });
        }
        group.bench_function(BenchmarkId::from_parameter("dispatched+rayon"), |bench| {
            bench.iter(|| b.step_with(best))
        });
        group.bench_function(BenchmarkId::from_parameter("roofline"), |bench| {
            bench.iter(|| roofline(&mut b.p, black_box(&b.g), &mut b.m, &mut b.v))
        });
        group.bench_function(BenchmarkId::from_parameter("roofline+rayon"), |bench| {
            bench.iter(|| roofline_parallel(&mut b.p, black_box(&b.g), &mut b.m, &mut b.v))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
