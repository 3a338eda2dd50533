//! The one place that picks the instruction set and splits work across threads.
//!
//! * [`Isa`] holds a pulp token proving the CPU has the instruction set; kernels take one and run
//!   their `WithSimd` struct through [`Isa::run`]. [`Isa::detect`] picks the best one once (the
//!   environment variable `DIAGPREC_ISA=scalar|avx2|avx512` lowers it, for comparisons), and
//!   [`Isa::available`] lists every level this machine can run, so tests cover them all.
//! * Threads come from one crate-wide rayon pool, sized by [`set_num_threads`]; a call made from
//!   a worker of a rayon pool of the same size (the caller's own) runs on that pool's threads
//!   instead (`enter`). Work is split at fixed block boundaries by `map_reduce_blocks`, whose
//!   reduction tree depends only on the length and the block size: results are bitwise
//!   identical for any thread count.
//! * The multi-tensor entry points cut their tensors into batches of about one block of elements
//!   and step them with `batches::balanced_batches` and `batches::step_batches`.
//! * faer's GEMMs get their parallelism from `with_faer_par` (the same pool), and so do the
//!   `gemm` crate's (`gemm`: the crate's one wrapper of it).

use crate::error::{Error, ErrorKind, Result};
use pulp::{Simd, WithSimd};
use std::sync::{Arc, OnceLock, RwLock};

pub(crate) mod batches;

#[derive(Clone, Copy, Debug)]
enum Token {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2(pulp::x86::V3),
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    Avx512(pulp::x86::V4),
    #[cfg(not(target_arch = "x86_64"))]
    Native(pulp::Arch),
}

/// An instruction set that this CPU supports (it can only be obtained from detection).
#[derive(Clone, Copy, Debug)]
pub struct Isa(Token);

impl Isa {
    /// The portable one-lane backend: always available; the baseline every other ISA is tested
    /// against.
    pub fn scalar() -> Self {
        Isa(Token::Scalar)
    }

    /// Every instruction set this machine can run, lowest first.
    pub fn available() -> Vec<Isa> {
        let mut out = vec![Isa::scalar()];
        #[cfg(target_arch = "x86_64")]
        if let Some(v3) = pulp::x86::V3::try_new() {
            out.push(Isa(Token::Avx2(v3)));
        }
        #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
        if let Some(v4) = pulp::x86::V4::try_new() {
            out.push(Isa(Token::Avx512(v4)));
        }
        #[cfg(not(target_arch = "x86_64"))]
        if !matches!(pulp::Arch::new(), pulp::Arch::Scalar) {
            out.push(Isa(Token::Native(pulp::Arch::new())));
        }
        out
    }

    /// The best available instruction set, or the one named by `DIAGPREC_ISA` if this machine has
    /// it. Detected once per process.
    pub fn detect() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let available = Isa::available();
            let wanted = std::env::var("DIAGPREC_ISA").ok();
            wanted
                .and_then(|name| available.iter().copied().find(|isa| isa.name() == name))
                .unwrap_or(*available.last().expect("scalar is always available"))
        })
    }

    /// A short name: `scalar`, `avx2`, `avx512` or `neon`.
    pub fn name(self) -> &'static str {
        match self.0 {
            Token::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Token::Avx2(_) => "avx2",
            #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
            Token::Avx512(_) => "avx512",
            #[cfg(not(target_arch = "x86_64"))]
            Token::Native(_) => "neon",
        }
    }

    /// Runs `op` with this instruction set enabled.
    #[inline]
    pub fn run<Op: WithSimd>(self, op: Op) -> Op::Output {
        match self.0 {
            Token::Scalar => Simd::vectorize(pulp::Scalar, op),
            #[cfg(target_arch = "x86_64")]
            Token::Avx2(simd) => Simd::vectorize(simd, op),
            #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
            Token::Avx512(simd) => Simd::vectorize(simd, op),
            #[cfg(not(target_arch = "x86_64"))]
            Token::Native(arch) => arch.dispatch(op),
        }
    }
}

