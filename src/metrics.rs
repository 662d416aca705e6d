//! Segmentation scores and uncertainty quality, in plain Rust over label slices.
//!
//! [`Confusion`] gives the numbers SegNet reports (global accuracy, class average accuracy,
//! mean IoU). [`UncertaintyStats`] asks whether the model knows when it is wrong: accuracy of
//! the most certain pixels, calibration (ECE, Guo et al. 2017) and PAvPU (Mukhoti & Gal 2018).
//! Both stream: their memory does not grow with the number of pixels.

/// A confusion matrix over `classes` real classes; void pixels are not counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Confusion {
    pub classes: usize,
    /// `counts[gt * classes + pred]`.
    pub counts: Vec<u64>,
}

impl Confusion {
    pub(crate) fn new(classes: usize) -> Self {
        Confusion {
            classes,
            counts: vec![0; classes * classes],
        }
    }

    /// Counts one image (or any set of pixels). Ground-truth values `>= classes` are void and
    /// skipped.
    ///
    /// # Panics
    /// When the slices differ in length or a prediction is `>= classes` (programmer errors).
    pub(crate) fn add(&mut self, gt: &[u8], pred: &[u8]) {
        assert_eq!(gt.len(), pred.len(), "gt and pred differ in length");
        let k = self.classes;
        for (&g, &p) in gt.iter().zip(pred) {
            let (g, p) = (g as usize, p as usize);
            if g >= k {
                continue;
            }
            assert!(p < k, "prediction {p} is not a class (classes = {k})");
            self.counts[g * k + p] += 1;
        }
    }

    /// Adds another matrix's counts (the two sets of pixels scored together).
    pub(crate) fn merge(&mut self, other: &Confusion) {
        assert_eq!(
            self.classes, other.classes,
            "merging confusions of different classes"
        );
        self.counts
            .iter_mut()
            .zip(&other.counts)
            .for_each(|(a, b)| *a += b);
    }

    /// Non-void pixels counted.
    pub(crate) fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn tp(&self, c: usize) -> u64 {
        self.counts[c * self.classes + c]
    }

    fn gt_count(&self, c: usize) -> u64 {
        self.counts[c * self.classes..(c + 1) * self.classes]
            .iter()
            .sum()
    }

    fn pred_count(&self, c: usize) -> u64 {
        (0..self.classes)
            .map(|g| self.counts[g * self.classes + c])
            .sum()
    }

    /// Correct pixels / all pixels (0 when empty).
    pub(crate) fn global_accuracy(&self) -> f64 {
        let correct: u64 = (0..self.classes).map(|c| self.tp(c)).sum();
        ratio(correct, self.total())
    }

    /// Recall per class; `None` for classes absent from the ground truth.
    fn class_accuracy(&self) -> Vec<Option<f64>> {
        (0..self.classes)
            .map(|c| {
                let n = self.gt_count(c);
                (n > 0).then(|| self.tp(c) as f64 / n as f64)
            })
            .collect()
    }

    /// Mean recall over the classes present in the ground truth (0 when none).
    pub(crate) fn class_average_accuracy(&self) -> f64 {
        mean_some(&self.class_accuracy())
    }

    /// Intersection over union per class; `None` when the class is absent from both the ground
    /// truth and the predictions.
    pub(crate) fn iou(&self) -> Vec<Option<f64>> {
        (0..self.classes)
            .map(|c| {
                let union = self.gt_count(c) + self.pred_count(c) - self.tp(c);
                (union > 0).then(|| self.tp(c) as f64 / union as f64)
            })
            .collect()
    }

