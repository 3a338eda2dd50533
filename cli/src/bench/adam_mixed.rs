//! Fewer bytes per parameter: the bf16/f16 master-weight steps, bf16 and 8-bit optimizer state,
//! each beside the f32 step at the same size (bytes per parameter, GB/s, ns per parameter), and
//! the two-pass clipped step against the unfused sequence built from the crate's own kernels
//! (unscale in place, global norm, clip in place, multi-tensor step) at 2^24 total elements,
//! and the tensor-list master (bf16) and 8-bit steps over 1000 small tensors.
//! Limits: the streaming bandwidth of the f32 step's pattern (read 4 f32 arrays, write 3),
//! measured alternately with the kernels: for the 28-byte master-weight steps that is the
//! bandwidth for their byte count (a stricter one: their 16-bit copy is written only, which
//! costs the cache a read as well), for the others a reference; for the two-pass row, the
//! unfused sequence; for the list rows, one call per tensor on the same buffers.

use std::sync::Mutex;

use super::{
    adam_tensors, interleaved, stream_bytes, stream_closure_padded, with_threads, Aligned, Bench,
    Row,
};
use diagprec::{
    adam_step, adam_step_8bit_state, adam_step_8bit_state_multi, adam_step_bf16_state,
    adam_step_clipped_multi, adam_step_master_bf16, adam_step_master_f16, adam_step_master_multi,
    adam_step_multi, grad_norm_multi, quant_scales_len, scale_in_place, AdamConfig,
    Bf16StateTensor, HalfFormat, Isa, MasterTensor, Par, QuantStateTensor, Rounding,
};

/// Bytes moved per parameter by each path (reads + writes).
const F32: f64 = 28.0; // p, g, m, v read; p, m, v written
const MASTER16: f64 = 28.0; // g16, master, m, v read; master, m, v, p16 written
const BF16_STATE: f64 = 20.0; // p, g, m16, v16 read; p, m16, v16 written
const EIGHT_BIT: f64 = 16.0 + 16.0 / 256.0; // p, g, 2 codes read; p, 2 codes written; scales

/// `n` copies of `value` in an allocation `pad_bytes` longer (see `PAD` in `rows`).
fn padded_vec<T: Copy>(n: usize, value: T, pad_bytes: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(n + pad_bytes / std::mem::size_of::<T>());
    v.resize(n, value);
    v
}