/// The environment variable that overrides whether the Adam-family and GN^p steps prefetch
/// their operands: `on` or `off` (read once). By default the bf16-state and 8-bit steps and
/// the GN^p step with a general power prefetch on every CPU, the others on Intel CPUs only.
pub const PREFETCH_ENV: &str = "DIAGPREC_PREFETCH";

/// What a body does per byte it streams, which decides its default software prefetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PrefetchKind {
    /// Little arithmetic per cache line (the f32 and master-weight Adam steps, the GN^p step):
    /// prefetch on Intel CPUs only.
    Stream,
    /// Much arithmetic per element (the bf16-state and 8-bit steps' codecs, the GN^p step's
    /// general power): prefetch on every CPU.
    Heavy,
}

/// Whether a body of `kind` (`adam::adam_body`, the GN^p step) asks for its operands ahead of
/// use with `prefetcht0`. `Stream` bodies prefetch on Intel CPUs, where it made the DRAM-sized
/// steps faster; not on others, where the hardware prefetchers alone were as fast (AMD Zen 4,
/// Zen 5) or faster (Zen 3). `Heavy` bodies prefetch everywhere: their longer work per line
/// leaves the out-of-order window too few lines ahead (AMD Zen 5, one thread: the 8-bit step
/// 0.47 -> 0.40 ns per parameter). Measurements in docs/performance.md. [`PREFETCH_ENV`]
/// overrides both, for comparisons. A hint only: the results are the same bits either way.
/// Decided once per process.
pub(crate) fn software_prefetch(kind: PrefetchKind) -> bool {
    static FORCED: OnceLock<Option<bool>> = OnceLock::new();
    static INTEL: OnceLock<bool> = OnceLock::new();
    let forced = *FORCED.get_or_init(|| match std::env::var(PREFETCH_ENV).as_deref() {
        Ok("on") => Some(true),
        Ok("off") => Some(false),
        _ => None,
    });
    forced.unwrap_or_else(|| match kind {
        PrefetchKind::Heavy => true,
        PrefetchKind::Stream => *INTEL.get_or_init(|| cpu_vendor() == *b"GenuineIntel"),
    })
}

/// The CPU's vendor string (`cpuid` leaf 0), or zeros off x86-64.
fn cpu_vendor() -> [u8; 12] {
    let mut vendor = [0u8; 12];
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `cpuid` exists on every x86-64 CPU and leaf 0 is always valid (the intrinsic
        // is a safe function from Rust 1.89 on; the block keeps older compilers building).
        #[allow(unused_unsafe)]
        let r = unsafe { core::arch::x86_64::__cpuid(0) };
        vendor[..4].copy_from_slice(&r.ebx.to_le_bytes());
        vendor[4..8].copy_from_slice(&r.edx.to_le_bytes());
        vendor[8..].copy_from_slice(&r.ecx.to_le_bytes());
    }
    vendor
}

/// The crate's pool and the process it was started in: a pool inherited through `fork()` has no
/// threads in the child, so the child starts its own (the inherited one is parked, never
/// dropped, since dropping it would signal threads that do not exist).
struct PoolState {
    /// Threads asked for by [`set_num_threads`]; `None` until set (then the environment decides).
    requested: Option<usize>,
    /// The pool and the id of the process that started it; `None` while running on one thread.
    pool: Option<(u32, Arc<rayon::ThreadPool>)>,
}

static POOL: RwLock<PoolState> = RwLock::new(PoolState {
    requested: None,
    pool: None,
});

/// The environment variable that sizes the pool when [`set_num_threads`] was not called (or was
/// called with 0): a whole number from 1 to [`MAX_THREADS`]; 1 runs every kernel on the caller's
/// thread. Read once. `RAYON_NUM_THREADS` is ignored.
pub const NUM_THREADS_ENV: &str = "DIAGPREC_NUM_THREADS";

