//! Adam rows: `adam_step` (AdamW) at 2^10..2^24 elements against the streaming bandwidth of the
//! same access pattern (read 4 arrays, write 3: 28 bytes per element), 1 thread and all threads,
//! DRAM sizes in two placements of the arrays;
//! the multi-tensor call on 1000 tensors of 1K elements; torch's fused AdamW when asked.

use super::{
    adam_tensors, interleaved, interleaved_rounds, median_ratio, stream_bytes, stream_closure,
    stream_closure_padded, with_threads, Aligned, Bench, Row, ROUNDS,
};
use diagprec::{adam_step, adam_step_multi, AdamConfig};

const BYTES_PER_ELEMENT: usize = 28;

fn footprint(n: usize, pad: usize) -> String {
    let bytes = (n * BYTES_PER_ELEMENT) as f64;
    if bytes >= 1e8 {
        // Each array is its own allocation, mapped next to the previous one: without padding
        // they sit a multiple of 4 KB apart, and on this machine the relative placement of the
        // four arrays alone moves a DRAM-sized step by up to 40% (README, Performance).
        let placement = if pad == 0 {
            "arrays one mapping apart".to_string()
        } else {
            format!("arrays {} KB further apart", pad * 4 / 1024)
        };
        format!("{:.0} MB moved per step; {placement}", bytes / 1e6)
    } else if bytes >= 1e6 {
        format!("{:.0} MB moved per step", bytes / 1e6)
    } else {
        format!("{:.0} KB moved per step (cache)", bytes / 1e3)
    }
}

pub fn rows(b: &mut Bench) {
    let cfg = AdamConfig::adamw(1e-3);
    let exps: &[u32] = if b.quick {
        &[10, 16, 20]
    } else {
        &[10, 12, 14, 16, 18, 20, 22, 24]
    };
    for &e in exps {
        let n = 1usize << e;
        let dram = n >= 1 << 22;
        // DRAM-sized steps also run with every array 16 KB further from the next (see
        // `footprint`): the same kernel and stream, another placement.
        let pads: &[usize] = if dram { &[0, 4096] } else { &[0] };
        for &pad in pads {
            let mut p = Aligned::padded(n, pad, |i| (i % 97) as f32 * 0.01 - 0.5);
            let g = Aligned::padded(n, pad, |i| (i % 89) as f32 * 1e-3 - 0.04);
            let mut m = Aligned::padded(n, pad, |_| 0.0);
            let mut v = Aligned::padded(n, pad, |_| 1e-4);
            for threads in b.thread_counts() {
                // DRAM-sized steps take ~10 ms: more rounds and a longer budget give them as
                // many samples, and their note adds the median of the same-round ratios.
                let (budget, rounds) = if dram {
                    (3 * b.budget(), 15)
                } else {
                    (b.budget(), ROUNDS)
                };
                let rounds = with_threads(threads, || {
                    let mut stream = stream_closure_padded::<3, 1>(n, pad);
                    interleaved_rounds(
                        budget,
                        rounds,
                        [
                            &mut || {
                                let (p, m, v) = (p.get_mut(), m.get_mut(), v.get_mut());
                                adam_step(&cfg, 10, p, g.get(), m, v, None).unwrap()
                            },
                            &mut stream,
                        ],
                    )
                });
                let best = |k: usize| rounds.iter().map(|r| r[k]).fold(f64::INFINITY, f64::min);
                let bytes = (n * BYTES_PER_ELEMENT) as f64;
                let mut note = footprint(n, pad);
                if dram {
                    // stream seconds / kernel seconds = kernel rate / stream rate.
                    let median = median_ratio(&rounds, 1, 0);
                    note += &format!("; same-round median ratio {median:.2}");
                }
                b.push(Row {
                    kernel: "adam_step f32 (AdamW)".into(),
                    shape: format!("2^{e}"),
                    threads,
                    rate: bytes / best(0) / 1e9,
                    unit: "GB/s",
                    limit: stream_bytes::<3, 1>(n) / best(1) / 1e9,
                    limit_name: "RMW stream, 4 arrays",
                    note,
                });
            }
        }
    }
    multi_tensor_rows(b, &cfg);
    if let Some(python) = b.torch_python.clone() {
        torch_rows(b, &python);
    }
}

/// 1000 tensors of 1024 elements in one call, against one tensor of the same total size.
fn multi_tensor_rows(b: &mut Bench, cfg: &AdamConfig) {
    let (count, len) = (1000usize, 1024usize);
    let total = count * len;
    let bufs: Vec<[Vec<f32>; 4]> = (0..count)
        .map(|t| {
            [
                vec![0.1 * t as f32; len],
                vec![0.01; len],
                vec![0.0; len],
                vec![1e-4; len],
            ]
        })
        .collect();
    let mut one: [Vec<f32>; 4] = [
        vec![0.1; total],
        vec![0.01; total],
        vec![0.0; total],
        vec![1e-4; total],
    ];
    let bufs = std::sync::Mutex::new(bufs);
    for threads in b.thread_counts() {
        let budget = b.budget();
        let [multi, single, separate] = with_threads(threads, || {
            let [p, g, m, v] = &mut one;
            interleaved(
                budget,
                [
                    &mut || {
                        let mut bufs = bufs.lock().unwrap();
                        let mut tensors = adam_tensors(&mut bufs[..]);
                        adam_step_multi(cfg, 10, &mut tensors).unwrap();
                    },
                    &mut || adam_step(cfg, 10, p, g, m, v, None).unwrap(),
                    &mut || {
                        for [p, g, m, v] in bufs.lock().unwrap().iter_mut() {
                            adam_step(cfg, 10, p, g, m, v, None).unwrap();
                        }
                    },
                ],
            )
        });
        let bytes = (total * BYTES_PER_ELEMENT) as f64;
        b.push(Row {
            kernel: "adam_step_multi f32".into(),
            shape: format!("{count} x {len}"),
            threads,
            rate: bytes / multi / 1e9,
            unit: "GB/s",
            limit: bytes / single / 1e9,
            limit_name: "one tensor, same size",
            note: format!(
                "{:.0} ns per tensor over the single call; one adam_step per tensor: {:.2} GB/s",
                (multi - single) / count as f64 * 1e9,
                bytes / separate / 1e9
            ),
        });
    }
}

