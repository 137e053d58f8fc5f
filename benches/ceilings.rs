//! The machine's ceilings and the step against them, measured in one run.
//!
//! - **Compute roof** (in cache): a loop doing only what exactness cannot
//!   skip, `g / max(sqrt(v), eps)` per lane, correctly rounded, in the
//!   widest vectors this CPU has (AVX-512F, AVX2; SSE2 beside the portable
//!   kernel, which a default build compiles for SSE2).
//! - **Bandwidth roofs** (out of cache): a STREAM-style triad
//!   (`a = b + s·c`), and a loop moving an ADOPT step's bytes (read p, g,
//!   m, v; write p, m, v) with trivial arithmetic, each split two ways:
//!   contiguous halves per thread (as `at::parallel_for` splits) and
//!   rayon's stealing of 32K-lane chunks.
//! - The step itself: every kernel, the default hyperparameters and each
//!   variant, in cache on one thread; 1M and 16M lanes on the pool.
//!
//! Each table row interleaves its targets sample by sample (so a noisy host
//! disturbs them alike) and reports medians and ratios.
//!
//! `cargo bench --features half --bench ceilings` (`ADOPT_SAMPLES`, default 31;
//! `ADOPT_PART=compute|bandwidth|half` runs one part;
//! `ADOPT_BENCH_SIZES` the in-cache sizes, `ADOPT_POOL_SIZES` the pool's;
//! `ADOPT_WARM`, default 6, the untimed calls before each pool sample).
//!
//! On the pool at 1M lanes (16 MiB per target, in a 32 MiB L3) one
//! untimed call is not enough: on an AMD EPYC Zen 3, whose L3 holds the
//! lines its L2s evict, a target that followed another target's buffers
//! ran at about half the speed of one that followed a call on its own
//! buffers, after one warm-up call, and at the same speed after six.

use adopt::{Caution, Hyper, Kernel, Scaling, StateView, StepOptions, WeightDecay, adopt_step_ext};
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Instant;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
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

/// Times `targets` interleaved: each sample runs every target `warm`
/// times untimed, then `reps` times timed, in turn; returns each target's
/// median seconds per call.
fn interleave(
    samples: usize,
    reps: usize,
    warm: usize,
    targets: &mut [&mut dyn FnMut()],
) -> Vec<f64> {
    let mut times = vec![Vec::with_capacity(samples); targets.len()];
    let n = targets.len();
    for s in 0..samples + 1 {
        // Each sample starts at another target, so that no target always
        // follows the same one.
        for t in (0..n).map(|i| (i + s) % n) {
            let f = &mut targets[t];
            // Untimed calls first: each target's buffers come back into
            // cache after the other targets evicted them.
            for _ in 0..warm {
                f();
            }
            let start = Instant::now();
            for _ in 0..reps {
                f();
            }
            if s > 0 {
                times[t].push(start.elapsed().as_secs_f64() / reps as f64);
            }
        }
    }
    times.into_iter().map(median).collect()
}

/// Calls per sample so that one sample of one target takes about 0.3 ms.
fn reps_for(lanes: usize) -> usize {
    (300_000 / lanes.max(1)).clamp(1, 1000)
}