    /// Mean of the defined IoUs (0 when none).
    pub(crate) fn mean_iou(&self) -> f64 {
        mean_some(&self.iou())
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn mean_some(v: &[Option<f64>]) -> f64 {
    let defined: Vec<f64> = v.iter().flatten().copied().collect();
    if defined.is_empty() {
        0.0
    } else {
        defined.iter().sum::<f64>() / defined.len() as f64
    }
}

/// Uncertainty histogram bins over `[0, max]`.
const UNCERTAINTY_BINS: usize = 4096;
/// Equal-width confidence bins for calibration.
const CALIBRATION_BINS: usize = 15;

/// Streamed statistics of per-pixel uncertainty and confidence against correctness.
///
/// Uncertainty goes into [`UNCERTAINTY_BINS`] equal bins over `[0, max]` (values outside are
/// clamped, NaN counts as `max`), each holding (pixels, correct pixels); quantities derived from
/// it are exact up to one bin and assume values spread evenly inside a bin. Confidence goes into
/// [`CALIBRATION_BINS`] bins `(i/15, (i+1)/15]` holding (pixels, summed confidence, correct).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct UncertaintyStats {
    max: f32,
    total: Vec<u64>,
    correct: Vec<u64>,
    cal_count: [u64; CALIBRATION_BINS],
    cal_conf: [f64; CALIBRATION_BINS],
    cal_correct: [u64; CALIBRATION_BINS],
}

impl UncertaintyStats {
    /// `max`: the largest uncertainty expected (e.g. `ln(classes)` for entropy).
    pub(crate) fn new(max: f32) -> Self {
        assert!(
            max > 0.0 && max.is_finite(),
            "uncertainty range must be positive"
        );
        UncertaintyStats {
            max,
            total: vec![0; UNCERTAINTY_BINS],
            correct: vec![0; UNCERTAINTY_BINS],
            cal_count: [0; CALIBRATION_BINS],
            cal_conf: [0.0; CALIBRATION_BINS],
            cal_correct: [0; CALIBRATION_BINS],
        }
    }

    /// Pixels counted.
    pub(crate) fn count(&self) -> u64 {
        self.total.iter().sum()
    }

    fn bin_width(&self) -> f64 {
        self.max as f64 / UNCERTAINTY_BINS as f64
    }

    fn bin(&self, u: f32) -> usize {
        let b = (u / self.max * UNCERTAINTY_BINS as f32) as isize; // NaN -> 0, fixed below
        if u.is_nan() {
            UNCERTAINTY_BINS - 1
        } else {
            b.clamp(0, UNCERTAINTY_BINS as isize - 1) as usize
        }
    }

    /// Counts one pixel.
    #[inline]
    fn add_pixel(&mut self, uncertainty: f32, confidence: f32, correct: bool) {
        let b = self.bin(uncertainty);
        self.total[b] += 1;
        self.correct[b] += u64::from(correct);
        let conf = confidence.clamp(0.0, 1.0);
        let c = ((conf * CALIBRATION_BINS as f32).ceil() as usize).clamp(1, CALIBRATION_BINS) - 1;
        self.cal_count[c] += 1;
        self.cal_conf[c] += conf as f64;
        self.cal_correct[c] += u64::from(correct);
    }

    /// Counts one image: per pixel its uncertainty, its confidence (the largest mean softmax
    /// probability), the ground truth and the prediction. Pixels whose ground truth is
    /// `>= void` are skipped.
    ///
    /// # Panics
    /// When the four slices differ in length.
    pub(crate) fn add(
        &mut self,
        uncertainty: &[f32],
        confidence: &[f32],
        gt: &[u8],
        pred: &[u8],
        void: u8,
    ) {
        let n = gt.len();
        assert!(
            uncertainty.len() == n && confidence.len() == n && pred.len() == n,
            "uncertainty, confidence, gt and pred differ in length"
        );
        for i in 0..n {
            if gt[i] < void {
                self.add_pixel(uncertainty[i], confidence[i], gt[i] == pred[i]);
            }
        }
    }

    /// Pixel accuracy over the `fraction` (in `(0, 1]`) of pixels with the lowest uncertainty.
    /// A bin cut in part contributes its accuracy pro rata.
    pub(crate) fn accuracy_at_kept(&self, fraction: f64) -> f64 {
        let keep = fraction.clamp(0.0, 1.0) * self.count() as f64;
        if keep <= 0.0 {
            return 0.0;
        }
        let (mut kept, mut correct) = (0.0, 0.0);
        for (&t, &c) in self.total.iter().zip(&self.correct) {
            if t == 0 {
                continue;
            }
            let take = (keep - kept).min(t as f64);
            kept += take;
            correct += c as f64 * take / t as f64;
            if kept >= keep {
                break;
            }
        }
        correct / kept
    }

    /// Expected calibration error: `sum_b n_b / n * |accuracy_b - confidence_b|` over the 15 bins.
    pub(crate) fn ece(&self) -> f64 {
        let n: u64 = self.cal_count.iter().sum();
        if n == 0 {
            return 0.0;
        }
        self.reliability()
            .iter()
            .map(|&(conf, acc, count)| count as f64 / n as f64 * (acc - conf).abs())
            .sum()
    }

