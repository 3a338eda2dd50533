//! # Global gradient norm
//!
//! **Norm** (multi-tensor, like `torch.nn.utils.clip_grad_norm_` with `norm_type = 2`):
//!
//! ```text
//! norm  = sqrt( sum_tensors sum_i (g_i * inv_grad_scale)^2 )
//! found_inf = any g_i * inv_grad_scale is NaN or +-Inf
//! ```
//!
//! Each gradient is cut into pieces of `BLOCK` (16384) elements. Inside a piece, squares are summed in
//! f32 by four register accumulators over runs of 256 elements, and each run's sum is added to an
//! f64 total (so the f32 rounding never accumulates over more than 256 terms); the pieces' f64
//! totals are combined along a binary tree fixed by the number of pieces. The f64 norm is
//! therefore bitwise identical for any thread count (on a given ISA; ISAs differ in the lane
//! order of the f32 partial sums, by a few f32 ulp of a run's sum).
//!
//! The two-pass clipped Adam steps built on this norm are in [`crate::kernels::adam::clipped`].
//!
//! **Reference**: [`crate::reference::grad_norm`] (`tests/adam.rs`).

use super::adam::BLOCK;
use super::adam_mixed::master::{widen_into, HalfFormat};
use super::map::scale;
use crate::dispatch::{self, Isa, Par, Split};
use crate::error::{self, Result};
use pulp::{Simd, WithSimd};

/// Elements summed in f32 before the partial sum joins the f64 total.
const RUN: usize = 256;

/// The result of the norm pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradNorm {
    /// The global L2 norm of the unscaled gradients (NaN or infinite when `found_inf`).
    pub norm: f64,
    /// Whether any unscaled gradient value is NaN or infinite.
    pub found_inf: bool,
}

/// The gradient values of a norm pass: f32, or 16-bit bits widened exactly, which give the norm
/// of the widened values, bit for bit.
#[derive(Clone, Copy)]
pub(crate) enum Values<'a> {
    F32(&'a [f32]),
    Half(HalfFormat, &'a [u16]),
}

impl<'a> Values<'a> {
    fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::Half(_, v) => v.len(),
        }
    }

    /// Pieces of at most `block` elements.
    fn pieces(self, block: usize) -> impl Iterator<Item = Values<'a>> {
        let n = self.len();
        (0..n).step_by(block).map(move |start| {
            let end = (start + block).min(n);
            match self {
                Values::F32(v) => Values::F32(&v[start..end]),
                Values::Half(f, v) => Values::Half(f, &v[start..end]),
            }
        })
    }
}

/// The norm scan of one piece (`F16`: 16-bit values are IEEE binary16, else bf16).
struct NormScan<'a, const F16: bool> {
    values: Values<'a>,
    scale: f32,
}

/// `acc + x * x` and `nan_acc + x * 0` for `x = g * scale`.
#[inline(always)]
fn norm_lane<S: Simd>(
    simd: S,
    [acc, nan_acc]: [S::f32s; 2],
    g: S::f32s,
    scale: S::f32s,
) -> [S::f32s; 2] {
    let x = simd.mul_f32s(g, scale);
    [
        simd.mul_add_f32s(x, x, acc),
        simd.mul_add_f32s(x, simd.splat_f32s(0.0), nan_acc),
    ]
}

/// One run's sum of squares (f32, four accumulators) and the running NaN accumulator.
#[inline(always)]
fn run_norm<S: Simd>(simd: S, run: &[f32], scale: S::f32s, nan_acc: S::f32s) -> (f32, S::f32s) {
    let zero = simd.splat_f32s(0.0);
    let (body, tail) = S::as_simd_f32s(run);
    // PERF: four independent accumulators hide the FMA latency.
    let mut acc = [[zero, nan_acc], [zero, zero], [zero, zero], [zero, zero]];
    let (quads, rest) = pulp::as_arrays::<4, _>(body);
    for quad in quads {
        for k in 0..4 {
            acc[k] = norm_lane(simd, acc[k], quad[k], scale);
        }
    }
    for &g in rest {
        acc[0] = norm_lane(simd, acc[0], g, scale);
    }
    // Zero padding adds nothing to either sum: the tail runs the same lane function.
    acc[1] = norm_lane(simd, acc[1], simd.partial_load_f32s(tail), scale);
    let sum = simd.add_f32s(
        simd.add_f32s(acc[0][0], acc[1][0]),
        simd.add_f32s(acc[2][0], acc[3][0]),
    );
    let nan_acc = simd.add_f32s(
        simd.add_f32s(acc[0][1], acc[1][1]),
        simd.add_f32s(acc[2][1], acc[3][1]),
    );
    (simd.reduce_sum_f32s(sum), nan_acc)
}