/// The thread count from [`NUM_THREADS_ENV`], else one per core (read once per process).
fn default_threads() -> Result<usize> {
    static FROM_ENV: OnceLock<std::result::Result<Option<usize>, String>> = OnceLock::new();
    let from_env = FROM_ENV.get_or_init(|| match std::env::var(NUM_THREADS_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Ok(text) => match text.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(Some(n)),
            _ => Err(format!(
                "{NUM_THREADS_ENV}={text:?} is not a thread count from 1 to {MAX_THREADS}"
            )),
        },
        Err(e) => Err(format!("{NUM_THREADS_ENV}: {e}")),
    });
    match from_env {
        Ok(Some(n)) => Ok(*n),
        Ok(None) => Ok(std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(MAX_THREADS)),
        Err(message) => Err(Error::new(ErrorKind::InvalidArgument, message.clone())),
    }
}

fn build_pool(n_threads: usize) -> Result<Arc<rayon::ThreadPool>> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n_threads)
        .thread_name(|i| format!("diagprec-{i}"))
        .build()
        .map(Arc::new)
        .map_err(|e| Error::new(ErrorKind::Allocation, format!("cannot start threads: {e}")))
}

/// The most threads [`set_num_threads`] accepts.
pub const MAX_THREADS: usize = 1024;

/// Sets the number of threads the crate's kernels use: `0` means the default
/// ([`NUM_THREADS_ENV`], else one per core), `1` runs every kernel on the caller's thread (no
/// pool thread is started). Results do not depend on it. A kernel called from a worker of a
/// rayon pool with this many threads runs on that pool instead of the crate's.
pub fn set_num_threads(n_threads: usize) -> Result<()> {
    if n_threads > MAX_THREADS {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("{n_threads} threads requested; at most {MAX_THREADS}"),
        ));
    }
    let resolved = if n_threads == 0 {
        default_threads()?
    } else {
        n_threads
    };
    let pool = if resolved > 1 {
        Some((std::process::id(), build_pool(resolved)?))
    } else {
        None
    };
    let mut state = POOL.write().unwrap_or_else(|e| e.into_inner());
    state.requested = Some(resolved);
    if let Some(old) = std::mem::replace(&mut state.pool, pool) {
        forget_if_inherited(old);
    }
    Ok(())
}

/// Pools inherited through `fork()`: never dropped (dropping one would signal threads that do not
/// exist in this process), kept reachable so that leak checkers do not report them.
static INHERITED: std::sync::Mutex<Vec<Arc<rayon::ThreadPool>>> = std::sync::Mutex::new(Vec::new());

/// Drops a replaced pool, or parks it in [`INHERITED`] if it was inherited through `fork()`.
fn forget_if_inherited((pid, pool): (u32, Arc<rayon::ThreadPool>)) {
    if pid != std::process::id() {
        INHERITED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pool);
    }
}

/// The crate's thread pool (at least two threads), or `None` when kernels run on the caller's
/// thread. Created on first use, and again in a child process after `fork()`.
pub(crate) fn pool() -> Result<Option<Arc<rayon::ThreadPool>>> {
    let pid = std::process::id();
    {
        let state = POOL.read().unwrap_or_else(|e| e.into_inner());
        match (&state.pool, state.requested) {
            (Some((owner, pool)), _) if *owner == pid => return Ok(Some(pool.clone())),
            (None, Some(n)) if n <= 1 => return Ok(None),
            _ => {}
        }
    }
    let mut state = POOL.write().unwrap_or_else(|e| e.into_inner());
    if let Some((owner, pool)) = &state.pool {
        if *owner == pid {
            return Ok(Some(pool.clone()));
        }
    }
    let n = match state.requested {
        Some(n) => n,
        None => default_threads()?,
    };
    state.requested = Some(n);
    if let Some(old) = state.pool.take() {
        forget_if_inherited(old);
    }
    if n <= 1 {
        return Ok(None);
    }
    let pool = build_pool(n)?;
    state.pool = Some((pid, pool.clone()));
    Ok(Some(pool))
}

