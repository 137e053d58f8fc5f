//! adopt-candle steps every Var exactly as the core's single-buffer steps
//! step the same gradients, bit for bit, and refuses bad input before
//! changing anything.

use adopt::precision::adopt_step_half;
use adopt::{Hyper, Rounding, State, WeightDecay, adopt_step};
use adopt_candle::{Adopt, Error};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use half::{bf16, f16};

/// A deterministic pseudo-random sequence in [-scale, scale).
fn noise(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Same bits, any NaN matching any NaN.
fn same_f32(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

/// `sum(var * c)` for each var: its gradient is `c`, a tensor we pick.
fn loss_of(vars: &[Var], seed: u64) -> candle_core::Result<Tensor> {
    let mut loss = Tensor::zeros((), vars[0].dtype(), &Device::Cpu)?;
    for (k, var) in vars.iter().enumerate() {
        let c = noise(seed * 31 + k as u64, var.elem_count(), 2.0);
        let c = Tensor::from_vec(c, var.shape(), &Device::Cpu)?.to_dtype(var.dtype())?;
        loss = (loss + (var.as_tensor() * c)?.sum_all()?)?;
    }
    Ok(loss)
}

#[test]
fn f32_vars_match_adopt_step_bit_for_bit() -> Result<(), Box<dyn std::error::Error>> {
    let shapes: [&[usize]; 5] = [&[7, 13], &[13], &[64, 33], &[1], &[3, 4, 5]];
    let vars: Vec<Var> = shapes
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let n = s.iter().product();
            Var::from_tensor(&Tensor::from_vec(
                noise(k as u64 + 1, n, 1.0),
                *s,
                &Device::Cpu,
            )?)
        })
        .collect::<candle_core::Result<_>>()?;
    let first = Hyper {
        lr: 0.01,
        ..Hyper::default()
    };
    let second = Hyper {
        lr: 0.003,
        weight_decay: WeightDecay::decoupled(0.1),
        nesterov: true,
        ..Hyper::default()
    };
    // Vars 0, 1, 3 in the first group, 2 and 4 in the second.
    let mut opt = Adopt::new(
        vec![vars[0].clone(), vars[1].clone(), vars[3].clone()],
        first,
    )?;
    let g2 = opt.add_group(second)?;
    opt.add_var(g2, &vars[2], Some("big"))?;
    opt.add_var(g2, &vars[4], None)?;
    let hyper_of = [first, first, second, first, second];

    let mut reference: Vec<Vec<f32>> = vars
        .iter()
        .map(|v| v.as_tensor().flatten_all()?.to_vec1::<f32>())
        .collect::<candle_core::Result<_>>()?;
    let mut states: Vec<State> = vars.iter().map(|v| State::new(v.elem_count())).collect();

    for step in 0..6 {
        let mut grads = loss_of(&vars, step)?.backward()?;
        if step == 2 {
            // Var 1 has no gradient this step: it and its state stay.
            grads.remove(vars[1].as_tensor());
        }
        for (k, var) in vars.iter().enumerate() {
            if let Some(g) = grads.get(var.as_tensor()) {
                let g = g.flatten_all()?.to_vec1::<f32>()?;
                adopt_step(&mut reference[k], &g, &mut states[k], &hyper_of[k])?;
            }
        }
        opt.step(&grads)?;
        for (k, var) in vars.iter().enumerate() {
            let got = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            assert!(
                same_f32(&got, &reference[k]),
                "var {k} differs after step {step}"
            );
        }
    }
    // The moments too: the core's state is the reference's.
    for (k, id) in [0, 1, 3, 2, 4].iter().enumerate() {
        let state = opt
            .core()
            .state(adopt::ParamId(k as u32))?
            .expect("stepped");
        assert_eq!(state.step(), states[*id].step());
        assert!(same_f32(state.exp_avg(), states[*id].exp_avg()));
        assert!(same_f32(state.exp_avg_sq(), states[*id].exp_avg_sq()));
    }
    Ok(())
}