pub fn rows(b: &mut Bench) {
    let cfg = AdamConfig::adamw(1e-3);
    let e: u32 = if b.quick { 20 } else { 24 };
    let n = 1usize << e;
    // Every array 16 KB further from the next than separate allocations put it (the favourable
    // placement of the Adam rows; the placement alone moves these steps by up to 40%).
    const PAD: usize = 16 << 10;
    let f32s = |f: fn(usize) -> f32| Aligned::padded(n, PAD / 4, f);
    // Shared by several of the alternating closures below.
    let shared = Mutex::new((
        f32s(|i| (i % 97) as f32 * 0.01 - 0.5),
        f32s(|_| 0.0),
        f32s(|_| 1e-4),
        padded_vec(n, 0u16, PAD),
    ));
    let g = f32s(|i| (i % 89) as f32 * 1e-3 - 0.04);
    let mut g16 = padded_vec(n, 0u16, PAD);
    let mut g16f = padded_vec(n, 0u16, PAD);
    for ((h, hf), &x) in g16.iter_mut().zip(g16f.iter_mut()).zip(g.get()) {
        *h = half::bf16::from_f32(x).to_bits();
        *hf = half::f16::from_f32(x).to_bits();
    }
    let (mut m16, mut v16) = (padded_vec(n, 0u16, PAD), padded_vec(n, 0u16, PAD));
    let (mut mc, mut vc) = (padded_vec(n, 0u8, PAD), padded_vec(n, 0u8, PAD));
    let (mut ms, mut vs) = (
        vec![0f32; quant_scales_len(n)],
        vec![0f32; quant_scales_len(n)],
    );
    for threads in b.thread_counts() {
        let budget = b.budget();
        let (times, limit) = with_threads(threads, || {
            let mut stream = stream_closure_padded::<3, 1>(n, PAD / 4);
            let secs = interleaved(
                budget,
                [
                    &mut || {
                        let (p, m, v, _) = &mut *shared.lock().unwrap();
                        let (p, m, v) = (p.get_mut(), m.get_mut(), v.get_mut());
                        adam_step(&cfg, 10, p, g.get(), m, v, None).unwrap()
                    },
                    &mut || {
                        let (p, m, v, p16) = &mut *shared.lock().unwrap();
                        let (p, m, v) = (p.get_mut(), m.get_mut(), v.get_mut());
                        let r = Rounding::NearestEven;
                        adam_step_master_bf16(&cfg, 10, p, p16, &g16, m, v, r).unwrap()
                    },
                    &mut || {
                        let (p, m, v, p16) = &mut *shared.lock().unwrap();
                        let (p, m, v) = (p.get_mut(), m.get_mut(), v.get_mut());
                        let r = Rounding::Stochastic { seed: 1 };
                        adam_step_master_bf16(&cfg, 10, p, p16, &g16, m, v, r).unwrap()
                    },
                    &mut || {
                        let (p, m, v, p16) = &mut *shared.lock().unwrap();
                        let (p, m, v) = (p.get_mut(), m.get_mut(), v.get_mut());
                        let r = Rounding::NearestEven;
                        adam_step_master_f16(&cfg, 10, p, p16, &g16f, m, v, r).unwrap()
                    },
                    &mut || {
                        let p = &mut shared.lock().unwrap().0;
                        let t = Bf16StateTensor {
                            param: p.get_mut(),
                            grad: g.get(),
                            exp_avg: &mut m16,
                            exp_avg_sq: &mut v16,
                        };
                        adam_step_bf16_state(&cfg, 10, 1, t).unwrap()
                    },
                    &mut || {
                        let p = &mut shared.lock().unwrap().0;
                        let t = QuantStateTensor {
                            param: p.get_mut(),
                            grad: g.get(),
                            exp_avg_codes: &mut mc,
                            exp_avg_scales: &mut ms,
                            exp_avg_sq_codes: &mut vc,
                            exp_avg_sq_scales: &mut vs,
                        };
                        adam_step_8bit_state(&cfg, 10, t).unwrap()
                    },
                    &mut stream,
                ],
            );
            let names = [
                ("adam_step f32 (AdamW)", F32),
                ("master bf16 (nearest)", MASTER16),
                ("master bf16 (stochastic)", MASTER16),
                ("master f16 (nearest)", MASTER16),
                ("bf16 state (stochastic)", BF16_STATE),
                ("8-bit state", EIGHT_BIT),
            ];
            let times: Vec<_> = names
                .iter()
                .zip(secs)
                .map(|(&(name, bytes), s)| (name, bytes, s))
                .collect();
            (times, stream_bytes::<3, 1>(n) / secs[6] / 1e9)
        });
        let f32_secs = times[0].2;
        for (name, bytes, secs) in times {
            let ns = secs / n as f64 * 1e9;
            b.push(Row {
                kernel: name.into(),
                shape: format!("2^{e}"),
                threads,
                rate: bytes * n as f64 / secs / 1e9,
                unit: "GB/s",
                limit,
                limit_name: "RMW stream, 4 arrays",
                note: format!(
                    "{bytes:.2} B/param, {ns:.3} ns/param, {:.2}x f32 per param",
                    f32_secs / secs
                ),
            });
        }
    }
    two_pass_rows(b, &cfg);
    list_rows(b, &cfg);
}

/// 1000 tensors of 1024 elements: the tensor-list master (bf16) and 8-bit steps against one
/// call per tensor on the same buffers.
fn list_rows(b: &mut Bench, cfg: &AdamConfig) {
    let (count, len) = (1000usize, 1024usize);
    let total = count * len;
    let n_scales = quant_scales_len(len);
    #[allow(clippy::type_complexity)]
    let bufs: Vec<([Vec<f32>; 4], [Vec<u16>; 2], [Vec<u8>; 2], [Vec<f32>; 2])> = (0..count)
        .map(|t| {
            let g = vec![0.01f32; len];
            let g16 = vec![half::bf16::from_f32(0.01).to_bits(); len];
            (
                [
                    vec![0.1 * t as f32; len],
                    g,
                    vec![0.0; len],
                    vec![1e-4; len],
                ],
                [vec![0; len], g16],
                [vec![0; len], vec![0; len]],
                [vec![0.0; n_scales], vec![0.0; n_scales]],
            )
        })
        .collect();
    let bufs = Mutex::new(bufs);
    let rn = Rounding::NearestEven;
    for threads in b.thread_counts() {
        let budget = b.budget();
        let secs = with_threads(threads, || {
            interleaved(
                budget,
                [
                    &mut || {
                        let mut bufs = bufs.lock().unwrap();
                        let mut list: Vec<MasterTensor<'_>> = bufs
                            .iter_mut()
                            .map(|([p, _, m, v], [p16, g16], _, _)| MasterTensor {
                                master: p,
                                param: p16,
                                grad: g16,
                                exp_avg: m,
                                exp_avg_sq: v,
                            })
                            .collect();
                        adam_step_master_multi(HalfFormat::Bf16, cfg, 10, &mut list, rn).unwrap();
                    },
                    &mut || {
                        for ([p, _, m, v], [p16, g16], _, _) in bufs.lock().unwrap().iter_mut() {
                            adam_step_master_bf16(cfg, 10, p, p16, g16, m, v, rn).unwrap();
                        }
                    },
                    &mut || {
                        let mut bufs = bufs.lock().unwrap();
                        let mut list: Vec<QuantStateTensor<'_>> =
                            bufs.iter_mut().map(|t| quant_tensor(t)).collect();
                        adam_step_8bit_state_multi(cfg, 10, &mut list).unwrap();
                    },
                    &mut || {
                        for t in bufs.lock().unwrap().iter_mut() {
                            adam_step_8bit_state(cfg, 10, quant_tensor(t)).unwrap();
                        }
                    },
                ],
            )
        });
        for (name, bytes, [list, separate]) in [
            ("master bf16 list", MASTER16, [secs[0], secs[1]]),
            ("8-bit state list", EIGHT_BIT, [secs[2], secs[3]]),
        ] {
            let moved = bytes * total as f64;
            b.push(Row {
                kernel: name.into(),
                shape: format!("{count} x {len}"),
                threads,
                rate: moved / list / 1e9,
                unit: "GB/s",
                limit: moved / separate / 1e9,
                limit_name: "one call per tensor",
                note: format!("{:.0} ns per tensor in one call", list / count as f64 * 1e9),
            });
        }
    }
}

