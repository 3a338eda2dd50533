//! Cells, learning-rate grid and seeds: runs every optimizer of the study with the crate's
//! kernels and picks each cell's best learning rate.
//!
//! **Coordinates.** For a basis `U` the optimizer state and the parameters live in rotated
//! coordinates `w~ = U^T w`: each step computes the gradient `g` at `w = U w~` (`rotate_out`),
//! rotates it in (`g~ = U^T g`, `rotate_into`) and runs the kernel on `(w~, g~)`, so `m`, `v` and
//! `h` are all in rotated coordinates. For a fixed `U` this is exactly the step
//! `w <- w - lr U D U^T m`. When the logistic task refreshes its basis (`U_old -> U_new`), `w~`
//! and `m` (both linear) are carried through the change of basis `U_new^T U_old`; Adam's `v` stays
//! indexed by eigenvalue rank (SOAP's choice), and the GN diagonal `h` is recomputed.
//!
//! **Optimizers** share the first moment (`beta1 = 0.9`, bias corrected) and differ only in the
//! diagonal: Adam `1 / (sqrt(v_hat) + eps)` (`beta2 = 0.999`, `eps = 1e-8`), GN^-1
//! `(h + lambda)^-1`, GN^-1/2 `(h + lambda)^-1/2` (`lambda = 1e-8`).
//!
//! **GN matrices.** Linear regression: the exact GN of the training loss, `X^T X / N` (the same in
//! both batch regimes; only the gradient is noisy). Logistic regression: `X^T diag(s(1-s)) X / N`
//! at the current parameters, recomputed every `gn_every` steps, from the whole training set
//! (full batch) or from a separate batch of `gn_batch` samples drawn independently of the
//! gradient batch (small batch); in the eigenbasis cells the basis is refreshed from the same
//! matrix every `basis_every` steps.

use super::tasks::{mix_seed, sigmoid, Task, TaskKind};
use diagprec::{
    adam_step_with, gn_diag_logistic_with, gn_diag_weighted_in_basis_with, gn_diag_weighted_with,
    gn_step_with, logistic_weight, AdamConfig, AdamTensor, DenseBasis, Geodesic, GnConfig,
    GnMatrix, Isa, Par,
};
use faer::linalg::matmul::matmul;
use faer::reborrow::ReborrowMut;
use faer::{Accum, Mat, MatMut, MatRef};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The three diagonal preconditioners.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Opt {
    Adam,
    Gn1,
    GnHalf,
}

impl Opt {
    pub const ALL: [Opt; 3] = [Opt::Adam, Opt::Gn1, Opt::GnHalf];
    pub fn name(self) -> &'static str {
        match self {
            Opt::Adam => "adam",
            Opt::Gn1 => "gn-1",
            Opt::GnHalf => "gn-1/2",
        }
    }
}

/// Which basis a cell runs in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BasisChoice {
    Identity,
    Eigen,
    /// Point `k` of the geodesic sweep (`t = k / (points - 1)`).
    Geodesic(usize),
}

impl BasisChoice {
    pub fn name(self) -> String {
        match self {
            BasisChoice::Identity => "identity".into(),
            BasisChoice::Eigen => "eigen".into(),
            BasisChoice::Geodesic(k) => format!("geodesic-{k}"),
        }
    }
}

/// Full batch or small batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Batch {
    Full,
    Small,
}

impl Batch {
    pub fn name(self) -> &'static str {
        match self {
            Batch::Full => "full",
            Batch::Small => "small",
        }
    }
    fn tag(self) -> u64 {
        match self {
            Batch::Full => 11,
            Batch::Small => 12,
        }
    }
}

/// Everything that sets the study's budget.
#[derive(Clone, Debug)]
pub struct StudyConfig {
    pub seeds: usize,
    pub base_seed: u64,
    pub steps_full: usize,
    /// `linreg-block` full-batch runs take this many steps (Adam's advantage over the GN
    /// diagonal, which is the unit diagonal there, shows only after the well-conditioned
    /// directions are fitted).
    pub steps_block_full: usize,
    pub steps_small: usize,
    /// Logistic regression runs take this many steps (full batch; small batch takes 4x).
    pub steps_logreg_full: usize,
    pub batch_size: usize,
    pub batch_size_logreg: usize,
    /// Learning rates: `10^(k / per_decade)` for `k` in `lr_min_exp * per_decade ..=
    /// lr_max_exp * per_decade`.
    pub lr_per_decade: usize,
    pub lr_min_exp: i32,
    pub lr_max_exp: i32,
    pub record_every_small: usize,
    pub gn_every: usize,
    pub basis_every: usize,
    pub gn_batch: usize,
    /// `steps_to_target`: first step whose loss is below `target * initial loss`.
    pub target_full: f64,
    pub target_small: f64,
    pub geodesic_points: usize,
    /// Monte Carlo batches for the second-moment check.
    pub mc_batches: usize,
}