impl<const F16: bool> WithSimd for NormScan<'_, F16> {
    type Output = (f64, bool);

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> (f64, bool) {
        let scale = simd.splat_f32s(self.scale);
        let mut total = 0.0f64;
        let mut nan_acc = simd.splat_f32s(0.0);
        match self.values {
            Values::F32(values) => {
                for run in values.chunks(RUN) {
                    let (sum, acc) = run_norm(simd, run, scale, nan_acc);
                    (total, nan_acc) = (total + sum as f64, acc);
                }
            }
            Values::Half(_, values) => {
                // Each run widened into an L1 buffer, then summed as the f32 runs are.
                let mut buf = [0.0f32; RUN];
                for run in values.chunks(RUN) {
                    let wide = &mut buf[..run.len()];
                    widen_into::<S, F16>(simd, run, wide);
                    let (sum, acc) = run_norm(simd, wide, scale, nan_acc);
                    (total, nan_acc) = (total + sum as f64, acc);
                }
            }
        }
        (total, simd.reduce_sum_f32s(nan_acc) == 0.0)
    }
}

/// The sum of squares and finiteness of one piece, on the calling thread.
fn norm_of_piece(isa: Isa, values: Values<'_>, scale: f32) -> (f64, bool) {
    match values {
        Values::Half(HalfFormat::F16, _) => isa.run(NormScan::<true> { values, scale }),
        _ => isa.run(NormScan::<false> { values, scale }),
    }
}

/// The global L2 norm of `grads * inv_grad_scale` and whether any value is non-finite, on the
/// best instruction set and the crate's pool. `inv_grad_scale` must be finite and > 0.
pub fn grad_norm_multi(grads: &[&[f32]], inv_grad_scale: f64) -> Result<GradNorm> {
    grad_norm_multi_with(Isa::detect(), Par::Pool, grads, inv_grad_scale)
}

/// [`grad_norm_multi`] on a chosen instruction set and parallelism.
pub fn grad_norm_multi_with(
    isa: Isa,
    par: Par,
    grads: &[&[f32]],
    inv_grad_scale: f64,
) -> Result<GradNorm> {
    check_inv_grad_scale(inv_grad_scale)?;
    let grads = grads.iter().map(|&g| Values::F32(g));
    norm_pass(isa, par, grads, inv_grad_scale as f32)
}

/// [`grad_norm_multi`] of 16-bit gradients (bits of `format`): bitwise the norm of the widened
/// values.
pub fn grad_norm_multi_half(
    format: HalfFormat,
    grads: &[&[u16]],
    inv_grad_scale: f64,
) -> Result<GradNorm> {
    grad_norm_multi_half_with(Isa::detect(), Par::Pool, format, grads, inv_grad_scale)
}

/// [`grad_norm_multi_half`] on a chosen instruction set and parallelism.
pub fn grad_norm_multi_half_with(
    isa: Isa,
    par: Par,
    format: HalfFormat,
    grads: &[&[u16]],
    inv_grad_scale: f64,
) -> Result<GradNorm> {
    check_inv_grad_scale(inv_grad_scale)?;
    let grads = grads.iter().map(|&g| Values::Half(format, g));
    norm_pass(isa, par, grads, inv_grad_scale as f32)
}

pub(crate) fn norm_pass<'a>(
    isa: Isa,
    par: Par,
    grads: impl Iterator<Item = Values<'a>>,
    scale: f32,
) -> Result<GradNorm> {
    let pieces: Vec<Values<'_>> = grads.flat_map(|g| g.pieces(BLOCK)).collect();
    let (sum, finite) = dispatch::map_reduce_blocks(
        par,
        &pieces[..],
        1,
        &|list: &[Values<'_>]| {
            list.iter().fold((0.0, true), |(s, f), &values| {
                let (s2, f2) = norm_of_piece(isa, values, scale);
                (s + s2, f && f2)
            })
        },
        &|a, b| (a.0 + b.0, a.1 && b.1),
    )?;
    Ok(GradNorm {
        norm: sum.sqrt(),
        found_inf: !finite,
    })
}