/// Runs `f` with the crate's `pool` as the current rayon pool: on the calling thread when it
/// is already a worker of a pool of the same size (the crate's own, or the caller's, whose
/// threads then do the work), else through `pool.install`. Results do not depend on which
/// threads run the work, only on how many.
///
/// PERF: a call from a worker of another rayon pool (`install` across pools) leaves that worker
/// in rayon's idle loop, yielding the core until it falls asleep: on two cores that took time
/// from the two workers doing the call's work (AMD Zen 5, a SOAP-like step at 256 called from a
/// two-thread pool, best of 40 batches of 30: 332-365 us through `install`, 315-348 run on the
/// caller's pool; 0.93-0.94 of four of faer's GEMMs on that pool against 0.98-0.99).
pub(crate) fn enter<R: Send>(pool: &rayon::ThreadPool, f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some()
        && rayon::current_num_threads() == pool.current_num_threads()
    {
        f()
    } else {
        pool.install(f)
    }
}

/// The number of threads kernels will use.
pub fn num_threads() -> usize {
    pool().ok().flatten().map_or(1, |p| p.current_num_threads())
}

/// Whether a call may use the crate's thread pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Par {
    /// Run on the calling thread only.
    Seq,
    /// Use the crate's pool (see [`set_num_threads`]) when the work is large enough.
    #[default]
    Pool,
}

/// Below this many bytes of input a streaming kernel runs on the calling thread: such work is
/// resident in one core's cache, where splitting it costs a wake-up and a cold cache on the
/// other core (measured on an Intel Xeon: `gn_diag_weighted` over 1 MB was 0.6x as fast on two
/// threads as on one).
pub(crate) const PAR_MIN_BYTES: usize = 2 << 20;

/// `par`, or [`Par::Seq`] when the work reads fewer than [`PAR_MIN_BYTES`] bytes. Results do
/// not change: the blocks and their reduction tree are the same either way.
pub(crate) fn par_for_bytes(par: Par, bytes: usize) -> Par {
    if bytes < PAR_MIN_BYTES {
        Par::Seq
    } else {
        par
    }
}

/// Below this many flops a GEMM runs on the calling thread (spawning costs more than it saves).
pub(crate) const PAR_FLOPS: f64 = (1u64 << 21) as f64;

/// Runs `f` with a faer parallelism matching `par`: on the crate's pool with all its threads, or
/// sequentially for `Par::Seq`, a one-thread pool, or work under [`PAR_FLOPS`].
pub(crate) fn with_faer_par<R: Send>(
    par: Par,
    flops: f64,
    f: impl FnOnce(faer::Par) -> R + Send,
) -> Result<R> {
    if par == Par::Pool && flops >= PAR_FLOPS {
        if let Some(pool) = pool()? {
            let n = pool.current_num_threads();
            return Ok(enter(&pool, || f(faer::Par::rayon(n))));
        }
    }
    Ok(f(faer::Par::Seq))
}

/// `dst <- keep dst + scale lhs rhs` in f32 (`keep = 0`: `dst` is not read, so NaN there does not
/// propagate) by the `gemm` crate on the calling thread.
///
/// The `gemm` crate is faer's GEMM backend; faer's own `matmul` uses another kernel set on x86
/// and can only replace or add to its destination. Here the microkernels scale the destination
/// as they add to it, and they are faster for the crate's shapes (Intel Xeon, one thread:
/// 175 against 160 GFLOP/s at 256^3, 167 against 150 at 1024^3; two threads at 256^3: 315
/// against 231). The sum over the inner dimension is blocked by the shape and the cache sizes
/// alone, so results do not depend on the thread count.
pub(crate) fn gemm_seq(
    dst: faer::MatMut<'_, f32>,
    keep: f32,
    lhs: faer::MatRef<'_, f32>,
    rhs: faer::MatRef<'_, f32>,
    scale: f32,
) {
    gemm_on(faer::Par::Seq, dst, keep, lhs, rhs, scale);
}

