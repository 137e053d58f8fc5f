//! Many small tensors against one large one of the same total size:
//! 10,000 × 100 lanes through `Adopt::step` against 1,000,000 lanes through
//! `adopt_step`, serial (one-thread pool) and in the global rayon pool; the
//! step alone (the list of items built once) and the step plus building the
//! list each time.
//!
//! Then 2,000 buffers of a few lanes each (`small_buffers`: the cost of each
//! buffer's tail), and two more measurements of the first two: paired (the
//! two alternating, each then finding the other's data in cache; the median
//! of per-pair ratios holds up on a noisy host where separate medians
//! drift) and back to back (as criterion runs them; medians and minima).
//!
//! `cargo bench --bench many_tensors`

use adopt::{Adopt, Hyper, Item, ParamId, State, adopt_step};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::time::Instant;

const TENSORS: usize = 10_000;
const LANES: usize = 100;

fn bench(c: &mut Criterion) {
    let pools = [
        (
            "serial",
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap(),
        ),
        ("rayon", rayon::ThreadPoolBuilder::new().build().unwrap()),
    ];
    let total = TENSORS * LANES;
    let hyper = Hyper::default();
    let mut group = c.benchmark_group("many_tensors");
    group.throughput(Throughput::Elements(total as u64));
    group.sample_size(30);

    let mut one = vec![0.5_f32; total];
    let one_grads: Vec<f32> = (0..total).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut one_state = State::new(total);
    adopt_step(&mut one, &one_grads, &mut one_state, &hyper).unwrap();

    let mut opt = Adopt::new();
    let g = opt.add_group(hyper).unwrap();
    let ids: Vec<ParamId> = (0..TENSORS)
        .map(|_| opt.add_param(g, LANES, None).unwrap())
        .collect();
    let mut data: Vec<Vec<f32>> = (0..TENSORS).map(|_| vec![0.5_f32; LANES]).collect();
    let grads: Vec<Vec<f32>> = (0..TENSORS)
        .map(|t| one_grads[t * LANES..(t + 1) * LANES].to_vec())
        .collect();
    let step_many = |opt: &mut Adopt, data: &mut Vec<Vec<f32>>| {
        let mut items = items(data, &ids, &grads);
        opt.step(&mut items).unwrap();
    };
    step_many(&mut opt, &mut data);

    // The same buffers stepped one `adopt_step` call each: the cost of the
    // kernel on small scattered buffers, without the optimizer's bookkeeping.
    let mut loop_states: Vec<State> = (0..TENSORS).map(|_| State::new(LANES)).collect();
    let mut loop_data = data.clone();
    group.bench_function(
        BenchmarkId::new("10000x100_adopt_step_loop", "serial"),
        |b| {
            b.iter(|| {
                for ((d, g), s) in loop_data.iter_mut().zip(&grads).zip(&mut loop_states) {
                    adopt_step(d, g, s, &hyper).unwrap();
                }
            })
        },
    );
    for (mode, pool) in &pools {
        group.bench_function(BenchmarkId::new("one_1M_tensor", mode), |b| {
            pool.install(|| {
                b.iter(|| adopt_step(&mut one, &one_grads, &mut one_state, &hyper).unwrap())
            })
        });
        // The step alone: the engine's list of items built once.
        {
            let mut items = items(&mut data, &ids, &grads);
            group.bench_function(BenchmarkId::new("10000x100_tensors", mode), |b| {
                pool.install(|| b.iter(|| opt.step(&mut items).unwrap()))
            });
        }
        // The step plus building that list (a 400 KB `Vec<Item>`) each time,
        // as an engine whose borrows end every step does.
        group.bench_function(
            BenchmarkId::new("10000x100_tensors_building_items", mode),
            |b| pool.install(|| b.iter(|| step_many(&mut opt, &mut data))),
        );
    }
    group.finish();
    small_buffers(c, &pools[0].1);

    // Paired: one step of each, alternating, so host noise hits both alike;
    // the median of the per-pair ratios. `ADOPT_PAIRS` sets the pairs.
    let pairs: usize = std::env::var("ADOPT_PAIRS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(101);
    let mut items = items(&mut data, &ids, &grads);
    for (mode, pool) in &pools {
        let (mut ones, mut manys, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        pool.install(|| {
            for _ in 0..pairs {
                let t = Instant::now();
                adopt_step(&mut one, &one_grads, &mut one_state, &hyper).unwrap();
                let one_time = t.elapsed().as_secs_f64();
                let t = Instant::now();
                opt.step(&mut items).unwrap();
                let many_time = t.elapsed().as_secs_f64();
                ones.push(one_time);
                manys.push(many_time);
                ratios.push(many_time / one_time);
            }
        });
        println!(
            "paired ({mode}, {pairs} pairs): one 1M tensor {:.1} us, 10000x100 {:.1} us (medians); median ratio {:.2}x",
            median(ones) * 1e6,
            median(manys) * 1e6,
            median(ratios)
        );
        // Back to back, as criterion runs each: `pairs` steps of one, then
        // `pairs` of the other (each finds its own data in cache). The
        // minima are the steps least disturbed by the host's other work.
        let (mut ones, mut manys) = (Vec::new(), Vec::new());
        pool.install(|| {
            for _ in 0..pairs {
                let t = Instant::now();
                adopt_step(&mut one, &one_grads, &mut one_state, &hyper).unwrap();
                ones.push(t.elapsed().as_secs_f64());
            }
            for _ in 0..pairs {
                let t = Instant::now();
                opt.step(&mut items).unwrap();
                manys.push(t.elapsed().as_secs_f64());
            }
        });
        let (one_min, many_min) = (min(&ones), min(&manys));
        let (one_median, many_median) = (median(ones), median(manys));
        println!(
            "back to back ({mode}, {pairs} steps each): one 1M tensor {:.1} us, 10000x100 {:.1} us (medians), ratio {:.2}x; minima {:.1} and {:.1} us, ratio {:.2}x",
            one_median * 1e6,
            many_median * 1e6,
            many_median / one_median,
            one_min * 1e6,
            many_min * 1e6,
            many_min / one_min
        );
    }
}

fn min(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::INFINITY, f64::min)
}

/// 2,000 buffers of a few lanes each (biases, norms' scales) through
/// `Adopt::step` on one thread: what a buffer's tail (its lanes past the
/// last whole vector) costs. `ADOPT_SMALL_LANES` (comma-separated) sets the
/// lengths.
fn small_buffers(c: &mut Criterion, pool: &rayon::ThreadPool) {
    const BUFFERS: usize = 2_000;
    let lengths: Vec<usize> = std::env::var("ADOPT_SMALL_LANES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![4, 10, 20, 100]);
    let mut group = c.benchmark_group("small_buffers");
    group.sample_size(30);
    for lanes in lengths {
        let mut opt = Adopt::new();
        let g = opt.add_group(Hyper::default()).unwrap();
        let ids: Vec<ParamId> = (0..BUFFERS)
            .map(|_| opt.add_param(g, lanes, None).unwrap())
            .collect();
        let mut data: Vec<Vec<f32>> = (0..BUFFERS).map(|_| vec![0.5_f32; lanes]).collect();
        let grads: Vec<Vec<f32>> = (0..BUFFERS)
            .map(|t| {
                (0..lanes)
                    .map(|i| ((t * lanes + i) as f32 * 0.37).sin())
                    .collect()
            })
            .collect();
        let mut items = items(&mut data, &ids, &grads);
        opt.step(&mut items).unwrap();
        group.throughput(Throughput::Elements((BUFFERS * lanes) as u64));
        group.bench_function(BenchmarkId::new(format!("2000x{lanes}"), "serial"), |b| {
            pool.install(|| b.iter(|| opt.step(&mut items).unwrap()))
        });
    }
    group.finish();
}

/// The step's list of items: every tensor with its gradient.
fn items<'a>(data: &'a mut [Vec<f32>], ids: &[ParamId], grads: &'a [Vec<f32>]) -> Vec<Item<'a>> {
    data.iter_mut()
        .zip(ids)
        .zip(grads)
        .map(|((d, &id), g)| Item {
            id,
            params: d,
            grads: Some(g),
        })
        .collect()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

criterion_group!(benches, bench);
criterion_main!(benches);