    /// Reliability diagram: per confidence bin (mean confidence, accuracy, pixels). Empty bins
    /// read `(bin centre, 0, 0)`.
    pub(crate) fn reliability(&self) -> Vec<(f64, f64, u64)> {
        (0..CALIBRATION_BINS)
            .map(|b| {
                let n = self.cal_count[b];
                if n == 0 {
                    ((b as f64 + 0.5) / CALIBRATION_BINS as f64, 0.0, 0)
                } else {
                    (
                        self.cal_conf[b] / n as f64,
                        ratio(self.cal_correct[b], n),
                        n,
                    )
                }
            })
            .collect()
    }

    /// PAvPU (Mukhoti & Gal 2018), pixel-wise: `(accurate and certain + inaccurate and
    /// uncertain) / n` with uncertain meaning `u >= threshold`. Exact when `threshold` is a bin
    /// edge (as [`quantile`](Self::quantile) returns for whole bins).
    pub(crate) fn pavpu(&self, threshold: f32) -> f64 {
        let n = self.count();
        if n == 0 {
            return 0.0;
        }
        let w = self.bin_width();
        let t = threshold as f64;
        let mut good = 0.0;
        for (b, (&tot, &cor)) in self.total.iter().zip(&self.correct).enumerate() {
            // Share of this bin at or above the threshold.
            let lo = b as f64 * w;
            let uncertain = ((lo + w - t) / w).clamp(0.0, 1.0);
            let (cor, wrong) = (cor as f64, (tot - cor) as f64);
            good += cor * (1.0 - uncertain) + wrong * uncertain;
        }
        good / n as f64
    }