/// [`gemm_seq`] on the crate's pool with all its threads (as [`with_faer_par`] decides: not for
/// `Par::Seq`, a one-thread pool, or fewer than [`PAR_FLOPS`] flops).
pub(crate) fn gemm(
    par: Par,
    dst: faer::MatMut<'_, f32>,
    keep: f32,
    lhs: faer::MatRef<'_, f32>,
    rhs: faer::MatRef<'_, f32>,
    scale: f32,
) -> Result<()> {
    let flops = 2.0 * (dst.nrows() * dst.ncols()) as f64 * lhs.ncols() as f64;
    with_faer_par(par, flops, |fp| gemm_on(fp, dst, keep, lhs, rhs, scale))
}

/// [`gemm_seq`] on the threads of `fp` (inside the pool that `with_faer_par` entered).
pub(crate) fn gemm_on(
    fp: faer::Par,
    dst: faer::MatMut<'_, f32>,
    keep: f32,
    lhs: faer::MatRef<'_, f32>,
    rhs: faer::MatRef<'_, f32>,
    scale: f32,
) {
    let parallelism = match fp.degree() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    };
    let (m, n, k) = (dst.nrows(), dst.ncols(), lhs.ncols());
    assert!(
        lhs.nrows() == m && rhs.nrows() == k && rhs.ncols() == n,
        "gemm: {m} x {n} += ({} x {}) ({} x {})",
        lhs.nrows(),
        k,
        rhs.nrows(),
        rhs.ncols()
    );
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: each pointer with its strides addresses exactly the elements of its view (faer's
    // views guarantee that), and gemm touches no others: it reads `m x k` of `lhs` and `k x n`
    // of `rhs`, reads `dst` only when `keep != 0`, and writes its `m x n`. `dst` is a unique
    // borrow, so it overlaps neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_ptr_mut(),
            dst.col_stride(),
            dst.row_stride(),
            keep != 0.0,
            lhs.as_ptr(),
            lhs.col_stride(),
            lhs.row_stride(),
            rhs.as_ptr(),
            rhs.col_stride(),
            rhs.row_stride(),
            keep,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Work that can be cut in two at an element index (a set of equally long slices).
pub(crate) trait Split: Send + Sized {
    /// Number of elements.
    fn len(&self) -> usize;
    /// The first `mid` elements and the rest.
    fn split_at(self, mid: usize) -> (Self, Self);
}

/// A slice is cut at an element index.
impl<T: Sync> Split for &[T] {
    fn len(&self) -> usize {
        <[T]>::len(self)
    }

    fn split_at(self, mid: usize) -> (Self, Self) {
        <[T]>::split_at(self, mid)
    }
}

/// A mutable slice is cut at an element index.
impl<T: Send> Split for &mut [T] {
    fn len(&self) -> usize {
        <[T]>::len(self)
    }

    fn split_at(self, mid: usize) -> (Self, Self) {
        self.split_at_mut(mid)
    }
}

/// Implements [`Split`] for a struct of slices that are cut at the same element; its length is
/// that of the first field listed. Each field is cut at `mid`, or as marked:
/// * `field: upto`: at `min(mid, len)` (a slice that is empty when unused, e.g. amsgrad's `vmax`);
/// * `field: per(K)`: at `ceil(mid / K)` (one entry per `K` elements, e.g. block scales; `mid`
///   must then be a multiple of `K` or the whole length).
///
/// `; offset` names a field holding the index of the first element, which moves by `mid`.
macro_rules! split_fields {
    ($ty:ident { $($field:ident $(: $mode:ident $(($arg:expr))?)?),+ $(,)? } $(; $offset:ident)?) => {
        impl $crate::dispatch::Split for $ty<'_> {
            fn len(&self) -> usize {
                $crate::dispatch::split_fields!(@first $(self.$field),+).len()
            }

            fn split_at(self, mid: usize) -> (Self, Self) {
                let total = $crate::dispatch::Split::len(&self);
                let _ = total;
                $(
                    let $field = {
                        let at = $crate::dispatch::split_fields!(
                            @cut mid, total, self.$field $(, $mode $(($arg))?)?
                        );
                        $crate::dispatch::Split::split_at(self.$field, at)
                    };
                )+
                (
                    $ty { $($field: $field.0,)+ $($offset: self.$offset,)? },
                    $ty { $($field: $field.1,)+ $($offset: self.$offset + mid,)? },
                )
            }
        }
    };
    (@first $first:expr $(, $rest:expr)*) => { $first };
    (@cut $mid:ident, $total:ident, $x:expr) => { $mid };
    (@cut $mid:ident, $total:ident, $x:expr, upto) => { $mid.min($x.len()) };
    (@cut $mid:ident, $total:ident, $x:expr, per($k:expr)) => {{
        debug_assert!($mid.is_multiple_of($k) || $mid == $total);
        $mid.div_ceil($k)
    }};
}
pub(crate) use split_fields;