/// PyTorch's clip coefficient: `min(1, max_grad_norm / (norm + 1e-6))`.
pub fn clip_coefficient(norm: f64, max_grad_norm: f64) -> f64 {
    (max_grad_norm / (norm + 1e-6)).min(1.0)
}

/// Checks `inv_grad_scale`: finite and > 0, and so as the f32 factor the kernels multiply by
/// (1e39 would round to infinity, 1e-46 to zero).
pub(crate) fn check_inv_grad_scale(inv_grad_scale: f64) -> Result<()> {
    error::check_positive("inv_grad_scale", inv_grad_scale)?;
    error::check_f32("inv_grad_scale", inv_grad_scale, true)
}

/// `values *= factor` in place (an in-place unscale or clip: the building block of the unfused
/// sequence the report compares the two-pass step with).
pub fn scale_in_place(isa: Isa, par: Par, values: &mut [f32], factor: f32) -> Result<()> {
    dispatch::map_reduce_blocks(
        par,
        values,
        BLOCK,
        &|values: &mut [f32]| scale(isa, values, factor),
        &|(), ()| (),
    )
}

// ---------------------------------------------------------------------------------------------
// Pieces for a caller that holds the gradients in shards (ZeRO stage 1 over MPI, see
// examples/mpi): the per-piece partial sums of squares, their combination in the library's
// fixed order, and the step with a norm computed elsewhere.

/// Elements per piece of the norm pass (16384): [`grad_norm_multi`] cuts every gradient into
/// pieces of this many elements (the last one of a tensor shorter), starting at the tensor's
/// first element. A shard that starts a tensor at a multiple of this length has the same pieces
/// as the whole tensor there.
pub fn grad_norm_piece_len() -> usize {
    BLOCK
}

/// The number of norm pieces of a gradient of `len` elements: `ceil(len / 16384)`.
pub fn grad_norm_piece_count(len: usize) -> usize {
    len.div_ceil(BLOCK)
}

/// The partial sums of squares of `grads * inv_grad_scale`, one f64 per piece (the pieces of
/// each gradient in turn, in the list's order: `partials.len()` must be the sum of
/// [`grad_norm_piece_count`] over `grads`), computed as [`grad_norm_multi`] computes them.
/// Returns `found_inf`: whether any scaled value is NaN or infinite. Combining every piece's
/// partial of a gradient list with [`grad_norm_combine`], in the list's order, gives
/// [`grad_norm_multi`]'s norm bit for bit, however the list was split into shards, whatever
/// the thread count (on one ISA).
pub fn grad_norm_partials(
    grads: &[&[f32]],
    inv_grad_scale: f64,
    partials: &mut [f64],
) -> Result<bool> {
    grad_norm_partials_with(Isa::detect(), Par::Pool, grads, inv_grad_scale, partials)
}

/// [`grad_norm_partials`] on a chosen instruction set and parallelism.
pub fn grad_norm_partials_with(
    isa: Isa,
    par: Par,
    grads: &[&[f32]],
    inv_grad_scale: f64,
    partials: &mut [f64],
) -> Result<bool> {
    error::check_positive("inv_grad_scale", inv_grad_scale)?;
    let need: usize = grads.iter().map(|g| grad_norm_piece_count(g.len())).sum();
    if partials.len() != need {
        return Err(crate::Error::length(format!(
            "partials: got {} elements, the gradients have {need} norm pieces",
            partials.len()
        )));
    }
    let pieces: Vec<Values<'_>> = grads
        .iter()
        .flat_map(|&g| Values::F32(g).pieces(BLOCK))
        .collect();
    let scale = inv_grad_scale as f32;

    struct Work<'a, 'b>(&'b [Values<'a>], &'b mut [f64]);
    impl Split for Work<'_, '_> {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn split_at(self, mid: usize) -> (Self, Self) {
            let (a, b) = self.0.split_at(mid);
            let (c, d) = self.1.split_at_mut(mid);
            (Work(a, c), Work(b, d))
        }
    }
    let finite = dispatch::map_reduce_blocks(
        par,
        Work(&pieces, partials),
        1,
        &|Work(list, out)| {
            list.iter()
                .zip(out.iter_mut())
                .fold(true, |f, (&values, out)| {
                    let (sum, finite) = norm_of_piece(isa, values, scale);
                    *out = sum;
                    f && finite
                })
        },
        &|a, b| a && b,
    )?;
    Ok(!finite)
}

