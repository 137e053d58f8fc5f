//! The `serde` feature: `Hyper`, `Clip`, `DecayScaling` and `State` round
//! trip through serde_json; missing `Hyper` fields take their defaults; a
//! custom clip schedule refuses to serialize.
#![cfg(feature = "serde")]

use adopt::{Caution, Clip, DecayScaling, Hyper, State, WeightDecay, adopt_step};

fn same_hyper(a: &Hyper, b: &Hyper) -> bool {
    // `Hyper` has no `PartialEq` (a `Clip::Custom` fn pointer has no
    // meaningful equality); compare the debug forms, which show every field.
    format!("{a:?}") == format!("{b:?}")
}

#[test]
fn hyper_round_trips_through_json() {
    let hypers = [
        Hyper::default(),
        Hyper {
            lr: 0.0123,
            betas: (0.5, 0.999),
            eps: 1e-8,
            weight_decay: WeightDecay::Decoupled {
                weight_decay: 0.25,
                scaling: DecayScaling::Corrected { max_lr: Some(0.1) },
                first_step: true,
            },
            maximize: true,
            clip: Clip::Constant(0.75),
            clip_offset: 1,
            nesterov: true,
            caution: Caution::PytorchOptimizer,
        },
        Hyper {
            clip: Clip::None,
            weight_decay: WeightDecay::Decoupled {
                weight_decay: 0.1,
                scaling: DecayScaling::Fixed,
                first_step: false,
            },
            caution: Caution::Timm,
            ..Hyper::default()
        },
        Hyper {
            weight_decay: WeightDecay::l2(0.5),
            ..Hyper::default()
        },
        Hyper {
            clip: Clip::Power {
                scale: 2.0,
                exponent: 0.5,
            },
            ..Hyper::default()
        },
    ];
    for h in hypers {
        let json = serde_json::to_string(&h).unwrap();
        let back: Hyper = serde_json::from_str(&json).unwrap();
        assert!(same_hyper(&h, &back), "{json}");
        // The derived constants agree bit for bit at every step tried.
        for t in [0, 1, 2, 1000] {
            assert_eq!(h.constants(t), back.constants(t));
        }
    }
}

#[test]
fn missing_hyper_fields_take_their_defaults() {
    let h: Hyper =
        serde_json::from_str(r#"{ "lr": 0.01, "weight_decay": { "L2": 0.5 } }"#).unwrap();
    let want = Hyper {
        lr: 0.01,
        weight_decay: WeightDecay::l2(0.5),
        ..Hyper::default()
    };
    assert!(same_hyper(&h, &want), "{h:?}");
    let empty: Hyper = serde_json::from_str("{}").unwrap();
    assert!(same_hyper(&empty, &Hyper::default()));
}

#[test]
fn a_custom_clip_schedule_refuses_to_serialize() {
    fn warmup(t: u64) -> f64 {
        if t < 10 { 0.1 } else { 1.0 }
    }
    let h = Hyper {
        clip: Clip::Custom(warmup),
        ..Hyper::default()
    };
    let err = serde_json::to_string(&h).unwrap_err();
    assert!(err.to_string().contains("Custom"), "{err}");
    assert!(serde_json::from_str::<Clip>(r#""Custom""#).is_err());
}

#[test]
fn state_round_trips_through_json_and_keeps_stepping_identically() {
    let mut params: Vec<f32> = (0..37).map(|i| (i as f32 * 0.3).sin()).collect();
    let grads: Vec<f32> = (0..37).map(|i| (i as f32 * 0.7).cos()).collect();
    let mut state = State::new(37);
    let h = Hyper::default();
    for _ in 0..3 {
        adopt_step(&mut params, &grads, &mut state, &h).unwrap();
    }
    let json = serde_json::to_string(&state).unwrap();
    let mut back: State = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
    assert_eq!(back.step(), 3);
    let mut p2 = params.clone();
    adopt_step(&mut params, &grads, &mut state, &h).unwrap();
    adopt_step(&mut p2, &grads, &mut back, &h).unwrap();
    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&params), bits(&p2));
    assert_eq!(bits(state.exp_avg()), bits(back.exp_avg()));
    assert_eq!(bits(state.exp_avg_sq()), bits(back.exp_avg_sq()));
}

#[test]
fn a_state_with_missing_fields_is_refused() {
    assert!(serde_json::from_str::<State>(r#"{ "exp_avg": [1.0], "step": 1 }"#).is_err());
}