/// Cuts `work` into blocks of `block` elements (the last one shorter) and runs `map` on each,
/// combining results with `reduce` along a binary tree fixed by `work.len()` and `block` alone.
/// Runs on the crate's pool when there are at least two blocks and more than one thread;
/// otherwise on the calling thread, along the same tree.
pub(crate) fn map_reduce_blocks<W, R, M, F>(
    par: Par,
    work: W,
    block: usize,
    map: &M,
    reduce: &F,
) -> Result<R>
where
    W: Split,
    R: Send,
    M: Fn(W) -> R + Sync,
    F: Fn(R, R) -> R + Sync,
{
    let block = block.max(1);
    let pool = if par == Par::Pool && work.len() > block {
        pool()?
    } else {
        None
    };
    Ok(match pool {
        Some(pool) => enter(&pool, || recurse(work, block, true, map, reduce)),
        None => recurse(work, block, false, map, reduce),
    })
}

fn recurse<W, R, M, F>(work: W, block: usize, parallel: bool, map: &M, reduce: &F) -> R
where
    W: Split,
    R: Send,
    M: Fn(W) -> R + Sync,
    F: Fn(R, R) -> R + Sync,
{
    let n_blocks = work.len().div_ceil(block);
    if n_blocks <= 1 {
        return map(work);
    }
    let (left, right) = work.split_at(n_blocks.div_ceil(2) * block);
    let (a, b) = if parallel {
        rayon::join(
            || recurse(left, block, true, map, reduce),
            || recurse(right, block, true, map, reduce),
        )
    } else {
        (
            recurse(left, block, false, map, reduce),
            recurse(right, block, false, map, reduce),
        )
    };
    reduce(a, b)
}

