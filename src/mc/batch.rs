//! Several images through the sampler together, for a GPU that one image's samples leave
//! idle: one prefix pass for the whole batch, then network calls of up to `chunk` (image,
//! sample) rows across images. Each image keeps its own masks (the seeds `sample` gives it),
//! its samples arrive in order, and adaptive stopping settles each image on its own, so every
//! image gets the prediction `sample` gives it alone. With mirroring (`flip`) the prefix runs
//! over the images and their mirrors, and each odd-numbered sample reads its image's mirror.

use anyhow::Result;
use tch::{Kind, Tensor};

use super::adaptive::Snapshot;
use super::{
    fresh_seed, mirror, mirrored, mix_seed, weight_average_pass, Accumulator, McOptions, Prediction,
};
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
    Ok(accumulate(net, images, opts)?
        .into_iter()
        .map(Accumulator::finish)
        .collect())
}

/// The accumulated samples of each image of a batch.
///
/// # Shapes
/// `images: [B, 3, H, W]` normalised, on the network's device.
pub(super) fn accumulate(
    net: &SegNet,
    images: &Tensor,
    opts: &McOptions,
) -> Result<Vec<Accumulator>> {
    opts.validate()?;
    let n = images.size()[0] as usize;
    if !net.is_stochastic() {
        return Ok((0..n)
            .map(|i| weight_average_pass(net, &images.get(i as i64), opts.flip))
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
        // Image i's mirror is image n + i of the prefix.
        let prefix = if opts.flip {
            net.prefix(&Tensor::cat(&[images, &mirror(images)], 0), false)
        } else {
            net.prefix(images, false)
        };
        let mut accs: Vec<Accumulator> = (0..n).map(|_| Accumulator::new()).collect();
        let mut last: Vec<Option<Snapshot>> = (0..n).map(|_| None).collect();
        let mut active: Vec<usize> = (0..n).collect();
        let mut taken = 0;
        while !active.is_empty() && taken < opts.samples {
            let round = step.min(opts.samples - taken);
            let seeds = &seeds;
            let rows: Vec<Row> = active
                .iter()
                .flat_map(|&i| {
                    (taken..taken + round).map(move |j| Row {
                        image: i,
                        view: if mirrored(opts, j) { n + i } else { i },
                        seed: seeds[i][j],
                    })
                })
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
    Ok(accs)
}

/// One sample of one image.
struct Row {
    image: usize,
    /// The prefix image it reads: `image`, or its mirror (`image` plus the batch size).
    view: usize,
    seed: u64,
}

/// One network call over `rows`, in order; each image's rows go to its accumulator, mirrored
/// back where they read a mirror.
fn run_call(net: &SegNet, prefix: &Prefix, rows: &[Row], accs: &mut [Accumulator]) {
    // Runs of rows that read the same prefix image.
    let mut groups: Vec<(&Row, Vec<u64>)> = vec![];
    for row in rows {
        match groups.last_mut() {
            Some((first, seeds)) if first.view == row.view => seeds.push(row.seed),
            _ => groups.push((row, vec![row.seed])),
        }
    }
    let parts = groups
        .iter()
        .map(|(row, seeds)| prefix.image(row.view as i64).for_samples(seeds))
        .collect();
    let probs = net
        .suffix(&Prefix::cat(parts), Mode::MC)
        .softmax(1, Kind::Float);
    let mut at = 0;
    for (row, seeds) in &groups {
        let len = seeds.len() as i64;
        let part = probs.narrow(0, at, len);
        if row.view == row.image {
            accs[row.image].add(&part);
        } else {
            accs[row.image].add(&mirror(&part));
        }
        at += len;
    }
}
