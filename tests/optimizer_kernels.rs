//! `Adopt::step` batches many buffers into one kernel call per run of
//! items: under every kernel the CPU supports, serially and across the pool,
//! each buffer must end bit for bit where `adopt::reference` takes it. (Its
//! own binary: `Kernel::force` is per process.)

mod common;

use adopt::{Adopt, Clip, Hyper, Item, Kernel, ParamId, State, WeightDecay};
use common::assert_same_bits;

/// Buffer lengths around every vector width and its tails, a large buffer
/// the pool splits itself, and enough small ones for several parallel tasks.
fn lanes() -> Vec<usize> {
    let mut lanes = vec![0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 100, 200_000];
    lanes.extend((0..150).map(|i| (i * 37) % 70));
    lanes
}

fn value(i: usize, salt: f32) -> f32 {
    let x = (i as f32 * 0.37 + salt).sin();
    match i % 97 {
        13 => f32::NAN,
        29 => 0.0,
        41 => -f32::MIN_POSITIVE / 4.0, // subnormal
        _ => x,
    }
}

#[test]
fn every_kernel_matches_the_reference_serial_and_parallel() {
    let groups = [
        Hyper {
            lr: 0.01,
            ..Hyper::default()
        },
        Hyper {
            lr: 0.003,
            weight_decay: WeightDecay::decoupled(0.1),
            maximize: true,
            clip: Clip::Constant(0.5),
            ..Hyper::default()
        },
    ];
    let lanes = lanes();
    let grads: Vec<Vec<f32>> = lanes
        .iter()
        .map(|&l| (0..l).map(|i| value(i, l as f32)).collect())
        .collect();

    // The reference, buffer by buffer; every third buffer skips step 2.
    let steps = 4;
    let has_grad = |buffer: usize, step: usize| !(buffer % 3 == 2 && step == 2);
    let want: Vec<Vec<f32>> = lanes
        .iter()
        .enumerate()
        .map(|(b, &l)| {
            let mut params: Vec<f32> = (0..l).map(|i| value(i, 0.5)).collect();
            let mut state = State::new(l);
            for step in 0..steps {
                if has_grad(b, step) {
                    adopt::reference::adopt_step(
                        &mut params,
                        &grads[b],
                        &mut state,
                        &groups[b % 2],
                    )
                    .unwrap();
                }
            }
            params
        })
        .collect();

    for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
        assert!(Kernel::force(Some(kernel)));
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut opt = Adopt::new();
            let ids: Vec<_> = groups.iter().map(|h| opt.add_group(*h).unwrap()).collect();
            let params: Vec<ParamId> = lanes
                .iter()
                .enumerate()
                .map(|(b, &l)| opt.add_param(ids[b % 2], l, None).unwrap())
                .collect();
            let mut data: Vec<Vec<f32>> = lanes
                .iter()
                .map(|&l| (0..l).map(|i| value(i, 0.5)).collect())
                .collect();
            pool.install(|| {
                for step in 0..steps {
                    let mut items: Vec<Item<'_>> = data
                        .iter_mut()
                        .enumerate()
                        .map(|(b, d)| Item {
                            id: params[b],
                            params: d,
                            grads: has_grad(b, step).then_some(&grads[b][..]),
                        })
                        .collect();
                    opt.step(&mut items).unwrap();
                }
            });
            for (b, (got, want)) in data.iter().zip(&want).enumerate() {
                let what = format!("{} kernel, {threads} threads, buffer {b}", kernel.name());
                assert_same_bits(got, want, &what);
            }
        }
    }
    Kernel::force(None);
}

/// An optimizer's own kernel choice: steps with it equal the reference (as
/// every kernel does), an unavailable one is refused with nothing changed,
/// and loading a checkpoint keeps it.
#[test]
fn each_optimizer_can_choose_its_kernel() {
    for kernel in Kernel::ALL {
        let mut opt = Adopt::new();
        let got = opt.set_kernel(Some(kernel));
        if !kernel.is_available() {
            assert_eq!(got, Err(adopt::Error::KernelUnavailable(kernel)));
            assert_eq!(opt.kernel(), None);
            continue;
        }
        got.unwrap();
        let g = opt.add_group(Hyper::default()).unwrap();
        let id = opt.add_param(g, 37, None).unwrap();
        let (mut p, mut q) = (vec![1.0_f32; 37], vec![1.0_f32; 37]);
        let grads: Vec<f32> = (0..37).map(|i| (i as f32 * 0.3).sin()).collect();
        let mut state = State::new(37);
        for _ in 0..3 {
            opt.step(&mut [Item {
                id,
                params: &mut p,
                grads: Some(&grads),
            }])
            .unwrap();
            adopt::reference::adopt_step(&mut q, &grads, &mut state, &Hyper::default()).unwrap();
        }
        assert_same_bits(&p, &q, kernel.name());
        let bytes = opt.save().unwrap();
        let mut fresh = Adopt::new();
        fresh.set_kernel(Some(kernel)).unwrap();
        fresh.load(&bytes).unwrap();
        assert_eq!(fresh.kernel(), Some(kernel));
    }
}