/// Runs `phases` phases of two units each, one phase after the other: `unit(p, h)` is unit `h`
/// (0 or 1) of phase `p`, and every unit of phase `p` finishes before any of phase `p + 1`
/// starts. The two units of a phase must touch disjoint data.
///
/// Without `parallel`, on the calling thread in the order `(0, 0), (0, 1), (1, 0), ...`. With
/// it (the caller inside a pool of two or more threads), the calling thread and one pool
/// worker each claim whichever unit of the current phase is unclaimed, and between phases they
/// spin instead of sleeping: a rayon `join` per phase would let the worker fall asleep between
/// short phases, and waking it costs 20-60 us on a VM (measured on the Intel Xeon, 2 cores:
/// the two-thread QR was no faster than the one-thread one). A waiting thread spins for 2^10
/// `pause`s (tens of microseconds), then yields at every check, so an oversubscribed machine
/// gets the core back. A thread waits only for a unit the other has claimed, which that thread
/// is running, so nothing waits for a thread that has not started: when no worker comes, the
/// caller runs every unit.
pub(crate) fn phase_pairs(parallel: bool, phases: usize, unit: &(dyn Fn(usize, usize) + Sync)) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    if !parallel {
        for p in 0..phases {
            unit(p, 0);
            unit(p, 1);
        }
        return;
    }
    /// Counts a unit done when dropped, so that a panicking unit still releases the other thread.
    struct Done<'a>(&'a AtomicUsize);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Release);
        }
    }
    let claimed: Vec<AtomicUsize> = (0..phases).map(|_| AtomicUsize::new(0)).collect();
    let done: Vec<AtomicUsize> = (0..phases).map(|_| AtomicUsize::new(0)).collect();
    let drive = || {
        for p in 0..phases {
            loop {
                let h = claimed[p].fetch_add(1, Ordering::Relaxed);
                if h >= 2 {
                    break;
                }
                let _done = Done(&done[p]);
                unit(p, h);
            }
            let mut spins = 0u32;
            while done[p].load(Ordering::Acquire) < 2 {
                if spins < 1 << 10 {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
    };
    rayon::join(drive, drive);
}

/// A buffer that the two units of a [`phase_pairs`] phase cut into disjoint slices.
pub(crate) struct Shared<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: `Shared` only hands out slices through its `unsafe` methods, whose callers guarantee
// that no two live slices overlap unless both are shared; the elements are `Send + Sync`.
unsafe impl<T: Send + Sync> Sync for Shared<T> {}

impl<T> Shared<T> {
    pub(crate) fn new(data: &mut [T]) -> Self {
        Shared {
            ptr: data.as_mut_ptr(),
            len: data.len(),
        }
    }

    /// # Safety
    /// No slice of `range` obtained by [`Shared::get_mut`] may be alive, and the buffer that
    /// `new` took must outlive the slice without being used directly.
    pub(crate) unsafe fn get(&self, range: core::ops::Range<usize>) -> &[T] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: in bounds (checked); the caller guarantees nothing writes the range.
        unsafe { core::slice::from_raw_parts(self.ptr.add(range.start), range.len()) }
    }

    /// # Safety
    /// No other slice overlapping `range` may be alive, and the buffer that `new` took must
    /// outlive the slice without being used directly.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn get_mut(&self, range: core::ops::Range<usize>) -> &mut [T] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: in bounds (checked); the caller guarantees the range is not aliased.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}

/// The columns of a matrix that the two units of a [`phase_pairs`] phase cut into
/// disjoint column ranges.
pub(crate) struct SharedCols {
    ptr: *mut f32,
    nrows: usize,
    ncols: usize,
    col_stride: usize,
}

// SAFETY: as for `Shared`: views come only from the `unsafe` method below, whose callers
// guarantee that no two live views share a column.
unsafe impl Sync for SharedCols {}

impl SharedCols {
    pub(crate) fn new(mut m: faer::MatMut<'_, f32>) -> Self {
        assert!(m.row_stride() == 1 && m.col_stride() >= 0);
        SharedCols {
            ptr: faer::reborrow::ReborrowMut::rb_mut(&mut m).as_ptr_mut(),
            nrows: m.nrows(),
            ncols: m.ncols(),
            col_stride: m.col_stride() as usize,
        }
    }

    /// Columns `c0..c1`.
    ///
    /// # Safety
    /// No other view of these columns may be alive, and the matrix that `new` took must outlive
    /// the view without being used directly.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn cols_mut(&self, c0: usize, c1: usize) -> faer::MatMut<'_, f32> {
        assert!(c0 <= c1 && c1 <= self.ncols);
        // SAFETY: columns c0..c1 of the matrix `new` took (unit row stride, `col_stride`
        // apart), in bounds (checked); the caller guarantees they are not aliased.
        unsafe {
            faer::MatMut::from_raw_parts_mut(
                self.ptr.add(c0 * self.col_stride),
                self.nrows,
                c1 - c0,
                1,
                self.col_stride as isize,
            )
        }
    }
}

/// Runs `f` on each item, in parallel on the crate's pool when there are several items and
/// threads. For work whose items are already balanced (see the multi-tensor entry points).
pub(crate) fn for_each_item<T: Send, F: Fn(T) + Sync>(par: Par, items: Vec<T>, f: F) -> Result<()> {
    use rayon::prelude::*;
    if par == Par::Pool && items.len() > 1 {
        if let Some(pool) = pool()? {
            enter(&pool, || items.into_par_iter().for_each(&f));
            return Ok(());
        }
    }
    items.into_iter().for_each(f);
    Ok(())
}

/// Sums `x * 0` over a slice: zero when every value is finite, NaN otherwise.
/// Used by the finite checks of every kernel family.
pub(crate) struct FiniteScan<'a> {
    pub values: &'a [f32],
    pub scale: f32,
}