/// The 8-bit tensor of one of `list_rows`' buffer sets.
#[allow(clippy::type_complexity)]
fn quant_tensor<'a>(
    (pgmv, _, [mc, vc], [ms, vs]): &'a mut (
        [Vec<f32>; 4],
        [Vec<u16>; 2],
        [Vec<u8>; 2],
        [Vec<f32>; 2],
    ),
) -> QuantStateTensor<'a> {
    let [p, g, _, _] = pgmv;
    QuantStateTensor {
        param: p,
        grad: g,
        exp_avg_codes: mc,
        exp_avg_scales: ms,
        exp_avg_sq_codes: vc,
        exp_avg_sq_scales: vs,
    }
}

/// 16 tensors of 2^20 (quick: 2^16) elements: the two-pass step against the unfused chain.
fn two_pass_rows(b: &mut Bench, cfg: &AdamConfig) {
    let (count, len) = (16usize, if b.quick { 1usize << 16 } else { 1 << 20 });
    let total = count * len;
    let bufs: Vec<[Vec<f32>; 4]> = (0..count)
        .map(|t| {
            [
                vec![0.1 * t as f32; len],
                (0..len).map(|i| (i % 89) as f32 * 1e-3 - 0.04).collect(),
                vec![0.0; len],
                vec![1e-4; len],
            ]
        })
        .collect();
    let bufs = Mutex::new(bufs);
    let mut cfg = *cfg;
    cfg.inv_grad_scale = 1.0; // keeps the unfused chain's in-place gradients unchanged
    let max_norm = 1e30; // clip factor 1: the in-place clip still reads and writes every value
    for threads in b.thread_counts() {
        let budget = b.budget();
        let (fused, unfused) = with_threads(threads, || {
            let mut fused = || {
                let bufs = &mut *bufs.lock().unwrap();
                let mut tensors = adam_tensors(&mut bufs[..]);
                adam_step_clipped_multi(&cfg, 10, &mut tensors, max_norm).unwrap();
            };
            let isa = Isa::detect();
            let mut unfused = || {
                let bufs = &mut *bufs.lock().unwrap();
                // unscale_ (in place, with its finite check), clip_grad_norm_, step.
                for [_, g, _, _] in bufs.iter_mut() {
                    scale_in_place(isa, Par::Pool, g, cfg.inv_grad_scale as f32).unwrap();
                }
                let views: Vec<&[f32]> = bufs.iter().map(|[_, g, _, _]| g.as_slice()).collect();
                let norm = grad_norm_multi(&views, 1.0).unwrap();
                assert!(!norm.found_inf);
                let clip = diagprec::clip_coefficient(norm.norm, max_norm) as f32;
                for [_, g, _, _] in bufs.iter_mut() {
                    scale_in_place(isa, Par::Pool, g, clip).unwrap();
                }
                let mut tensors = adam_tensors(&mut bufs[..]);
                adam_step_multi(&cfg, 10, &mut tensors).unwrap();
            };
            let [fused, unfused] = interleaved(budget, [&mut fused, &mut unfused]);
            (fused, unfused)
        });
        b.push(Row {
            kernel: "two-pass clipped step".into(),
            shape: format!("{count} x {len}"),
            threads,
            rate: total as f64 / fused / 1e6,
            unit: "Mparam/s",
            limit: total as f64 / unfused / 1e6,
            limit_name: "unfused unscale+norm+clip+step",
            note: format!(
                "{:.2}x faster than unfused; {:.3} vs {:.3} ns/param",
                unfused / fused,
                fused / total as f64 * 1e9,
                unfused / total as f64 * 1e9
            ),
        });
    }
}