mod roof {
    /// `out = g / max(sqrt(v), eps)`, exact, with 8-lane AVX vectors.
    ///
    /// # Safety
    /// The CPU must support AVX.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2(g: &[f32], v: &[f32], out: &mut [f32], eps: f32) {
        use core::arch::x86_64::*;
        let e = _mm256_set1_ps(eps);
        for ((g, v), o) in g
            .chunks_exact(8)
            .zip(v.chunks_exact(8))
            .zip(out.chunks_exact_mut(8))
        {
            // SAFETY: 8 lanes each; AVX by the caller.
            unsafe {
                let d = _mm256_max_ps(_mm256_sqrt_ps(_mm256_loadu_ps(v.as_ptr())), e);
                let q = _mm256_div_ps(_mm256_loadu_ps(g.as_ptr()), d);
                _mm256_storeu_ps(o.as_mut_ptr(), q);
            }
        }
    }

    /// The same with 16-lane AVX-512 vectors.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512(g: &[f32], v: &[f32], out: &mut [f32], eps: f32) {
        use core::arch::x86_64::*;
        let e = _mm512_set1_ps(eps);
        for ((g, v), o) in g
            .chunks_exact(16)
            .zip(v.chunks_exact(16))
            .zip(out.chunks_exact_mut(16))
        {
            // SAFETY: 16 lanes each; AVX-512F by the caller.
            unsafe {
                let d = _mm512_max_ps(_mm512_sqrt_ps(_mm512_loadu_ps(v.as_ptr())), e);
                let q = _mm512_div_ps(_mm512_loadu_ps(g.as_ptr()), d);
                _mm512_storeu_ps(o.as_mut_ptr(), q);
            }
        }
    }

    /// The floor under the portable kernel of a default x86-64 build, which
    /// has no fused multiply-add: the sqrt and divide, then the default
    /// step's three fmas as the portable kernel computes them, per lane
    /// (`libm::fmaf`), and nothing else.
    pub fn portable_fma(g: &[f32], v: &[f32], out: &mut [f32], eps: f32) {
        for ((g, v), o) in g.iter().zip(v).zip(out.iter_mut()) {
            let q = g / v.sqrt().max(eps);
            let m = libm::fmaf(0.1, q - *o, *o);
            let p = libm::fmaf(-1e-3, m, q);
            *o = libm::fmaf(1e-4 * g, *g, p);
        }
    }

    /// The same as the build's baseline compiles it (SSE2 on x86-64): the
    /// roof of the portable kernel.
    pub fn baseline(g: &[f32], v: &[f32], out: &mut [f32], eps: f32) {
        for ((g, v), o) in g.iter().zip(v).zip(out.iter_mut()) {
            *o = g / v.sqrt().max(eps);
        }
    }
}

/// A step's buffers, past the first step.
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
        Buffers {
            p: (0..n).map(|i| wave(i, 0.37)).collect(),
            g: (0..n).map(|i| wave(i, 0.91)).collect(),
            m: (0..n).map(|i| wave(i, 0.13) * 0.1).collect(),
            v: (0..n).map(|i| wave(i, 0.71).abs() + 0.01).collect(),
            step: 1,
        }
    }

    fn step(&mut self, kernel: Kernel, hyper: &Hyper, scaling: Scaling) {
        let options = StepOptions {
            kernel: Some(kernel),
            scaling,
            caution_mask: None,
        };
        let mut state = StateView::new(&mut self.m, &mut self.v, &mut self.step);
        adopt_step_ext(&mut self.p, &self.g, &mut state, hyper, &options).unwrap();
        // Keep the clip schedule and constants of an early step.
        self.step = 1;
    }
}

/// The variants the in-cache table measures.
fn variants() -> Vec<(&'static str, Hyper, Scaling)> {
    let d = Hyper::default();
    let none = Scaling::default();
    let decoupled = WeightDecay::decoupled(0.01);
    vec![
        ("default", d, none),
        (
            "maximize",
            Hyper {
                maximize: true,
                ..d
            },
            none,
        ),
        (
            "L2",
            Hyper {
                weight_decay: WeightDecay::l2(0.01),
                ..d
            },
            none,
        ),
        (
            "decoupled",
            Hyper {
                weight_decay: decoupled,
                ..d
            },
            none,
        ),
        (
            "nesterov",
            Hyper {
                nesterov: true,
                ..d
            },
            none,
        ),
        (
            "caution timm",
            Hyper {
                caution: Caution::Timm,
                ..d
            },
            none,
        ),
        (
            "caution p-o",
            Hyper {
                caution: Caution::PytorchOptimizer,
                ..d
            },
            none,
        ),
        (
            "scaling",
            d,
            Scaling {
                inv_scale: 1.0 / 1024.0,
                found_inf: false,
            },
        ),
        (
            "1st-step decay",
            Hyper {
                weight_decay: WeightDecay::Decoupled {
                    weight_decay: 0.01,
                    scaling: adopt::DecayScaling::Lr,
                    first_step: true,
                },
                ..d
            },
            none,
        ),
        (
            "beta1 0.3",
            Hyper {
                betas: (0.3, 0.999),
                ..d
            },
            none,
        ),
    ]
}