impl StudyConfig {
    pub fn default_run() -> Self {
        Self {
            seeds: 5,
            base_seed: 2025,
            steps_full: 200,
            steps_block_full: 400,
            steps_small: 2000,
            steps_logreg_full: 300,
            batch_size: 8,
            batch_size_logreg: 16,
            lr_per_decade: 3,
            lr_min_exp: -4,
            lr_max_exp: 2,
            record_every_small: 10,
            gn_every: 10,
            basis_every: 50,
            gn_batch: 512,
            target_full: 1e-3,
            target_small: 1e-1,
            geodesic_points: 6,
            mc_batches: 20_000,
        }
    }

    pub fn quick() -> Self {
        Self {
            seeds: 3,
            steps_full: 200,
            steps_small: 1000,
            steps_logreg_full: 150,
            lr_per_decade: 2,
            mc_batches: 4_000,
            ..Self::default_run()
        }
    }

    pub fn lr_grid(&self) -> Vec<f64> {
        let k0 = self.lr_min_exp * self.lr_per_decade as i32;
        let k1 = self.lr_max_exp * self.lr_per_decade as i32;
        (k0..=k1)
            .map(|k| 10f64.powf(k as f64 / self.lr_per_decade as f64))
            .collect()
    }

    pub fn steps(&self, kind: TaskKind, batch: Batch) -> usize {
        match (kind.is_linear(), batch) {
            (true, Batch::Full) if kind == TaskKind::LinregBlock => self.steps_block_full,
            (true, Batch::Full) => self.steps_full,
            (true, Batch::Small) => self.steps_small,
            (false, Batch::Full) => self.steps_logreg_full,
            (false, Batch::Small) => 4 * self.steps_logreg_full,
        }
    }

    /// Steps between two evaluations of the (full training set) loss.
    pub fn record_every(&self, kind: TaskKind, batch: Batch) -> usize {
        match (kind.is_linear(), batch) {
            (true, Batch::Full) => 1,
            (false, Batch::Full) => 5,
            (_, Batch::Small) => self.record_every_small,
        }
    }

    pub fn batch_size_for(&self, kind: TaskKind) -> usize {
        if kind.is_linear() {
            self.batch_size
        } else {
            self.batch_size_logreg
        }
    }

    pub fn target(&self, batch: Batch) -> f64 {
        match batch {
            Batch::Full => self.target_full,
            Batch::Small => self.target_small,
        }
    }
}

/// A basis with the (fixed) GN diagonal of linear regression in it.
#[derive(Clone, Debug)]
pub struct PreparedBasis {
    /// `None`: the identity (no rotation is done).
    pub basis: Option<DenseBasis>,
    /// `diag(U^T A U)` for linear regression (unused by the logistic task).
    pub h: Vec<f32>,
}

/// One generated task with its bases.
#[derive(Clone, Debug)]
pub struct Instance {
    pub task: Task,
    pub seed_index: usize,
    pub identity: PreparedBasis,
    pub eigen: PreparedBasis,
    /// Geodesic points identity -> eigenbasis (linreg-gauss only).
    pub geodesic: Vec<PreparedBasis>,
}

fn gn_diag_in(task: &Task, basis: Option<&DenseBasis>) -> Vec<f32> {
    let d = task.dim;
    let mut h = vec![0.0f32; d];
    let isa = Isa::detect();
    match basis {
        None => gn_diag_weighted_with(
            isa,
            Par::Seq,
            &task.x,
            task.n_samples,
            d,
            d,
            None,
            0.0,
            &mut h,
        ),
        Some(b) => gn_diag_weighted_in_basis_with(
            isa,
            Par::Seq,
            &task.x,
            task.n_samples,
            d,
            d,
            None,
            b.matrix(),
            0.0,
            &mut h,
        ),
    }
    .expect("GN diagonal of a well-formed task");
    h
}

