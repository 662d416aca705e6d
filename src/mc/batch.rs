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

/// One network call over `rows`; each image's rows go to its accumulator in order, mirrored
/// back where they read a mirror.
fn run_call(net: &SegNet, prefix: &Prefix, rows: &[Row], accs: &mut [Accumulator]) {
    // The call runs the rows grouped by the prefix image they read (a stable sort: without
    // mirrors they already are), so that each group is one expanded view of its prefix image,
    // not a copy per sample.
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&r| rows[r].view);
    let mut groups: Vec<(usize, Vec<u64>)> = vec![];
    for &r in &order {
        match groups.last_mut() {
            Some((view, seeds)) if *view == rows[r].view => seeds.push(rows[r].seed),
            _ => groups.push((rows[r].view, vec![rows[r].seed])),
        }
    }
    let parts = groups
        .iter()
        .map(|(view, seeds)| prefix.image(*view as i64).for_samples(seeds))
        .collect();
    let probs = net
        .suffix(&Prefix::cat(parts), Mode::MC)
        .softmax(1, Kind::Float);
    // Row order[k] ran at position k of the call.
    let mut at = vec![0; rows.len()];
    for (k, &r) in order.iter().enumerate() {
        at[r] = k as i64;
    }
    for (r, row) in rows.iter().enumerate() {
        let p = probs.narrow(0, at[r], 1);
        if row.view == row.image {
            accs[row.image].add(&p);
        } else {
            accs[row.image].add(&mirror(&p));
        }
    }
}