impl WithSimd for FiniteScan<'_> {
    type Output = bool;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> bool {
        let (head, tail) = S::as_simd_f32s(self.values);
        let scale = simd.splat_f32s(self.scale);
        let zero = simd.splat_f32s(0.0);
        // PERF: four independent accumulators hide the add latency.
        let mut acc = [zero; 4];
        let (quads, rest) = pulp::as_arrays::<4, _>(head);
        for quad in quads {
            for k in 0..4 {
                acc[k] = finite_lane(simd, acc[k], quad[k], scale);
            }
        }
        for &x in rest {
            acc[0] = finite_lane(simd, acc[0], x, scale);
        }
        // Zero padding in the tail is finite, so the tail runs the same lane function.
        acc[1] = finite_lane(simd, acc[1], simd.partial_load_f32s(tail), scale);
        let total = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
        simd.reduce_sum_f32s(total) == 0.0
    }
}

/// `acc + (x * scale) * 0`: stays zero while `x * scale` is finite, becomes NaN otherwise.
#[inline(always)]
fn finite_lane<S: Simd>(simd: S, acc: S::f32s, x: S::f32s, scale: S::f32s) -> S::f32s {
    simd.mul_add_f32s(simd.mul_f32s(x, scale), simd.splat_f32s(0.0), acc)
}

/// Returns the calling thread's vector registers to their clean state (`vzeroupper`, emitted
/// by the compiler when a function that used 256/512-bit registers returns). Call after faer:
/// its assembly GEMM kernels return with the upper halves dirty, and on Intel CPUs with
/// AVX-512 every legacy-SSE instruction that follows (scalar Rust f64 code, glibc's `exp`
/// wrapper) then pays a state transition: measured 10x slower scalar loops and 75x slower
/// `exp` calls on an Intel Xeon (see docs/performance.md).
pub(crate) fn clean_vector_state() {
    pulp::Arch::new().dispatch(CleanVectorState);
}

struct CleanVectorState;

impl WithSimd for CleanVectorState {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        // A full-width register that the optimiser cannot remove, so the function uses the
        // upper halves and returns through `vzeroupper`.
        std::hint::black_box(simd.splat_f32s(0.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// Every unit runs once, and every unit of a phase sees both units of the phase before it
    /// finished, on one thread, on two, and on a larger pool.
    #[test]
    fn phase_pairs_orders_phases_and_runs_each_unit_once() {
        const PHASES: usize = 200;
        for threads in [1, 2, 4] {
            let pool = build_pool(threads).unwrap();
            for parallel in [false, true] {
                let runs: Vec<AtomicUsize> = (0..2 * PHASES).map(|_| AtomicUsize::new(0)).collect();
                let order = Mutex::new(Vec::new());
                pool.install(|| {
                    phase_pairs(parallel, PHASES, &|p, h| {
                        for prev in 0..2 {
                            if p > 0 {
                                assert_eq!(runs[2 * (p - 1) + prev].load(Ordering::SeqCst), 1);
                            }
                        }
                        // Some work of uneven length, so that the units overlap.
                        let spin = (p * 7 + h * 13) % 50;
                        std::hint::black_box((0..spin * 100).sum::<usize>());
                        runs[2 * p + h].fetch_add(1, Ordering::SeqCst);
                        order.lock().unwrap().push(p);
                    })
                });
                assert!(runs.iter().all(|r| r.load(Ordering::SeqCst) == 1));
                let order = order.into_inner().unwrap();
                assert!(order.windows(2).all(|w| w[0] <= w[1]), "{threads} threads");
            }
        }
    }

    /// A unit that panics releases the other thread: the panic reaches the caller, nothing hangs.
    #[test]
    fn phase_pairs_propagates_a_panic() {
        let pool = build_pool(2).unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| {
                phase_pairs(true, 50, &|p, h| {
                    if p == 10 && h == 1 {
                        panic!("unit (10, 1)");
                    }
                })
            })
        }));
        assert!(result.is_err());
    }
}