/// The compute roofs this CPU can run: (name, function).
type RoofFn = fn(&[f32], &[f32], &mut [f32], f32);
fn roofs() -> Vec<(&'static str, RoofFn)> {
    let mut roofs: Vec<(&'static str, RoofFn)> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: detected.
            roofs.push(("avx512", |g, v, o, e| unsafe { roof::avx512(g, v, o, e) }));
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: detected.
            roofs.push(("avx2", |g, v, o, e| unsafe { roof::avx2(g, v, o, e) }));
        }
    }
    roofs.push(("baseline", roof::baseline));
    roofs.push(("portable fmas", roof::portable_fma));
    roofs
}

fn compute(samples: usize) {
    let kernels: Vec<Kernel> = Kernel::ALL
        .into_iter()
        .rev()
        .filter(|k| k.is_available())
        .collect();
    let roofs = roofs();
    println!("## In cache, one thread: G lanes/s (medians of {samples} interleaved samples)");
    let roof_names: Vec<String> = roofs.iter().map(|r| format!("roof {}", r.0)).collect();
    for n in env_list("ADOPT_BENCH_SIZES", &[4096, 65536, 262144]) {
        println!("\n### {n} lanes");
        let reps = reps_for(n);
        for &kernel in &kernels {
            let mut b = Buffers::new(n);
            let vars = variants();
            let mut targets: Vec<Box<dyn FnMut()>> = Vec::new();
            let bp: *mut Buffers = &mut b;
            // The roofs work on the step's own buffers (writing `m`, with
            // values a step can take), so every target finds the same
            // data in the same caches.
            for &(_, f) in &roofs {
                // SAFETY: the closures run one at a time, on this thread.
                targets.push(Box::new(move || unsafe {
                    let b = &mut *bp;
                    f(black_box(&b.g), &b.v, &mut b.m, 1e-6)
                }));
            }
            // The bandwidth roof where the buffers do not fit the core's
            // caches: the step's bytes with trivial arithmetic.
            // SAFETY: as above.
            targets.push(Box::new(move || unsafe {
                let b = &mut *bp;
                same_bytes(&mut b.p, black_box(&b.g), &mut b.m, &mut b.v)
            }));
            for &(_, h, s) in &vars {
                // SAFETY: the closures run one at a time, on this thread.
                targets.push(Box::new(move || unsafe { (*bp).step(kernel, &h, s) }));
            }
            let timm = Hyper {
                caution: Caution::Timm,
                ..Hyper::default()
            };
            // The first pass of a cautious step alone: a read-only count.
            targets.push(Box::new(move || unsafe {
                let b = &mut *bp;
                let options = StepOptions {
                    kernel: Some(kernel),
                    ..StepOptions::default()
                };
                let state = StateView::new(&mut b.m, &mut b.v, &mut b.step);
                black_box(adopt::caution_mask(&b.p, &b.g, &state, &timm, &options).unwrap());
            }));
            let mut refs: Vec<&mut dyn FnMut()> = targets
                .iter_mut()
                .map(|t| &mut **t as &mut dyn FnMut())
                .collect();
            let times = interleave(samples, reps, 1, &mut refs);
            let rate = |t: f64| n as f64 / t / 1e9;
            let roof_rates: Vec<f64> = times[..roofs.len()].iter().map(|&t| rate(t)).collect();
            let header: Vec<String> = roof_names
                .iter()
                .zip(&roof_rates)
                .map(|(name, r)| format!("{name} {r:.3}"))
                .collect();
            let bytes_roof = rate(times[roofs.len()]);
            println!(
                "kernel {}: {}, same-bytes roof {bytes_roof:.3}",
                kernel.name(),
                header.join(", ")
            );
            let compute_roof = roof_rates[..roof_rates.len() - 1]
                .iter()
                .cloned()
                .fold(0.0, f64::max);
            // The lower of the compute and bandwidth ceilings.
            let best_roof = compute_roof.min(bytes_roof);
            println!(
                "{:>16} {:>10} {:>10} {:>12}",
                "variant", "G lanes/s", "/ default", "/ lower roof"
            );
            let first = roofs.len() + 1;
            let default = rate(times[first]);
            for (i, (name, _, _)) in vars.iter().enumerate() {
                let r = rate(times[first + i]);
                println!(
                    "{name:>16} {r:>10.3} {:>10.3} {:>12.3}",
                    r / default,
                    r / best_roof
                );
            }
            let cautious = rate(times[first + vars.len()]);
            println!(
                "{:>16} {cautious:>10.3} {:>10.3} {:>12.3}",
                "caution count",
                cautious / default,
                cautious / best_roof
            );
            if kernel == Kernel::Portable {
                let base = roof_rates[roof_rates.len() - 2];
                let floor = roof_rates[roof_rates.len() - 1];
                println!(
                    "portable default / baseline roof: {:.3}; the fma floor / baseline roof: {:.3}",
                    default / base,
                    floor / base
                );
            }
        }
    }
}