fn to_f32(a: &Mat<f64>) -> Mat<f32> {
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| a[(i, j)] as f32)
}

impl Instance {
    pub fn new(task: Task, seed_index: usize, geodesic_points: usize) -> Self {
        // The GN matrix at w0 = 0: X^T X / N (linear), X^T X / (4N) (logistic: same vectors).
        let (eig, _eigenvalues) =
            DenseBasis::from_symmetric(to_f32(&task.a).as_ref()).expect("eigh of the GN matrix");
        let identity = PreparedBasis {
            h: gn_diag_in(&task, None),
            basis: None,
        };
        let eigen = PreparedBasis {
            h: gn_diag_in(&task, Some(&eig)),
            basis: Some(eig),
        };
        let mut geodesic = Vec::new();
        if task.kind == TaskKind::LinregGauss && geodesic_points >= 2 {
            let d = task.dim;
            let id = Mat::<f32>::identity(d, d);
            let path = Geodesic::new(id.as_ref(), eigen.basis.as_ref().unwrap().matrix())
                .expect("geodesic");
            for k in 0..geodesic_points {
                let t = k as f64 / (geodesic_points - 1) as f64;
                let b = path.at(t).expect("geodesic point");
                geodesic.push(PreparedBasis {
                    h: gn_diag_in(&task, Some(&b)),
                    basis: Some(b),
                });
            }
        }
        Self {
            task,
            seed_index,
            identity,
            eigen,
            geodesic,
        }
    }

    pub fn prepared(&self, choice: BasisChoice) -> &PreparedBasis {
        match choice {
            BasisChoice::Identity => &self.identity,
            BasisChoice::Eigen => &self.eigen,
            BasisChoice::Geodesic(k) => &self.geodesic[k],
        }
    }
}

/// One cell of the study (everything but the learning rate and the seed).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cell {
    pub task: TaskKind,
    pub basis: BasisChoice,
    pub batch: Batch,
    pub opt: Opt,
}

/// What one run records.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// `(step, excess loss)` at step 0 and every `record_every` steps up to the last.
    pub curve: Vec<(usize, f64)>,
    pub final_loss: f64,
    pub steps_to_target: Option<usize>,
}

/// A snapshot of Adam's state for the second-moment diagnostic.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub step: usize,
    /// Parameters in the original coordinates.
    pub w: Vec<f32>,
    /// Bias-corrected second moment, in rotated coordinates.
    pub v_hat: Vec<f64>,
    pub loss: f64,
}

/// Gradient of the training loss at `w` over `rows` (all rows when `None`). `scratch` holds
/// `n_samples` floats for the full-batch logistic pass.
fn gradient(
    task: &Task,
    w: &[f32],
    rows: Option<&[usize]>,
    g: &mut [f32],
    acc: &mut [f64],
    scratch: &mut [f32],
) {
    let d = task.dim;
    match rows {
        Some(rows) => {
            acc.iter_mut().for_each(|a| *a = 0.0);
            for &r in rows {
                let x = task.row(r);
                let z: f64 = x.iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum();
                let resid = match task.kind {
                    TaskKind::LogregImbalanced => sigmoid(z) - task.y[r] as f64,
                    _ => z - task.y[r] as f64,
                };
                for (a, &xv) in acc.iter_mut().zip(x) {
                    *a += resid * xv as f64;
                }
            }
            for (gi, &a) in g.iter_mut().zip(acc.iter()) {
                *gi = (a / rows.len() as f64) as f32;
            }
        }
        None if task.kind.is_linear() => {
            // Full batch linear regression: the exact gradient A w - b from the sufficient
            // statistics (the same vector as the pass over all rows, d^2 instead of N d work).
            for (i, (gi, &bi)) in g.iter_mut().zip(&task.b).enumerate() {
                let aw: f64 = (0..d).map(|j| task.a[(i, j)] * w[j] as f64).sum();
                *gi = (aw - bi) as f32;
            }
        }
        None => {
            // Full batch logistic regression: z = X w, r = sigmoid(z) - y, g = X^T r / N, two
            // f32 GEMVs (faer, sequential).
            let n = task.n_samples;
            let x = MatRef::from_row_major_slice(&task.x, n, d);
            let wc = MatRef::from_column_major_slice(w, d, 1);
            let mut z = MatMut::from_column_major_slice_mut(scratch, n, 1);
            matmul(z.rb_mut(), Accum::Replace, x, wc, 1.0f32, faer::Par::Seq);
            for (zr, &y) in scratch.iter_mut().zip(&task.y) {
                *zr = sigmoid(*zr as f64) as f32 - y;
            }
            let r = MatRef::from_column_major_slice(scratch, n, 1);
            let gm = MatMut::from_column_major_slice_mut(g, d, 1);
            matmul(
                gm,
                Accum::Replace,
                x.transpose(),
                r,
                1.0 / n as f32,
                faer::Par::Seq,
            );
        }
    }
}