#[test]
fn half_vars_match_adopt_step_half_bit_for_bit() -> Result<(), Box<dyn std::error::Error>> {
    let w = Var::from_tensor(
        &Tensor::from_vec(noise(5, 300, 1.0), (10, 30), &Device::Cpu)?.to_dtype(DType::BF16)?,
    )?;
    let h = Var::from_tensor(
        &Tensor::from_vec(noise(6, 77, 1.0), 77, &Device::Cpu)?.to_dtype(DType::F16)?,
    )?;
    let hyper = Hyper {
        lr: 0.01,
        ..Hyper::default()
    };
    let mut opt = Adopt::new(vec![w.clone(), h.clone()], hyper)?;
    let mut ref_w: Vec<bf16> = w.as_tensor().flatten_all()?.to_vec1()?;
    let mut ref_h: Vec<f16> = h.as_tensor().flatten_all()?.to_vec1()?;
    let (mut mw, mut vw, mut sw) = (vec![0.0f32; 300], vec![0.0f32; 300], 0u64);
    let (mut mh, mut vh, mut sh) = (vec![0.0f32; 77], vec![0.0f32; 77], 0u64);
    for step in 0..5 {
        let grads = (
            loss_of(std::slice::from_ref(&w), step)?.backward()?,
            loss_of(std::slice::from_ref(&h), step + 100)?.backward()?,
        );
        let mut all = grads.0;
        all.insert(
            h.as_tensor(),
            grads.1.get(h.as_tensor()).expect("grad").clone(),
        );
        let gw: Vec<bf16> = all
            .get(w.as_tensor())
            .expect("grad")
            .flatten_all()?
            .to_vec1()?;
        let gh: Vec<f16> = all
            .get(h.as_tensor())
            .expect("grad")
            .flatten_all()?
            .to_vec1()?;
        adopt_step_half(
            &mut ref_w,
            &gw,
            &mut mw,
            &mut vw,
            &mut sw,
            &hyper,
            Rounding::NearestEven,
        )?;
        adopt_step_half(
            &mut ref_h,
            &gh,
            &mut mh,
            &mut vh,
            &mut sh,
            &hyper,
            Rounding::NearestEven,
        )?;
        opt.step(&all)?;
        let got_w: Vec<bf16> = w.as_tensor().flatten_all()?.to_vec1()?;
        let got_h: Vec<f16> = h.as_tensor().flatten_all()?.to_vec1()?;
        assert!(
            got_w
                .iter()
                .zip(&ref_w)
                .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())),
            "bf16 step {step}"
        );
        assert!(
            got_h
                .iter()
                .zip(&ref_h)
                .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())),
            "f16 step {step}"
        );
    }
    Ok(())
}

#[test]
fn save_and_load_round_trip_the_state() -> Result<(), Box<dyn std::error::Error>> {
    let make = || -> candle_core::Result<Var> {
        Var::from_tensor(&Tensor::from_vec(noise(9, 50, 1.0), 50, &Device::Cpu)?)
    };
    let (a, b) = (make()?, make()?);
    let hyper = Hyper::default();
    let mut first = Adopt::new(vec![a.clone()], hyper)?;
    for step in 0..3 {
        first.step(&loss_of(std::slice::from_ref(&a), step)?.backward()?)?;
    }
    // A second optimizer over a copy of the weights, loaded from the first.
    b.set(a.as_tensor())?;
    let mut second = Adopt::new(vec![b.clone()], hyper)?;
    second.load(&first.save()?)?;
    for step in 3..6 {
        first.step(&loss_of(std::slice::from_ref(&a), step)?.backward()?)?;
        second.step(&loss_of(std::slice::from_ref(&b), step)?.backward()?)?;
    }
    let (a, b) = (
        a.as_tensor().to_vec1::<f32>()?,
        b.as_tensor().to_vec1::<f32>()?,
    );
    assert!(same_f32(&a, &b));
    Ok(())
}

#[test]
fn load_by_name_matches_vars_by_name() -> Result<(), Box<dyn std::error::Error>> {
    let map = candle_nn::VarMap::new();
    let init = candle_nn::Init::Const(0.5);
    map.get(4, "b", init, DType::F32, &Device::Cpu)?;
    map.get(8, "a", init, DType::F32, &Device::Cpu)?;
    let mut opt = Adopt::from_varmap(&map, Hyper::default())?;
    let vars: Vec<Var> = opt.vars().cloned().collect();
    opt.step(&loss_of(&vars, 1)?.backward()?)?;
    let bytes = opt.save()?;
    // Registered in the other order, by hand: load refuses, load_by_name works.
    let mut other = Adopt::try_new(Vec::new(), Hyper::default())?;
    let g = other.group(0).expect("first group");
    let by_name = |n: &str| map.data().lock().expect("lock")[n].clone();
    other.add_var(g, &by_name("b"), Some("b"))?;
    other.add_var(g, &by_name("a"), Some("a"))?;
    assert!(matches!(other.load(&bytes), Err(Error::Core(_))));
    other.load_by_name(&bytes)?;
    let a0 = opt.core().state(adopt::ParamId(0))?.expect("a stepped");
    let a1 = other.core().state(adopt::ParamId(1))?.expect("a loaded");
    assert!(same_f32(a0.exp_avg_sq(), a1.exp_avg_sq()));
    assert_eq!(a0.step(), a1.step());
    Ok(())
}