/// `a = b + s·c` over a range.
fn triad(a: &mut [f32], b: &[f32], c: &[f32], s: f32) {
    for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
        *a = b + s * c;
    }
}

/// An ADOPT step's bytes with trivial arithmetic (values stay bounded over
/// any number of calls: p and m trade places, ±g, and v gains and loses g).
fn same_bytes(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    for (((p, g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let (pv, mv, vv) = (*p, *m, *v);
        *p = mv + g;
        *m = pv - g;
        *v = (vv + g) - g;
    }
}

/// How a parallel loop splits its lanes.
#[derive(Clone, Copy)]
enum Split {
    /// One contiguous range per thread (`at::parallel_for`).
    Halves,
    /// rayon's work stealing over chunks of this many lanes.
    Chunks(usize),
}

fn split_of(n: usize, split: Split) -> usize {
    match split {
        Split::Halves => n.div_ceil(rayon::current_num_threads()),
        Split::Chunks(c) => c,
    }
}

fn triad_par(a: &mut [f32], b: &[f32], c: &[f32], split: Split) {
    let chunk = split_of(a.len(), split);
    a.par_chunks_mut(chunk)
        .zip(b.par_chunks(chunk))
        .zip(c.par_chunks(chunk))
        .for_each(|((a, b), c)| triad(a, b, c, 0.5));
}

fn same_bytes_par(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], split: Split) {
    let chunk = split_of(p.len(), split);
    p.par_chunks_mut(chunk)
        .zip(g.par_chunks(chunk))
        .zip(m.par_chunks_mut(chunk))
        .zip(v.par_chunks_mut(chunk))
        .for_each(|(((p, g), m), v)| same_bytes(p, g, m, v));
}

/// A named target moving `f64` bytes per lane.
type Target<'a> = (&'a str, f64, Box<dyn FnMut() + 'a>);

fn bandwidth(samples: usize) {
    let kernel = Kernel::best();
    println!(
        "\n## On the pool ({} threads), kernel {}: G lanes/s, medians of {samples} interleaved samples",
        rayon::current_num_threads(),
        kernel.name()
    );
    println!("(triad: 12 B/lane; same-bytes and the step: 28 B/lane)");
    for n in env_list("ADOPT_POOL_SIZES", &[1 << 20, 1 << 24]) {
        let mut b = Buffers::new(n);
        let (mut ta, tb, tc) = (vec![0.0_f32; n], b.p.clone(), b.g.clone());
        let mut s = Buffers::new(n);
        let hyper = Hyper::default();
        let decoupled = Hyper {
            weight_decay: WeightDecay::decoupled(0.01),
            ..Hyper::default()
        };
        let reps = reps_for(n / 4);
        let bp: *mut Buffers = &mut b;
        let sp: *mut Buffers = &mut s;
        let ap: *mut Vec<f32> = &mut ta;
        // SAFETY (each closure): they run one at a time, on this thread.
        let mut targets: Vec<Target<'_>> = vec![
            (
                "triad, halves",
                12.0,
                Box::new(|| unsafe { triad_par(&mut *ap, &tb, &tc, Split::Halves) }),
            ),
            (
                "triad, 32K chunks",
                12.0,
                Box::new(|| unsafe { triad_par(&mut *ap, &tb, &tc, Split::Chunks(1 << 15)) }),
            ),
            (
                "same bytes, halves",
                28.0,
                Box::new(|| unsafe {
                    let s = &mut *sp;
                    same_bytes_par(&mut s.p, &s.g, &mut s.m, &mut s.v, Split::Halves)
                }),
            ),
            (
                "same bytes, 32K chunks",
                28.0,
                Box::new(|| unsafe {
                    let s = &mut *sp;
                    same_bytes_par(&mut s.p, &s.g, &mut s.m, &mut s.v, Split::Chunks(1 << 15))
                }),
            ),
            (
                "step, default",
                28.0,
                Box::new(|| unsafe { (*bp).step(kernel, &hyper, Scaling::default()) }),
            ),
            (
                "step, decoupled",
                28.0,
                Box::new(|| unsafe { (*bp).step(kernel, &decoupled, Scaling::default()) }),
            ),
        ];
        let mut refs: Vec<&mut dyn FnMut()> = targets
            .iter_mut()
            .map(|t| &mut *t.2 as &mut dyn FnMut())
            .collect();
        let times = interleave(samples, reps, env_usize("ADOPT_WARM", 6), &mut refs);
        println!("\n### {n} lanes");
        println!("{:>24} {:>10} {:>8}", "target", "G lanes/s", "GB/s");
        let mut best_roof_gbs: f64 = 0.0;
        for ((name, bytes, _), t) in targets.iter().zip(&times) {
            let rate = n as f64 / t / 1e9;
            if !name.starts_with("step") {
                best_roof_gbs = best_roof_gbs.max(rate * bytes);
            }
            println!("{name:>24} {rate:>10.3} {:>8.1}", rate * bytes);
        }
        let step = n as f64 / times[4] / 1e9;
        println!(
            "step / best bandwidth roof (bytes): {:.3}",
            step * 28.0 / best_roof_gbs
        );
    }
}