/// `scripts/torch_adam_bench.py` as a child process: torch's fused AdamW and our
/// `dp_adam_step_f32` (through ctypes, from the shared library next to this binary) on the same
/// tensors, `K` steps of either per request.
struct TorchAdam {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: std::io::BufReader<std::process::ChildStdout>,
}

impl TorchAdam {
    fn start(python: &std::path::Path, log2: u32, threads: usize) -> Result<Self, String> {
        use std::process::{Command, Stdio};
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/torch_adam_bench.py");
        let lib = std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name(format!(
                "{}diagprec{}",
                std::env::consts::DLL_PREFIX,
                std::env::consts::DLL_SUFFIX
            ));
        if !lib.exists() {
            return Err(format!(
                "{lib:?} not built (cargo build --release builds it)"
            ));
        }
        let mut child = Command::new(python)
            .arg(&script)
            .args([
                "--log2",
                &log2.to_string(),
                "--threads",
                &threads.to_string(),
            ])
            .arg("--lib")
            .arg(&lib)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let input = child.stdin.take().ok_or("no stdin")?;
        let output = std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut torch = Self {
            child,
            input,
            output,
        };
        match torch.reply().as_deref() {
            Some("ready") => Ok(torch),
            other => Err(format!("the script said {other:?}")),
        }
    }

    fn reply(&mut self) -> Option<String> {
        use std::io::BufRead;
        let mut line = String::new();
        self.output.read_line(&mut line).ok()?;
        Some(line.trim().to_string())
    }

    /// Runs `k` steps of `which` ("torch" or "ours"); false if the child failed.
    fn steps(&mut self, which: &str, k: usize) -> bool {
        use std::io::Write;
        writeln!(self.input, "{which} {k}").is_ok() && self.reply().as_deref() == Some("done")
    }
}

impl Drop for TorchAdam {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// torch.optim.AdamW(fused=True) on the CPU beside `dp_adam_step_f32` on the same tensors, and
/// the streaming limit, the three measured alternately in this run (torch and ours in a child
/// process, in batches of steps so the pipe round trip is negligible).
fn torch_rows(b: &mut Bench, python: &std::path::Path) {
    let sizes: &[u32] = if b.quick { &[20] } else { &[20, 24] };
    for &e in sizes {
        let n = 1usize << e;
        // Steps per request: ~10 ms of work at ~30 GB/s.
        let per_request = (10_000_000 / n).max(1);
        for threads in b.thread_counts() {
            let torch = match TorchAdam::start(python, e, threads) {
                Ok(torch) => torch,
                Err(why) => {
                    eprintln!("torch benchmark with {python:?} did not start ({why}); skipping it");
                    return;
                }
            };
            let budget = b.budget();
            // More rounds than the other rows: the torch ratio is the median of 15 same-round
            // ratios (run-to-run noise on this shared machine is ~10%).
            let (rounds, ok) = with_threads(threads, move || {
                let torch = std::cell::RefCell::new(torch);
                let ok = std::cell::Cell::new(true);
                let mut stream = stream_closure::<3, 1>(n);
                let rounds = interleaved_rounds(
                    3 * budget,
                    15,
                    [
                        &mut || ok.set(ok.get() && torch.borrow_mut().steps("torch", per_request)),
                        &mut || ok.set(ok.get() && torch.borrow_mut().steps("ours", per_request)),
                        &mut stream,
                    ],
                );
                (rounds, ok.get())
            });
            if !ok {
                eprintln!("torch benchmark failed with {python:?}; skipping its rows");
                return;
            }
            // Seconds per step: a request runs `per_request` steps.
            let k = per_request as f64;
            let rounds: Vec<[f64; 3]> = rounds.iter().map(|&[t, o, s]| [t / k, o / k, s]).collect();
            let best = |k: usize| rounds.iter().map(|r| r[k]).fold(f64::INFINITY, f64::min);
            let (torch_secs, ours, stream_secs) = (best(0), best(1), best(2));
            let ours_vs_torch = median_ratio(&rounds, 0, 1);
            let bytes = (n * BYTES_PER_ELEMENT) as f64;
            b.push(Row {
                kernel: "torch AdamW fused=True".into(),
                shape: format!("2^{e}"),
                threads,
                rate: bytes / torch_secs / 1e9,
                unit: "GB/s",
                limit: stream_bytes::<3, 1>(n) / stream_secs / 1e9,
                limit_name: "RMW stream, 4 arrays",
                note: format!(
                    "dp_adam_step_f32 on the same tensors, alternating: {:.2} GB/s, {:.2}x \
                     torch (median of same-round ratios)",
                    bytes / ours / 1e9,
                    ours_vs_torch
                ),
            });
        }
    }
}