/// Logits `x.w` of the GN rows, packed (`rows = None`: the whole training set, not copied).
fn logistic_gn_rows(task: &Task, w: &[f32], rows: Option<&[usize]>, xs: &mut Vec<f32>) -> Vec<f32> {
    let logit = |r: usize| -> f32 {
        let z: f64 = task
            .row(r)
            .iter()
            .zip(w)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum();
        z as f32
    };
    xs.clear();
    match rows {
        None => (0..task.n_samples).map(logit).collect(),
        Some(rows) => rows
            .iter()
            .map(|&r| {
                xs.extend_from_slice(task.row(r));
                logit(r)
            })
            .collect(),
    }
}

/// Runs one (cell, learning rate, seed). `snapshots`: steps at which to record Adam's state.
pub fn run_one(
    cfg: &StudyConfig,
    inst: &Instance,
    cell: Cell,
    lr: f64,
    snapshot_steps: &[usize],
    snapshots: &mut Vec<Snapshot>,
) -> RunResult {
    let task = &inst.task;
    let d = task.dim;
    let steps = cfg.steps(task.kind, cell.batch);
    let record_every = cfg.record_every(task.kind, cell.batch);
    let batch_size = cfg.batch_size_for(task.kind);
    let prepared = inst.prepared(cell.basis);
    let mut basis: Option<DenseBasis> = prepared.basis.clone();
    let mut h = prepared.h.clone();
    let linear = task.kind.is_linear();
    // Common random numbers: the batch sequence depends on the task instance and the batch
    // regime only, so every optimizer, basis and learning rate sees the same batches.
    let mut rng = StdRng::seed_from_u64(mix_seed(&[
        cfg.base_seed,
        inst.seed_index as u64,
        cell.batch.tag(),
        0xBA7C,
    ]));
    let mut gn_rng = StdRng::seed_from_u64(mix_seed(&[
        cfg.base_seed,
        inst.seed_index as u64,
        cell.batch.tag(),
        0x6E,
    ]));
    let isa = Isa::detect();
    let adam = AdamConfig {
        lr,
        ..AdamConfig::default()
    };
    let gn = GnConfig {
        lr,
        power: if cell.opt == Opt::Gn1 { -1.0 } else { -0.5 },
        damping: 1e-8,
        beta1: 0.9,
        bias_correction: true,
        ..GnConfig::default()
    };

    let mut w = vec![0.0f32; d];
    let mut w_rot = vec![0.0f32; d];
    let mut m = vec![0.0f32; d];
    let mut v = vec![0.0f32; d];
    let mut g = vec![0.0f32; d];
    let mut g_rot = vec![0.0f32; d];
    let mut acc = vec![0.0f64; d];
    let mut tmp = vec![0.0f32; d];
    let mut rows = vec![0usize; batch_size];
    let mut packed: Vec<f32> = Vec::new();
    let mut scratch = vec![0.0f32; if linear { 0 } else { task.n_samples }];
    let mut gn_matrix = GnMatrix::new(d);

    let loss0 = task.excess_loss(&w);
    let target = cfg.target(cell.batch) * loss0;
    let mut curve = vec![(0usize, loss0)];
    let mut steps_to_target = None;
    let mut diverged = false;

    for t in 1..=steps {
        // Logistic regression: refresh the GN diagonal (and the eigenbasis) on schedule.
        if !linear && (t - 1) % cfg.gn_every == 0 {
            if w.iter().any(|x| !x.is_finite()) {
                diverged = true;
                break;
            }
            let gn_rows: Option<Vec<usize>> = match cell.batch {
                Batch::Full => None,
                Batch::Small => Some(
                    (0..cfg.gn_batch)
                        .map(|_| gn_rng.random_range(0..task.n_samples))
                        .collect(),
                ),
            };
            let logits = logistic_gn_rows(task, &w, gn_rows.as_deref(), &mut packed);
            let n = logits.len();
            let xs: &[f32] = if gn_rows.is_some() { &packed } else { &task.x };
            let weights: Vec<f32> = logits
                .iter()
                .map(|&z| logistic_weight(z as f64) as f32)
                .collect();
            let refresh_basis =
                cell.basis == BasisChoice::Eigen && t > 1 && (t - 1) % cfg.basis_every == 0;
            if refresh_basis {
                gn_matrix
                    .accumulate(xs, n, d, Some(&weights), 0.0, Par::Seq)
                    .expect("GN matrix");
                let Ok((new_basis, _)) = DenseBasis::from_symmetric(gn_matrix.matrix()) else {
                    // Only a run whose parameters blew up gets here: count it as diverged.
                    diverged = true;
                    break;
                };
                let old = basis.take().expect("eigen cells have a basis");
                // Carry w~ and m through U_new^T U_old.
                old.rotate_out_with(Par::Seq, &m, &mut tmp, false)
                    .expect("rotate");
                new_basis
                    .rotate_into_with(Par::Seq, &tmp, &mut m, false)
                    .expect("rotate");
                new_basis
                    .rotate_into_with(Par::Seq, &w, &mut w_rot, false)
                    .expect("rotate");
                basis = Some(new_basis);
            }
            match &basis {
                None => gn_diag_logistic_with(isa, Par::Seq, xs, n, d, d, &logits, 0.0, &mut h),
                Some(b) => gn_diag_weighted_in_basis_with(
                    isa,
                    Par::Seq,
                    xs,
                    n,
                    d,
                    d,
                    Some(&weights),
                    b.matrix(),
                    0.0,
                    &mut h,
                ),
            }
            .expect("GN diagonal");
        }

        let batch_rows = match cell.batch {
            Batch::Full => None,
            Batch::Small => {
                rows.iter_mut()
                    .for_each(|r| *r = rng.random_range(0..task.n_samples));
                Some(rows.as_slice())
            }
        };
        gradient(task, &w, batch_rows, &mut g, &mut acc, &mut scratch);
        match &basis {
            None => g_rot.copy_from_slice(&g),
            Some(b) => b
                .rotate_into_with(Par::Seq, &g, &mut g_rot, false)
                .expect("rotate"),
        }
        let stepped = match cell.opt {
            Opt::Adam => adam_step_with(
                isa,
                Par::Seq,
                &adam,
                t as u64,
                AdamTensor {
                    param: &mut w_rot,
                    grad: &g_rot,
                    exp_avg: &mut m,
                    exp_avg_sq: &mut v,
                    max_exp_avg_sq: None,
                },
            ),
            Opt::Gn1 | Opt::GnHalf => gn_step_with(
                isa,
                Par::Seq,
                &gn,
                t as u64,
                &mut w_rot,
                &g_rot,
                Some(&mut m),
                &h,
            ),
        };
        stepped.expect("optimizer step");
        match &basis {
            None => w.copy_from_slice(&w_rot),
            Some(b) => b
                .rotate_out_with(Par::Seq, &w_rot, &mut w, false)
                .expect("rotate"),
        }

        if snapshot_steps.contains(&t) {
            let bc2 = 1.0 - adam.beta2.powi(t as i32);
            snapshots.push(Snapshot {
                step: t,
                w: w.clone(),
                v_hat: v.iter().map(|&x| x as f64 / bc2).collect(),
                loss: task.excess_loss(&w),
            });
        }
        if t % record_every == 0 || t == steps {
            let loss = task.excess_loss(&w);
            if !loss.is_finite() || loss > 1e6 * loss0.max(1e-30) {
                diverged = true;
                break;
            }
            if steps_to_target.is_none() && loss <= target {
                steps_to_target = Some(t);
            }
            curve.push((t, loss));
        }
    }
    let final_loss = if diverged {
        f64::INFINITY
    } else {
        // The mean over the last 10% of the run (a noise-robust final value).
        let start = steps - steps / 10;
        let tail: Vec<f64> = curve
            .iter()
            .filter(|(s, _)| *s >= start)
            .map(|&(_, l)| l)
            .collect();
        tail.iter().sum::<f64>() / tail.len() as f64
    };
    RunResult {
        curve,
        final_loss,
        steps_to_target,
    }
}

/// Median of finite-or-infinite values (NaN never occurs: diverged runs are +inf).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}