#[test]
fn bad_vars_are_refused_with_typed_errors() -> Result<(), Box<dyn std::error::Error>> {
    let ints = Var::from_tensor(&Tensor::new(&[1u32, 2, 3], &Device::Cpu)?)?;
    assert!(matches!(
        Adopt::try_new(vec![ints], Hyper::default()),
        Err(Error::UnsupportedDtype {
            dtype: DType::U32,
            ..
        })
    ));
    let f64s = Var::new(&[1.0f64, 2.0], &Device::Cpu)?;
    assert!(matches!(
        Adopt::try_new(vec![f64s], Hyper::default()),
        Err(Error::UnsupportedDtype {
            dtype: DType::F64,
            ..
        })
    ));
    let w = Var::new(&[1.0f32, 2.0], &Device::Cpu)?;
    assert!(matches!(
        Adopt::try_new(vec![w.clone(), w.clone()], Hyper::default()),
        Err(Error::DuplicateVar { .. })
    ));
    Ok(())
}

#[test]
fn bad_steps_change_nothing() -> Result<(), Box<dyn std::error::Error>> {
    let a = Var::new(&[1.0f32, -2.0, 3.0, 4.0], &Device::Cpu)?;
    let b = Var::new(&[0.5f32; 4], &Device::Cpu)?;
    let mut opt = Adopt::new(vec![a.clone(), b.clone()], Hyper::default())?;
    let before = || -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
        Ok((a.as_tensor().to_vec1()?, b.as_tensor().to_vec1()?))
    };
    let start = before()?;
    let good = loss_of(&[a.clone(), b.clone()], 3)?.backward()?;

    // A gradient of the wrong shape or dtype for the second Var.
    let mut wrong = loss_of(&[a.clone(), b.clone()], 3)?.backward()?;
    wrong.insert(b.as_tensor(), Tensor::zeros(3, DType::F32, &Device::Cpu)?);
    assert!(matches!(opt.try_step(&wrong), Err(Error::GradShape { .. })));
    wrong.insert(b.as_tensor(), Tensor::zeros(4, DType::F64, &Device::Cpu)?);
    assert!(matches!(opt.try_step(&wrong), Err(Error::GradDtype { .. })));
    // A gradient that is a stepped Var.
    wrong.insert(b.as_tensor(), Tensor::zeros(4, DType::F32, &Device::Cpu)?);
    wrong.insert(a.as_tensor(), b.as_tensor().clone());
    assert!(matches!(
        opt.try_step(&wrong),
        Err(Error::GradAliasesVar { .. })
    ));
    // An invalid learning rate: the core refuses before writing.
    opt.set_learning_rate(-1.0);
    assert!(matches!(opt.try_step(&good), Err(Error::Core(_))));
    assert!(opt.step(&good).is_err());
    assert_eq!(before()?, start);
    assert!(opt.core().state(adopt::ParamId(0))?.is_none());

    opt.set_learning_rate(0.1);
    assert_eq!(opt.learning_rate(), 0.1);
    // ADOPT's first step only records `v`; the second moves the Vars.
    opt.step(&good)?;
    assert_eq!(
        opt.core().state(adopt::ParamId(0))?.map(|s| s.step()),
        Some(1)
    );
    opt.step(&good)?;
    assert_ne!(before()?, start);
    Ok(())
}

#[test]
fn many_vars_step_on_a_scoped_thread() -> Result<(), Box<dyn std::error::Error>> {
    let n = adopt_candle::NESTED_ON_CALLER + 20;
    let vars: Vec<Var> = (0..n)
        .map(|k| Var::from_tensor(&Tensor::from_vec(noise(k as u64, 3, 1.0), 3, &Device::Cpu)?))
        .collect::<candle_core::Result<_>>()?;
    let hyper = Hyper::default();
    let mut opt = Adopt::new(vars.clone(), hyper)?;
    let mut reference: Vec<Vec<f32>> = vars
        .iter()
        .map(|v| v.as_tensor().to_vec1())
        .collect::<candle_core::Result<_>>()?;
    let mut states: Vec<State> = (0..n).map(|_| State::new(3)).collect();
    for step in 0..2 {
        let grads = loss_of(&vars, step)?.backward()?;
        for (k, var) in vars.iter().enumerate() {
            let g: Vec<f32> = grads.get(var.as_tensor()).expect("grad").to_vec1()?;
            adopt_step(&mut reference[k], &g, &mut states[k], &hyper)?;
        }
        opt.step(&grads)?;
    }
    for (k, var) in vars.iter().enumerate() {
        assert!(
            same_f32(&var.as_tensor().to_vec1::<f32>()?, &reference[k]),
            "var {k}"
        );
    }
    Ok(())
}
