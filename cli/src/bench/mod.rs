//! The throughput report. Every row puts a kernel's rate beside a limit of this machine measured
//! in the same run for the same access pattern (streaming bandwidth) or the same shape (faer's
//! GEMM rate), and prints the ratio. Timings are the best of several batches (see
//! [`interleaved`]); nothing here is asserted.

mod adam;
mod adam_mixed;
mod basis;
mod gn;

use pulp::{Simd, WithSimd};
use rayon::prelude::*;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Options of `diagprec bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Kernel families to run (comma separated): adam, adam_mixed, gn, basis. All by default.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Fewer sizes and shorter timings.
    #[arg(long)]
    pub quick: bool,
    /// Also write the tables as Markdown to this file: the machine line, then one table per
    /// family (what `docs/bench/` holds).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// A Python with torch: adds torch's fused CPU AdamW, measured in the same run.
    #[arg(long)]
    pub torch_python: Option<PathBuf>,
}

/// One line of the report.
pub struct Row {
    pub kernel: String,
    pub shape: String,
    pub threads: usize,
    /// The kernel's rate, in `unit`.
    pub rate: f64,
    pub unit: &'static str,
    /// The machine's limit for the same pattern, in `unit` (NaN when there is none).
    pub limit: f64,
    pub limit_name: &'static str,
    pub note: String,
}

/// The context every family's rows receive.
pub struct Bench {
    pub quick: bool,
    pub all_threads: usize,
    pub torch_python: Option<PathBuf>,
    rows: Vec<Row>,
}

impl Bench {
    /// The thread counts to report: 1 and all cores.
    pub fn thread_counts(&self) -> Vec<usize> {
        if self.all_threads > 1 {
            vec![1, self.all_threads]
        } else {
            vec![1]
        }
    }

    /// Timing budget per measurement.
    pub fn budget(&self) -> Duration {
        Duration::from_millis(if self.quick { 60 } else { 300 })
    }

    pub fn push(&mut self, row: Row) {
        print_row(&row);
        self.rows.push(row);
    }
}

/// Warms `f` up (page faults, caches, thread pool) and returns how many calls make ~10 ms.
fn calibrate(f: &mut dyn FnMut()) -> usize {
    f();
    let start = Instant::now();
    f();
    let once = start.elapsed().as_secs_f64().max(1e-9);
    ((0.01 / once).ceil() as usize).clamp(1, 1_000_000)
}

/// Seconds per call of one batch of `reps` calls.
fn batch(f: &mut dyn FnMut(), reps: usize) -> f64 {
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() / reps as f64
}

/// `n` floats starting on a 64-byte boundary (as PyTorch's CPU allocator gives), filled by `f`.
pub struct Aligned {
    storage: Vec<f32>,
    offset: usize,
    len: usize,
}

impl Aligned {
    pub fn new(n: usize, f: impl Fn(usize) -> f32) -> Self {
        Self::padded(n, 0, f)
    }

    /// [`Aligned::new`] with `pad` unused floats after the array: separate large allocations
    /// are mapped next to each other, so this moves the next array's address by `4 * pad`
    /// bytes (the placement rows of the Adam report).
    pub fn padded(n: usize, pad: usize, f: impl Fn(usize) -> f32) -> Self {
        let mut storage = vec![0.0f32; n + 16 + pad];
        let offset = storage.as_ptr().align_offset(64).min(16);
        for (i, x) in storage[offset..offset + n].iter_mut().enumerate() {
            *x = f(i);
        }
        Self {
            storage,
            offset,
            len: n,
        }
    }
    pub fn get(&self) -> &[f32] {
        &self.storage[self.offset..self.offset + self.len]
    }
    pub fn get_mut(&mut self) -> &mut [f32] {
        &mut self.storage[self.offset..self.offset + self.len]
    }
}

/// The Adam tensors (no amsgrad) over `[param, grad, exp_avg, exp_avg_sq]` buffers.
pub fn adam_tensors(bufs: &mut [[Vec<f32>; 4]]) -> Vec<diagprec::AdamTensor<'_>> {
    bufs.iter_mut()
        .map(|[p, g, m, v]| diagprec::AdamTensor {
            param: p,
            grad: g,
            exp_avg: m,
            exp_avg_sq: v,
            max_exp_avg_sq: None,
        })
        .collect()
}

/// Runs `f` with the crate (and a local rayon pool for the reference loops) on `threads` threads.
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    diagprec::set_num_threads(threads).expect("thread pool");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    let out = pool.install(f);
    diagprec::set_num_threads(0).expect("thread pool");
    out
}

/// A streaming loop over `RW` read-write and `RO` read-only f32 arrays: `a_i += b_0` for every
/// read-write array. Same access pattern as a kernel that reads `RW + RO` and writes `RW`
/// arrays, with no arithmetic to speak of: the machine's bandwidth for that pattern.
struct StreamLoop<'a, const RW: usize, const RO: usize> {
    rw: [&'a mut [f32]; RW],
    ro: [&'a [f32]; RO],
}

impl<const RW: usize, const RO: usize> WithSimd for StreamLoop<'_, RW, RO> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let StreamLoop { rw, ro } = self;
        // Whole registers only: callers pass multiples of the register width.
        let mut rw = rw.map(|a| S::as_mut_simd_f32s(a).0);
        let ro = ro.map(|r| S::as_simd_f32s(r).0);
        let n = ro.first().map_or(0, |r| r.len());
        let zero = simd.splat_f32s(0.0);
        let mut sink = zero;
        // PERF: two registers per iteration, as the kernels do: keeps more loads in flight.
        for i in (0..n).step_by(2) {
            let pair = (n - i).min(2);
            let mut b = [zero; 2];
            for (k, b) in b.iter_mut().enumerate().take(pair) {
                for r in &ro {
                    *b = simd.add_f32s(*b, r[i + k]);
                }
            }
            for a in rw.iter_mut() {
                for (k, &b) in b.iter().enumerate().take(pair) {
                    a[i + k] = simd.add_f32s(a[i + k], b);
                }
            }
            sink = simd.add_f32s(sink, simd.add_f32s(b[0], b[1]));
        }
        simd.reduce_sum_f32s(sink)
    }
}

/// The streaming loop over `n` elements with `RW` read-write and `RO` read-only arrays, as a
/// closure over its own buffers: one call is one pass, on the current rayon pool's threads in
/// blocks of 16K elements (the kernels' blocking). It moves [`stream_bytes`] bytes per call.
pub fn stream_closure<const RW: usize, const RO: usize>(n: usize) -> impl FnMut() {
    stream_closure_padded::<RW, RO>(n, 0)
}

/// [`stream_closure`] over arrays allocated with [`Aligned::padded`].
pub fn stream_closure_padded<const RW: usize, const RO: usize>(
    n: usize,
    pad: usize,
) -> impl FnMut() {
    const BLOCK: usize = 1 << 14;
    let mut rw: Vec<Aligned> = (0..RW).map(|_| Aligned::padded(n, pad, |_| 0.0)).collect();
    let ro: Vec<Aligned> = (0..RO)
        .map(|k| Aligned::padded(n, pad, |_| 1e-6 * (k + 1) as f32))
        .collect();
    let isa = pulp::Arch::new();
    move || {
        let mut rw_blocks: Vec<Vec<&mut [f32]>> =
            (0..n.div_ceil(BLOCK)).map(|_| Vec::new()).collect();
        for a in rw.iter_mut() {
            for (slot, chunk) in rw_blocks.iter_mut().zip(a.get_mut().chunks_mut(BLOCK)) {
                slot.push(chunk);
            }
        }
        rw_blocks
            .into_par_iter()
            .enumerate()
            .for_each(|(b, chunks)| {
                let lo = b * BLOCK;
                let hi = (lo + BLOCK).min(n);
                let rw: [&mut [f32]; RW] =
                    chunks.try_into().unwrap_or_else(|_| panic!("RW chunks"));
                let ro: [&[f32]; RO] = std::array::from_fn(|k| &ro[k].get()[lo..hi]);
                std::hint::black_box(isa.dispatch(StreamLoop { rw, ro }));
            });
    }
}

/// Bytes read plus bytes written by one call of [`stream_closure`].
pub fn stream_bytes<const RW: usize, const RO: usize>(n: usize) -> f64 {
    (n * 4 * (2 * RW + RO)) as f64
}

/// Rounds of alternating measurements in [`interleaved`].
pub const ROUNDS: usize = 5;

/// Best seconds per call of each closure, measured alternately: [`ROUNDS`] rounds, in each of
/// which every closure runs batches of ~10 ms for `budget / ROUNDS` (at least one batch). A
/// kernel and the limit it is compared with are measured this way, so a load change on a shared
/// machine hits both sides of a ratio alike.
pub fn interleaved<const K: usize>(budget: Duration, fs: [&mut dyn FnMut(); K]) -> [f64; K] {
    let rounds = interleaved_rounds(budget, ROUNDS, fs);
    std::array::from_fn(|k| rounds.iter().map(|r| r[k]).fold(f64::INFINITY, f64::min))
}

/// [`interleaved`] over `rounds` rounds, returning each round's best seconds per call, so that
/// ratios can be taken within a round (see [`median_ratio`]).
pub fn interleaved_rounds<const K: usize>(
    budget: Duration,
    rounds: usize,
    mut fs: [&mut dyn FnMut(); K],
) -> Vec<[f64; K]> {
    let reps = fs.each_mut().map(|f| calibrate(&mut **f));
    (0..rounds)
        .map(|_| {
            let mut best = [f64::INFINITY; K];
            for ((b, f), &reps) in best.iter_mut().zip(fs.iter_mut()).zip(&reps) {
                let begin = Instant::now();
                loop {
                    *b = b.min(batch(&mut **f, reps));
                    if begin.elapsed() >= budget / rounds as u32 {
                        break;
                    }
                }
            }
            best
        })
        .collect()
}

/// The median over rounds of `secs[a] / secs[b]` (how many times faster `b` is than `a`),
/// each ratio taken within one round of [`interleaved_rounds`]: robust to the machine's load
/// drifting between rounds, which moves both sides of a same-round ratio alike.
pub fn median_ratio<const K: usize>(rounds: &[[f64; K]], a: usize, b: usize) -> f64 {
    let mut ratios: Vec<f64> = rounds.iter().map(|r| r[a] / r[b]).collect();
    ratios.sort_by(f64::total_cmp);
    match ratios.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => ratios[n / 2],
        n => 0.5 * (ratios[n / 2 - 1] + ratios[n / 2]),
    }
}

/// One faer GEMM `C (m x n) = A (m x k) * B (k x n)` (column-major, `Accum::Replace`) on
/// `threads` threads, as a closure over its own matrices: the limit of the GEMM-shaped rows,
/// measured [`interleaved`] with the kernel.
pub fn faer_gemm_closure(m: usize, n: usize, k: usize, threads: usize) -> impl FnMut() {
    use faer::linalg::matmul::matmul;
    use faer::{Accum, Mat, Par};
    let a = Mat::<f32>::from_fn(m, k, |i, j| ((i * 7 + j * 3) % 11) as f32 * 0.1);
    let b = Mat::<f32>::from_fn(k, n, |i, j| ((i * 5 + j) % 13) as f32 * 0.1);
    let mut c = Mat::<f32>::zeros(m, n);
    let par = if threads > 1 {
        Par::rayon(threads)
    } else {
        Par::Seq
    };
    move || matmul(c.as_mut(), Accum::Replace, a.as_ref(), b.as_ref(), 1.0, par)
}

/// The machine class the report was measured on, from `/proc/cpuinfo`: vendor, model name,
/// family/model, the vector extensions that matter here, and the SIMD datapath width where it
/// follows from the vendor and family (AVX-512 on 256-bit datapaths on AMD Zen 4, full width on
/// Intel Xeon and AMD Zen 5).
fn machine_class() -> String {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.split(':').next().map(str::trim) == Some(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let Some(model_name) = field("model name") else {
        return std::env::consts::ARCH.to_string();
    };
    let vendor = field("vendor_id").unwrap_or_default();
    let family: u32 = field("cpu family")
        .and_then(|f| f.parse().ok())
        .unwrap_or(0);
    let model: u32 = field("model").and_then(|f| f.parse().ok()).unwrap_or(0);
    let flags = field("flags").unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let extensions: Vec<&str> = [
        "avx2",
        "fma",
        "avx512f",
        "avx512_bf16",
        "avx512_fp16",
        "amx_tile",
    ]
    .into_iter()
    .filter(|f| has(f))
    .collect();
    let datapath = match (vendor.as_str(), family, has("avx512f")) {
        ("GenuineIntel", _, true) => "512-bit SIMD datapaths",
        ("GenuineIntel", _, false) => "256-bit SIMD datapaths",
        ("AuthenticAMD", 0x19, true) => "AVX-512 on 256-bit datapaths (Zen 4)",
        ("AuthenticAMD", 0x19, false) => "256-bit SIMD datapaths (Zen 3)",
        ("AuthenticAMD", 0x1a, _) => "512-bit SIMD datapaths (Zen 5)",
        _ => "datapath width unknown",
    };
    format!(
        "{vendor} {model_name} (family {family} model {model}; {}; {datapath})",
        extensions.join(" ")
    )
}

const HEADER: [&str; 7] = [
    "kernel",
    "shape",
    "threads",
    "rate",
    "machine limit",
    "ratio",
    "note",
];

fn cells(row: &Row) -> [String; 7] {
    let ratio = row.rate / row.limit;
    [
        row.kernel.clone(),
        row.shape.clone(),
        row.threads.to_string(),
        format!("{:.2} {}", row.rate, row.unit),
        if row.limit.is_nan() {
            "-".into()
        } else {
            format!("{:.2} {} ({})", row.limit, row.unit, row.limit_name)
        },
        if ratio.is_nan() {
            "-".into()
        } else {
            format!("{:.2}", ratio)
        },
        row.note.clone(),
    ]
}

const WIDTHS: [usize; 7] = [30, 16, 7, 16, 34, 6, 0];

fn print_row(row: &Row) {
    let c = cells(row);
    let mut line = String::new();
    for (cell, width) in c.iter().zip(WIDTHS) {
        let _ = write!(line, "{cell:<width$}  ");
    }
    println!("{}", line.trim_end());
}

/// A kernel family's name and the function that adds its rows.
type Family = (&'static str, fn(&mut Bench));

/// Runs the report.
pub fn run(args: &BenchArgs) -> Result<(), String> {
    let families: [Family; 4] = [
        ("adam", adam::rows),
        ("adam_mixed", adam_mixed::rows),
        ("gn", gn::rows),
        ("basis", basis::rows),
    ];
    for name in &args.only {
        if !families.iter().any(|(f, _)| f == name) {
            return Err(format!("unknown family {name:?}"));
        }
    }
    let mut bench = Bench {
        quick: args.quick,
        all_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        torch_python: args.torch_python.clone(),
        rows: Vec::new(),
    };
    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let preamble = format!(
        "diagprec {} bench, {date}: {}, {} cores, ISA {}",
        env!("CARGO_PKG_VERSION"),
        machine_class(),
        bench.all_threads,
        diagprec::Isa::detect().name()
    );
    println!("{preamble}");
    let mut line = String::new();
    for (cell, width) in HEADER.iter().zip(WIDTHS) {
        let _ = write!(line, "{cell:<width$}  ");
    }
    println!("{}", line.trim_end());
    // Where each family's rows start in `bench.rows`.
    let mut sections = Vec::new();
    for (name, rows) in families {
        if args.only.is_empty() || args.only.iter().any(|o| o == name) {
            sections.push((name, bench.rows.len()));
            rows(&mut bench);
        }
    }
    if let Some(path) = &args.markdown {
        let mut md = format!(
            "<!-- Written by `diagprec bench --markdown`; do not edit by hand. -->\n\n{preamble}\n"
        );
        for (i, (name, start)) in sections.iter().enumerate() {
            let end = sections.get(i + 1).map_or(bench.rows.len(), |s| s.1);
            let _ = write!(
                md,
                "\n## {name}\n\n| {} |\n|{}\n",
                HEADER.join(" | "),
                "---|".repeat(HEADER.len())
            );
            for row in &bench.rows[*start..end] {
                let _ = writeln!(md, "| {} |", cells(row).join(" | "));
            }
        }
        std::fs::write(path, md).map_err(|e| format!("cannot write {path:?}: {e}"))?;
    }
    Ok(())
}
