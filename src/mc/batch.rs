//! Several images through the sampler together, for a GPU that one image's samples leave
//! idle: one prefix pass for the whole batch, then network calls of up to `chunk` (image,
//! sample) rows across images. Each image keeps its own masks (the seeds `sample` gives it),
//! its samples arrive in order, and adaptive stopping settles each image on its own, so every
//! image gets the prediction `sample` gives it alone.

use anyhow::Result;
use tch::{Kind, Tensor};

use super::adaptive::Snapshot;
use super::{fresh_seed, mix_seed, weight_average, Accumulator, McOptions, Prediction};
use crate::model::{Mode, Prefix, SegNet};

/// The predictions of a batch of images.
///
/// # Shapes
/// `images: [B, 3, H, W]` normalised, on the network's device; each prediction `[.., H, W]`.
pub(crate) fn sample_batch(
    net: &SegNet,
    images: &Tensor,
    opts: &McOptions,
) -> Result<Vec<Prediction>> {
    opts.validate()?;
    let n = images.size()[0] as usize;
    if !net.is_stochastic() {
        return Ok((0..n)
            .map(|i| weight_average(net, &images.get(i as i64)))
            .collect());
    }
    let seeds: Vec<Vec<u64>> = (0..n)
        .map(|_| {
            let base = opts.seed.unwrap_or_else(fresh_seed);
            (0..opts.samples as u64)
                .map(|i| mix_seed(base, i))
                .collect()
        })
        .collect();
    let step = opts.adaptive.map_or(opts.samples, |s| s.step);
    let accs = tch::no_grad(|| {
        let prefix = net.prefix(images, false);
        let mut accs: Vec<Accumulator> = (0..n).map(|_| Accumulator::new()).collect();
        let mut last: Vec<Option<Snapshot>> = (0..n).map(|_| None).collect();
        let mut active: Vec<usize> = (0..n).collect();
        let mut taken = 0;
        while !active.is_empty() && taken < opts.samples {
            let round = step.min(opts.samples - taken);
            let rows: Vec<(usize, u64)> = active
                .iter()
                .flat_map(|&i| seeds[i][taken..taken + round].iter().map(move |&s| (i, s)))
                .collect();
            for call in rows.chunks(opts.chunk) {
                run_call(net, &prefix, call, &mut accs);
            }
            taken += round;
            if let Some(settle) = &opts.adaptive {
                active.retain(|&i| {
                    let now = Snapshot::of(&accs[i]);
                    let settled = last[i].as_ref().is_some_and(|l| settle.settled(l, &now));
                    last[i] = Some(now);
                    !settled
                });
            }
        }
        accs
    });
    Ok(accs.into_iter().map(Accumulator::finish).collect())
}

/// One network call over `rows` (image, seed), in order; each image's rows go to its
/// accumulator.
fn run_call(net: &SegNet, prefix: &Prefix, rows: &[(usize, u64)], accs: &mut [Accumulator]) {
    let mut groups: Vec<(usize, Vec<u64>)> = vec![];
    for &(i, seed) in rows {
        match groups.last_mut() {
            Some((j, seeds)) if *j == i => seeds.push(seed),
            _ => groups.push((i, vec![seed])),
        }
    }
    let parts = groups
        .iter()
        .map(|(i, seeds)| prefix.image(*i as i64).for_samples(seeds))
        .collect();
    let probs = net
        .suffix(&Prefix::cat(parts), Mode::MC)
        .softmax(1, Kind::Float);
    let mut at = 0;
    for (i, seeds) in &groups {
        let len = seeds.len() as i64;
        accs[*i].add(&probs.narrow(0, at, len));
        at += len;
    }
}
