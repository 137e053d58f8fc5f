//! Paired ratios on a noisy machine: the dispatched step against the
//! same-bytes roofline, alternating one call of each, so both see the same
//! machine state; reports the median of the per-pair ratios.
//!
//! `cargo bench --bench roofline_ratio` (sizes from `ADOPT_BENCH_SIZES`,
//! default 1M, 16M and 64M lanes; pairs from `ADOPT_PAIRS`, default 41).

use adopt::{Hyper, Kernel, StateView, StepOptions, adopt_step_ext};
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Instant;

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

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .map(|s| {
            s.split(',')
                .map(|x| x.trim().parse().expect("integers"))
                .collect()
        })
        .unwrap_or_else(|_| default.to_vec())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` compatibility
    }
    let kernel = Kernel::best();
    let pairs = env_list("ADOPT_PAIRS", &[41])[0];
    let serial = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    println!(
        "kernel {}, {} threads; median over {pairs} alternating pairs",
        kernel.name(),
        rayon::current_num_threads()
    );
    println!(
        "{:>10} {:>8} {:>12} {:>12} {:>8}",
        "lanes", "mode", "step Gel/s", "roof Gel/s", "ratio"
    );
    for n in env_list("ADOPT_BENCH_SIZES", &[1 << 20, 1 << 24, 1 << 26]) {
        let mut p: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let g: Vec<f32> = (0..n).map(|i| (i as f32 * 0.91).sin()).collect();
        let (mut m, mut v, mut step) = (vec![0.0_f32; n], vec![0.0_f32; n], 0_u64);
        let hyper = Hyper::default();
        for parallel in [false, true] {
            let mut run = || {
                let (mut ratios, mut steps, mut roofs) = (Vec::new(), Vec::new(), Vec::new());
                for i in 0..pairs + 2 {
                    let t = Instant::now();
                    let mut state = StateView::new(&mut m, &mut v, &mut step);
                    let options = StepOptions {
                        kernel: Some(kernel),
                        ..StepOptions::default()
                    };
                    adopt_step_ext(&mut p, &g, &mut state, &hyper, &options).unwrap();
                    let step_time = t.elapsed().as_secs_f64();
                    let t = Instant::now();
                    if parallel {
                        roofline_parallel(&mut p, black_box(&g), &mut m, &mut v);
                    } else {
                        roofline(&mut p, black_box(&g), &mut m, &mut v);
                    }
                    let roof_time = t.elapsed().as_secs_f64();
                    if i >= 2 {
                        ratios.push(roof_time / step_time);
                        steps.push(n as f64 / step_time / 1e9);
                        roofs.push(n as f64 / roof_time / 1e9);
                    }
                }
                (median(steps), median(roofs), median(ratios))
            };
            let (s, r, ratio) = if parallel { run() } else { serial.install(run) };
            let mode = if parallel { "rayon" } else { "serial" };
            println!("{n:>10} {mode:>8} {s:>12.3} {r:>12.3} {ratio:>8.2}");
        }
    }
}