/// The global norm from every piece's partial sum of squares (all shards' partials, in the
/// order of the whole gradient list): the square root of their sum along the binary tree that
/// [`grad_norm_multi`] uses (fixed by the number of pieces), so the result is its norm bit for
/// bit. A NaN or infinite partial gives a NaN or infinite norm.
pub fn grad_norm_combine(partials: &[f64]) -> f64 {
    tree_sum(partials).sqrt()
}

/// The sum along the tree of `dispatch::map_reduce_blocks` with one piece per block: a leaf is
/// `0.0 + p` (the fold of one piece), a node splits at `ceil(n / 2)`.
fn tree_sum(p: &[f64]) -> f64 {
    match p.len() {
        0 => 0.0,
        1 => 0.0 + p[0],
        n => {
            let (a, b) = p.split_at(n.div_ceil(2));
            tree_sum(a) + tree_sum(b)
        }
    }
}

#[cfg(test)]
mod shard_tests {
    use super::*;
    use crate::kernels::adam::clipped::{
        adam_step_clipped_by_norm_multi, adam_step_clipped_by_norm_multi_with,
        adam_step_clipped_multi_with,
    };
    use crate::kernels::adam::{AdamConfig, AdamTensor};

    /// Gradients with odd lengths, tensors of 0, 1 and several pieces, values over many binades.
    fn gradients() -> Vec<Vec<f32>> {
        let lens = [
            0,
            1,
            17,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            3 * BLOCK + 255,
            5,
            7 * BLOCK + 13,
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        lens.iter()
            .map(|&n| {
                (0..n)
                    .map(|_| {
                        state = state
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1_442_695_040_888_963_407);
                        let u = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                        u * f32::powi(2.0, ((state >> 33) % 24) as i32 - 12)
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn combined_partials_equal_grad_norm_multi_bitwise() {
        let grads = gradients();
        let refs: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
        let n: usize = refs.iter().map(|g| grad_norm_piece_count(g.len())).sum();
        assert!(n > 8, "the tree must have several levels");
        for isa in Isa::available() {
            for scale in [1.0, 0.25, 3.0e-3] {
                let want = grad_norm_multi_with(isa, Par::Seq, &refs, scale).unwrap();
                for par in [Par::Seq, Par::Pool] {
                    let mut partials = vec![f64::NAN; n];
                    let inf =
                        grad_norm_partials_with(isa, par, &refs, scale, &mut partials).unwrap();
                    assert!(!inf);
                    let got = grad_norm_combine(&partials);
                    assert_eq!(
                        got.to_bits(),
                        want.norm.to_bits(),
                        "{isa:?} {par:?} {scale}"
                    );
                    // The pool's norm is the same bits too.
                    let pooled = grad_norm_multi_with(isa, Par::Pool, &refs, scale).unwrap();
                    assert_eq!(pooled.norm.to_bits(), want.norm.to_bits());
                }
                // Any thread count of the crate's pool: the partials are per piece, the tree is
                // fixed.
                for threads in [1, 2, 3, 4] {
                    crate::set_num_threads(threads).unwrap();
                    let mut partials = vec![0.0; n];
                    grad_norm_partials_with(isa, Par::Pool, &refs, scale, &mut partials).unwrap();
                    assert_eq!(
                        grad_norm_combine(&partials).to_bits(),
                        want.norm.to_bits(),
                        "{threads} threads"
                    );
                }
                crate::set_num_threads(0).unwrap();
            }
        }
    }

    /// Shards that cut tensors at piece boundaries (as ZeRO-1 ranks do) produce the whole
    /// list's partials, so the allgathered partials combine to the single-process norm.
    #[test]
    fn shards_cut_at_piece_boundaries_give_the_same_partials() {
        let grads = gradients();
        let refs: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
        let n: usize = refs.iter().map(|g| grad_norm_piece_count(g.len())).sum();
        let isa = Isa::detect();
        let mut whole = vec![0.0; n];
        grad_norm_partials_with(isa, Par::Seq, &refs, 1.0, &mut whole).unwrap();
        // Global list of pieces; give ranks contiguous runs of them.
        let pieces: Vec<&[f32]> = refs
            .iter()
            .flat_map(|g| g.chunks(grad_norm_piece_len()))
            .collect();
        assert_eq!(pieces.len(), n);
        for ranks in [1, 2, 3, 4, 7] {
            let mut gathered = Vec::new();
            for r in 0..ranks {
                let (lo, hi) = (pieces.len() * r / ranks, pieces.len() * (r + 1) / ranks);
                let shard = &pieces[lo..hi];
                let mut partials = vec![0.0; shard.len()];
                grad_norm_partials_with(isa, Par::Pool, shard, 1.0, &mut partials).unwrap();
                gathered.extend(partials);
            }
            assert_eq!(gathered.len(), whole.len());
            for (a, b) in gathered.iter().zip(&whole) {
                assert_eq!(a.to_bits(), b.to_bits(), "{ranks} ranks");
            }
        }
    }

    #[test]
    fn partials_report_non_finite_and_wrong_lengths() {
        let mut g = vec![1.0f32; BLOCK + 3];
        g[BLOCK + 1] = f32::NAN;
        let mut partials = [0.0; 2];
        assert!(grad_norm_partials(&[&g], 1.0, &mut partials).unwrap());
        assert!(grad_norm_combine(&partials).is_nan());
        g[BLOCK + 1] = f32::INFINITY;
        assert!(grad_norm_partials(&[&g], 1.0, &mut partials).unwrap());
        assert!(grad_norm_combine(&partials).is_infinite());
        let before = partials;
        let mut short = [7.0; 1];
        let err = grad_norm_partials(&[&g], 1.0, &mut short).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Length);
        assert_eq!(short, [7.0]);
        assert_eq!(partials, before);
        assert_eq!(grad_norm_combine(&[]), 0.0);
        assert_eq!(grad_norm_piece_count(0), 0);
        assert_eq!(grad_norm_piece_count(BLOCK), 1);
        assert_eq!(grad_norm_piece_count(BLOCK + 1), 2);
    }

    /// The sharded step (norm from the allgathered partials, each shard stepped with it) equals
    /// one process's two-pass clipped step bit for bit, clipping active or not.
    #[test]
    fn sharded_clipped_step_equals_the_two_pass_step_bitwise() {
        let grads = gradients();
        let cfg = AdamConfig {
            lr: 1e-2,
            weight_decay: 0.01,
            inv_grad_scale: 0.5,
            ..AdamConfig::default()
        };
        let total: usize = grads.iter().map(Vec::len).sum();
        let init: Vec<f32> = (0..total)
            .map(|i| ((i % 97) as f32 - 48.0) / 64.0)
            .collect();
        for max_grad_norm in [f64::INFINITY, 1.0, 1e-3] {
            for isa in Isa::available() {
                // One process, all tensors.
                let mut p1 = init.clone();
                let mut m1 = vec![0.0f32; total];
                let mut v1 = vec![0.0f32; total];
                // Sharded: 3 "ranks", cut at piece boundaries inside tensors.
                let mut p2 = init.clone();
                let mut m2 = vec![0.0f32; total];
                let mut v2 = vec![0.0f32; total];
                for step in 1..=3u64 {
                    let mut tensors = Vec::new();
                    let (mut p, mut m, mut v) = (&mut p1[..], &mut m1[..], &mut v1[..]);
                    for g in &grads {
                        let (pa, pb) = p.split_at_mut(g.len());
                        let (ma, mb) = m.split_at_mut(g.len());
                        let (va, vb) = v.split_at_mut(g.len());
                        (p, m, v) = (pb, mb, vb);
                        tensors.push(AdamTensor {
                            param: pa,
                            grad: g,
                            exp_avg: ma,
                            exp_avg_sq: va,
                            max_exp_avg_sq: None,
                        });
                    }
                    let norm = adam_step_clipped_multi_with(
                        isa,
                        Par::Pool,
                        &cfg,
                        step,
                        &mut tensors,
                        max_grad_norm,
                    )
                    .unwrap();

                    // Shards: pieces of every tensor, contiguous runs per rank.
                    let mut shards: Vec<(usize, usize)> = Vec::new(); // (start, len) in flat
                    let mut off = 0;
                    for g in &grads {
                        for c in (0..g.len()).step_by(grad_norm_piece_len()) {
                            shards.push((off + c, (g.len() - c).min(grad_norm_piece_len())));
                        }
                        off += g.len();
                    }
                    let flat_grad: Vec<f32> = grads.concat();
                    let ranks = 3;
                    let per_rank: Vec<&[(usize, usize)]> = (0..ranks)
                        .map(|r| &shards[shards.len() * r / ranks..shards.len() * (r + 1) / ranks])
                        .collect();
                    let mut gathered = Vec::new();
                    for pieces in &per_rank {
                        let g: Vec<&[f32]> =
                            pieces.iter().map(|&(s, n)| &flat_grad[s..s + n]).collect();
                        let mut partials = vec![0.0; g.len()];
                        let inf = grad_norm_partials_with(
                            isa,
                            Par::Pool,
                            &g,
                            cfg.inv_grad_scale,
                            &mut partials,
                        )
                        .unwrap();
                        assert!(!inf);
                        gathered.extend(partials);
                    }
                    let norm2 = grad_norm_combine(&gathered);
                    assert_eq!(norm2.to_bits(), norm.to_bits());
                    for pieces in &per_rank {
                        let Some(&(start, _)) = pieces.first() else {
                            continue;
                        };
                        let end = pieces.last().map(|&(s, n)| s + n).unwrap();
                        // One tensor per piece run inside the rank (a tensor may be cut).
                        let (mut p, mut m, mut v) = (
                            &mut p2[start..end],
                            &mut m2[start..end],
                            &mut v2[start..end],
                        );
                        let mut tensors = Vec::new();
                        for &(s, n) in pieces.iter() {
                            let (pa, pb) = p.split_at_mut(n);
                            let (ma, mb) = m.split_at_mut(n);
                            let (va, vb) = v.split_at_mut(n);
                            (p, m, v) = (pb, mb, vb);
                            tensors.push(AdamTensor {
                                param: pa,
                                grad: &flat_grad[s..s + n],
                                exp_avg: ma,
                                exp_avg_sq: va,
                                max_exp_avg_sq: None,
                            });
                        }
                        adam_step_clipped_by_norm_multi_with(
                            isa,
                            Par::Pool,
                            &cfg,
                            step,
                            &mut tensors,
                            max_grad_norm,
                            norm2,
                        )
                        .unwrap();
                    }
                }
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&p1),
                    bits(&p2),
                    "{isa:?} max_grad_norm {max_grad_norm}"
                );
                assert_eq!(bits(&m1), bits(&m2));
                assert_eq!(bits(&v1), bits(&v2));
                assert_ne!(bits(&p1), bits(&init), "the step must move the parameters");
            }
        }
    }

    #[test]
    fn step_by_norm_refuses_a_non_finite_or_negative_norm_and_writes_nothing() {
        let g = vec![0.5f32; 40];
        let mut p = vec![1.0f32; 40];
        let (mut m, mut v) = (vec![0.0f32; 40], vec![0.0f32; 40]);
        for (norm, kind) in [
            (f64::NAN, crate::ErrorKind::NonFinite),
            (f64::INFINITY, crate::ErrorKind::NonFinite),
            (-1.0, crate::ErrorKind::InvalidHyperparameter),
        ] {
            let mut t = [AdamTensor {
                param: &mut p,
                grad: &g,
                exp_avg: &mut m,
                exp_avg_sq: &mut v,
                max_exp_avg_sq: None,
            }];
            let err = adam_step_clipped_by_norm_multi(&AdamConfig::default(), 1, &mut t, 1.0, norm)
                .unwrap_err();
            assert_eq!(err.kind(), kind);
            assert!(p.iter().all(|&x| x == 1.0) && m.iter().all(|&x| x == 0.0));
        }
    }
}