    /// The uncertainty below which a fraction `q` of the pixels lie, interpolated inside the bin.
    pub(crate) fn quantile(&self, q: f64) -> f32 {
        let want = q.clamp(0.0, 1.0) * self.count() as f64;
        let w = self.bin_width();
        let mut seen = 0.0;
        for (b, &t) in self.total.iter().enumerate() {
            let t = t as f64;
            if t > 0.0 && seen + t >= want {
                return ((b as f64 + (want - seen) / t) * w) as f32;
            }
            seen += t;
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// gt/pred pairs giving the matrix (rows gt, columns pred)
    /// [[3, 1, 0], [0, 2, 2], [1, 0, 1]], plus two void pixels.
    fn three_class() -> (Vec<u8>, Vec<u8>) {
        let mut gt = Vec::new();
        let mut pred = Vec::new();
        let m = [[3, 1, 0], [0, 2, 2], [1, 0, 1]];
        for (g, row) in m.iter().enumerate() {
            for (p, &n) in row.iter().enumerate() {
                for _ in 0..n {
                    gt.push(g as u8);
                    pred.push(p as u8);
                }
            }
        }
        gt.extend([3, 3]);
        pred.extend([0, 2]);
        (gt, pred)
    }

    #[test]
    fn merged_confusions_score_like_one_pass_over_both() {
        let (gt, pred) = three_class();
        let (mut a, mut b, mut both) = (Confusion::new(3), Confusion::new(3), Confusion::new(3));
        a.add(&gt[..5], &pred[..5]);
        b.add(&gt[5..], &pred[5..]);
        both.add(&gt, &pred);
        a.merge(&b);
        assert_eq!(a, both);
    }

    #[test]
    fn confusion_scores_match_hand_computation() {
        let (gt, pred) = three_class();
        let mut c = Confusion::new(3);
        c.add(&gt, &pred);
        assert_eq!(c.counts, vec![3, 1, 0, 0, 2, 2, 1, 0, 1]);
        assert_eq!(c.total(), 10); // void skipped
        assert!(close(c.global_accuracy(), 6.0 / 10.0));
        assert!(close(
            c.class_average_accuracy(),
            (3.0 / 4.0 + 2.0 / 4.0 + 1.0 / 2.0) / 3.0
        ));
        // IoU: tp / (row + col - tp).
        let want = [
            3.0 / (4.0 + 4.0 - 3.0),
            2.0 / (4.0 + 3.0 - 2.0),
            1.0 / (2.0 + 3.0 - 1.0),
        ];
        let iou = c.iou();
        for (got, want) in iou.iter().zip(want) {
            assert!(close(got.unwrap(), want), "{iou:?}");
        }
        assert!(close(c.mean_iou(), want.iter().sum::<f64>() / 3.0));
    }

    #[test]
    fn absent_class_has_no_iou_and_no_accuracy() {
        let mut c = Confusion::new(3);
        c.add(&[0, 0, 1], &[0, 1, 1]);
        assert_eq!(c.iou()[2], None);
        assert_eq!(c.class_accuracy()[2], None);
        assert!(close(c.mean_iou(), (0.5 + 0.5) / 2.0));
        assert!(close(c.class_average_accuracy(), (0.5 + 1.0) / 2.0));
        // Predicted but absent from the ground truth: IoU 0, no accuracy.
        c.add(&[0], &[2]);
        assert_eq!(c.iou()[2], Some(0.0));
        assert_eq!(c.class_accuracy()[2], None);
    }

    /// Six pixels, uncertainty in [0, 1]: the three most certain are right, then wrong, right,
    /// wrong.
    fn six() -> UncertaintyStats {
        let mut s = UncertaintyStats::new(1.0);
        let u = [0.05, 0.15, 0.25, 0.55, 0.65, 0.95];
        let conf = [0.95, 0.9, 0.8, 0.6, 0.55, 0.4];
        let gt = [0, 1, 2, 0, 1, 2, 3];
        let pred = [0, 1, 2, 1, 1, 0, 3];
        s.add(
            &[&u[..], &[0.0]].concat(),
            &[&conf[..], &[1.0]].concat(),
            &gt,
            &pred,
            3,
        );
        s
    }

    #[test]
    fn accuracy_at_kept_uses_the_most_certain_pixels() {
        let s = six();
        assert_eq!(s.count(), 6); // void skipped
        assert!(close(s.accuracy_at_kept(0.5), 1.0));
        assert!(close(s.accuracy_at_kept(4.0 / 6.0), 3.0 / 4.0));
        assert!(close(s.accuracy_at_kept(5.0 / 6.0), 4.0 / 5.0));
        assert!(close(s.accuracy_at_kept(1.0), 4.0 / 6.0));
    }

    #[test]
    fn ece_matches_hand_computation() {
        let s = six();
        // Bins (i/15, (i+1)/15]: 0.95 -> 14, 0.9 -> 13, 0.8 -> 11, 0.6 -> 8, 0.55 -> 8, 0.4 -> 5.
        // |acc - conf| per bin: 0.05, 0.1, 0.2, |0.5 - 0.575|, 0.4, weighted by 1,1,1,2,1 / 6.
        let want = (0.05 + 0.1 + 0.2 + 2.0 * 0.075 + 0.4) / 6.0;
        assert!((s.ece() - want).abs() < 1e-6, "{}", s.ece());
        let r = s.reliability();
        assert_eq!(r.len(), 15);
        assert_eq!(r[8].2, 2);
        assert!((r[8].0 - 0.575).abs() < 1e-6 && close(r[8].1, 0.5));
    }

    #[test]
    fn pavpu_matches_hand_computation() {
        let s = six();
        // Threshold 0.5: certain = {0.05, 0.15, 0.25} all accurate (3); uncertain = {0.55 wrong,
        // 0.65 right, 0.95 wrong} -> 2 inaccurate-uncertain. (3 + 2) / 6.
        assert!(close(s.pavpu(0.5), 5.0 / 6.0));
        // Threshold 0.2: certain {0.05, 0.15} accurate (2), uncertain wrong (2) -> 4 / 6.
        assert!(close(s.pavpu(0.2), 4.0 / 6.0));
        // Everything uncertain: only the wrong pixels count.
        assert!(close(s.pavpu(0.0), 2.0 / 6.0));
    }

    #[test]
    fn quantile_reads_the_histogram() {
        let s = six();
        // Half the pixels lie below the end of the 0.25 bin.
        let median = s.quantile(0.5);
        let w = 1.0 / UNCERTAINTY_BINS as f32;
        assert!(median > 0.25 - w && median <= 0.25 + w, "{median}");
        assert!(close(s.pavpu(median), 3.0 / 6.0 + 2.0 / 6.0));
        let lowest = s.quantile(0.0);
        assert!(lowest <= 0.05 && lowest > 0.05 - w, "{lowest}");
        let highest = s.quantile(1.0);
        assert!(highest > 0.95 && highest <= 0.95 + w, "{highest}");
    }
}