/// Half-precision layouts at 16M lanes on the pool, against the f32 step
/// and against each layout's own byte roofline (the best bandwidth of the
/// triad and same-bytes loops, measured in the same run, divided by the
/// layout's bytes per lane).
#[cfg(feature = "half")]
fn half_precision(samples: usize) {
    use adopt::precision::{Lane, Rounding, SecondMoment, adopt_step_half, adopt_step_master};
    use half::bf16;

    /// A layout's buffers and its step.
    struct Layout<P, G, M, V> {
        p: Vec<P>,
        g: Vec<G>,
        m: Vec<M>,
        v: Vec<V>,
        rounding: Rounding,
    }
    impl<P: Lane, G: Lane, M: Lane, V: SecondMoment> Layout<P, G, M, V> {
        fn new(b: &Buffers, rounding: Rounding) -> Self {
            Layout {
                p: b.p.iter().map(|&x| P::from_f32(x)).collect(),
                g: b.g.iter().map(|&x| G::from_f32(x)).collect(),
                m: b.m.iter().map(|&x| M::from_f32(x)).collect(),
                v: b.v.iter().map(|&x| V::from_f32(x)).collect(),
                rounding,
            }
        }
        fn step(&mut self, hyper: &Hyper) {
            let mut step = 1;
            let (p, g, m, v) = (&mut self.p, &self.g, &mut self.m, &mut self.v);
            adopt_step_half(p, g, m, v, &mut step, hyper, self.rounding).unwrap();
        }
    }

    let n = env_usize("ADOPT_HALF_LANES", 1 << 24);
    let b = Buffers::new(n);
    let hyper = Hyper::default();
    let near = Rounding::NearestEven;
    let mut f32_all = Layout::<f32, f32, f32, f32>::new(&b, near);
    let mut bf16_moments = Layout::<f32, f32, bf16, bf16>::new(&b, near);
    let mut bf16_all = Layout::<bf16, bf16, bf16, bf16>::new(&b, near);
    let mut bf16_sr = Layout::<bf16, bf16, bf16, bf16>::new(&b, Rounding::Stochastic { seed: 7 });
    let mut f16_pg = Layout::<half::f16, half::f16, f32, f32>::new(&b, near);
    let mut master = b.p.clone();
    let mut copy: Vec<bf16> = b.p.iter().map(|&x| bf16::from_f32(x)).collect();
    let grads: Vec<bf16> = b.g.iter().map(|&x| bf16::from_f32(x)).collect();
    let (mut mm, mut mv) = (b.m.clone(), b.v.clone());
    let mut s = Buffers::new(n);
    let (mut ta, tb, tc) = (vec![0.0_f32; n], b.p.clone(), b.g.clone());
    let reps = reps_for(n / 4);
    let mut targets: Vec<Target<'_>> = vec![
        (
            "triad, halves",
            12.0,
            Box::new(|| triad_par(&mut ta, &tb, &tc, Split::Halves)),
        ),
        (
            "same bytes, halves",
            28.0,
            Box::new(|| same_bytes_par(&mut s.p, &s.g, &mut s.m, &mut s.v, Split::Halves)),
        ),
        ("f32 (28 B)", 28.0, Box::new(|| f32_all.step(&hyper))),
        (
            "bf16 m, v (20 B)",
            20.0,
            Box::new(|| bf16_moments.step(&hyper)),
        ),
        ("all bf16 (14 B)", 14.0, Box::new(|| bf16_all.step(&hyper))),
        (
            "all bf16, stochastic (14 B)",
            14.0,
            Box::new(|| bf16_sr.step(&hyper)),
        ),
        ("f16 p, g (22 B)", 22.0, Box::new(|| f16_pg.step(&hyper))),
        (
            "f32 master + bf16 copy (30 B)",
            30.0,
            Box::new(|| {
                let mut step = 1;
                let mut state = StateView::new(&mut mm, &mut mv, &mut step);
                adopt_step_master(&mut master, &mut copy, &grads, &mut state, &hyper, near).unwrap()
            }),
        ),
    ];
    let mut refs: Vec<&mut dyn FnMut()> = targets
        .iter_mut()
        .map(|t| &mut *t.2 as &mut dyn FnMut())
        .collect();
    let times = interleave(samples, reps, 1, &mut refs);
    println!(
        "\n## Half precision, {n} lanes, pool of {} threads (medians of {samples} interleaved samples)",
        rayon::current_num_threads()
    );
    let gbs: Vec<f64> = targets
        .iter()
        .zip(&times)
        .map(|(t, &time)| n as f64 / time / 1e9 * t.1)
        .collect();
    let roof_gbs = gbs[0].max(gbs[1]);
    let f32_rate = n as f64 / times[2] / 1e9;
    println!(
        "{:>30} {:>10} {:>8} {:>10} {:>12}",
        "target", "G lanes/s", "GB/s", "/ f32 step", "/ byte roof"
    );
    for (i, (name, bytes, _)) in targets.iter().enumerate() {
        let rate = n as f64 / times[i] / 1e9;
        println!(
            "{name:>30} {rate:>10.3} {:>8.1} {:>10.3} {:>12.3}",
            gbs[i],
            rate / f32_rate,
            rate / (roof_gbs / bytes)
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` compatibility
    }
    let samples = env_usize("ADOPT_SAMPLES", 31);
    let part = std::env::var("ADOPT_PART").unwrap_or_default();
    println!(
        "adopt ceilings: best kernel {}, pool of {} threads",
        Kernel::best().name(),
        rayon::current_num_threads()
    );
    if part.is_empty() || part == "compute" {
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        one.install(|| compute(samples));
    }
    if part.is_empty() || part == "bandwidth" {
        bandwidth(samples);
    }
    #[cfg(feature = "half")]
    if part.is_empty() || part == "half" {
        half_precision(samples);
    }
    #[cfg(not(feature = "half"))]
    if part == "half" {
        println!("the half part needs `--features half`");
    }
}
