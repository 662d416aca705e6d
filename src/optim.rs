//! Optimisers written over plain tensors, so that their state (momentum, Adam moments) can be
//! saved in a checkpoint and a resumed run continues exactly where it stopped. PyTorch's
//! semantics: SGD with momentum and L2 weight decay, Adam with L2, AdamW with decoupled decay.

use std::collections::HashMap;

use anyhow::{bail, Result};
use tch::{nn, Tensor};

use crate::config::{Optimizer, TrainConfig};

pub(crate) struct Optim {
    kind: Optimizer,
    momentum: f64,
    weight_decay: f64,
    /// Trainable variables by name.
    params: Vec<(String, Tensor)>,
    /// SGD momentum buffers, or Adam first moments.
    m: Vec<Tensor>,
    /// Adam second moments (empty for SGD).
    v: Vec<Tensor>,
    /// Steps taken (Adam's bias correction).
    pub steps: i64,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

impl Optim {
    pub(crate) fn new(vs: &nn::VarStore, cfg: &TrainConfig) -> Optim {
        let mut params: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let zeros = || {
            params
                .iter()
                .map(|(_, t)| t.zeros_like())
                .collect::<Vec<_>>()
        };
        let m = zeros();
        let v = if cfg.optimizer == Optimizer::Sgd {
            vec![]
        } else {
            zeros()
        };
        Optim {
            kind: cfg.optimizer,
            momentum: cfg.momentum,
            weight_decay: cfg.weight_decay,
            params,
            m,
            v,
            steps: 0,
        }
    }

    pub(crate) fn zero_grad(&mut self) {
        for (_, p) in &self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// One update with learning rate `lr` from the gradients in the variables.
    pub(crate) fn step(&mut self, lr: f64) {
        self.steps += 1;
        let t = self.steps as f64;
        tch::no_grad(|| {
            for (i, (_, p)) in self.params.iter().enumerate() {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let mut p = p.shallow_clone();
                match self.kind {
                    Optimizer::Sgd => {
                        let d = &g + &p * self.weight_decay;
                        let buf = &mut self.m[i];
                        let _ = buf.g_mul_scalar_(self.momentum).g_add_(&d);
                        let _ = p.g_sub_(&(&*buf * lr));
                    }
                    Optimizer::Adam | Optimizer::Adamw => {
                        let g = if self.kind == Optimizer::Adam {
                            &g + &p * self.weight_decay
                        } else {
                            let _ = p.g_mul_scalar_(1.0 - lr * self.weight_decay);
                            g
                        };
                        let _ = self.m[i].g_mul_scalar_(BETA1).g_add_(&(&g * (1.0 - BETA1)));
                        let _ = self.v[i]
                            .g_mul_scalar_(BETA2)
                            .g_add_(&(g.square() * (1.0 - BETA2)));
                        let mhat = &self.m[i] / (1.0 - BETA1.powf(t));
                        let vhat = &self.v[i] / (1.0 - BETA2.powf(t));
                        let _ = p.g_sub_(&(mhat / (vhat.sqrt() + EPS) * lr));
                    }
                }
            }
        });
    }

    /// The state to checkpoint, named `optim.m.<var>` / `optim.v.<var>`.
    pub(crate) fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![];
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.push((format!("optim.m.{name}"), self.m[i].shallow_clone()));
            if let Some(v) = self.v.get(i) {
                out.push((format!("optim.v.{name}"), v.shallow_clone()));
            }
        }
        out
    }

    /// Restores buffers saved by [`Optim::state`] (keys without the checkpoint's `state.` prefix).
    pub(crate) fn load_state(&mut self, saved: &HashMap<String, Tensor>, steps: i64) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            for (i, (name, _)) in self.params.iter().enumerate() {
                let key = format!("optim.m.{name}");
                let Some(m) = saved.get(&key) else {
                    bail!("checkpoint lacks optimiser state {key} (was it trained with another optimiser?)")
                };
                self.m[i].copy_(m);
                if let Some(v) = self.v.get_mut(i) {
                    let key = format!("optim.v.{name}");
                    let Some(saved_v) = saved.get(&key) else {
                        bail!("checkpoint lacks optimiser state {key} (was it trained with SGD?)")
                    };
                    v.copy_(saved_v);
                }
            }
            Ok(())
        })?;
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// One SGD step by hand: buf = g + wd p; p -= lr buf.
    #[test]
    fn sgd_matches_the_formula() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[2], nn::Init::Const(1.0));
        let cfg = TrainConfig {
            momentum: 0.9,
            weight_decay: 0.1,
            ..Default::default()
        };
        let mut opt = Optim::new(&vs, &cfg);
        for _ in 0..2 {
            opt.zero_grad();
            (&w * 3.0).sum(Kind::Float).backward();
            opt.step(0.5);
        }
        // step 1: buf = 3 + 0.1 = 3.1, w = 1 - 1.55 = -0.55
        // step 2: buf = 0.9*3.1 + 3 + 0.1*(-0.55) = 5.735, w = -0.55 - 2.8675 = -3.4175
        let got: Vec<f32> = Vec::try_from(&w).unwrap();
        assert!((got[0] + 3.4175).abs() < 1e-5, "{got:?}");
    }

    /// `w` after each of two steps (lr 0.1, weight decay 0.5) on `sum(3w + w^2)` from
    /// w = [1, -2], so that the gradient changes between the steps.
    fn two_steps(optimizer: Optimizer) -> Vec<Vec<f32>> {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs
            .root()
            .var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0]));
        let cfg = TrainConfig {
            optimizer,
            weight_decay: 0.5,
            ..Default::default()
        };
        let mut opt = Optim::new(&vs, &cfg);
        (0..2)
            .map(|_| {
                opt.zero_grad();
                (&w * 3.0 + &w * &w).sum(Kind::Float).backward();
                opt.step(0.1);
                Vec::try_from(&w).unwrap()
            })
            .collect()
    }

    fn assert_close(got: &[Vec<f32>], want: [[f32; 2]; 2]) {
        let close = got.iter().flatten().zip(want.iter().flatten());
        assert!(
            close.into_iter().all(|(g, w)| (g - w).abs() < 1e-6),
            "{got:?} vs PyTorch {want:?}"
        );
    }

    /// Against PyTorch 2.11:
    /// ```python
    /// w = torch.tensor([1.0, -2.0], requires_grad=True)
    /// opt = torch.optim.AdamW([w], lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.5)
    /// for _ in range(2):
    ///     opt.zero_grad(); (3 * w + w * w).sum().backward(); opt.step(); print(w.tolist())
    /// ```
    /// Step 1 by hand: w = 1 * (1 - 0.1 * 0.5) = 0.95, then m^ = g = 5, v^ = 25, so w -= 0.1.
    #[test]
    fn adamw_matches_pytorch() {
        let want = [[0.85, -1.8], [0.707_708_9, -1.614_250_9]];
        assert_close(&two_steps(Optimizer::Adamw), want);
    }

    /// Adam's L2 decay enters the gradient, unlike AdamW's: the same snippet with
    /// `torch.optim.Adam`.
    #[test]
    fn adam_with_weight_decay_matches_pytorch() {
        let want = [[0.9, -1.9], [0.800_148_2, -1.800_568_2]];
        assert_close(&two_steps(Optimizer::Adam), want);
    }
}
