/* The host's floating-point environment: a host built with -Ofast (gcc/clang link crtfastmath.o,
 * which sets MXCSR.FTZ (bit 15) and MXCSR.DAZ (bit 6) at start-up) or one that calls
 * _mm_setcsr itself runs diagprec's kernels on its thread with subnormals flushed to zero.
 * What this program checks, under FTZ|DAZ set by the caller:
 *   1. every kernel returns its usual status (no crash, no trap, no spurious DP_ERR_NON_FINITE;
 *      NaN and Inf are still found: DAZ does not touch them);
 *   2. the caller's MXCSR is unchanged by the calls (the library neither sets nor resets it);
 *   3. with inputs and intermediates in the normal range the results are bitwise those of the
 *      default environment (FTZ/DAZ only act on subnormals);
 *   4. with subnormal gradients (|g| < 2^-126) each moment differs from the default
 *      environment's by less than FLT_MIN (2^-126) in absolute value (a subnormal read as, or
 *      rounded to, zero); parameters of normal size do not change; the global norm differs by
 *      less than FLT_MIN;
 *   5. with dp_set_num_threads(1) (every kernel on the caller's thread) the result under
 *      FTZ|DAZ does not depend on the length's split into blocks.
 * What it reports without asserting (it depends on when the pool threads were started:
 * threads inherit the creating thread's MXCSR): whether a multi-threaded run under FTZ|DAZ
 * gives the same bits as the single-threaded one. */
#include <float.h>
#include <stdint.h>
#include <stdlib.h>

#include "dp_test.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>

#define FTZ_DAZ 0x8040u /* MXCSR bit 15 (flush to zero) | bit 6 (denormals are zero) */

enum { N = 3 * 16384 + 17 }; /* several blocks: the pool splits it */

static float param_in[N], grad_normal[N], grad_sub[N];

static void setup(void) {
    for (unsigned i = 0; i < N; i++) {
        param_in[i] = 0.5f + dp_value(i, 1, 0.25f);
        grad_normal[i] = dp_value(i, 2, 1e-2f) + (i % 2 ? 1e-3f : -1e-3f);
        /* Subnormal gradients, every other element, normal ones between. */
        grad_sub[i] = i % 2 ? dp_value(i, 3, 1e-39f) : grad_normal[i];
    }
}

typedef struct {
    float p[N], m[N], v[N];
    double norm;
} Out;

/* Two Adam steps over the tensor (the second sees the first's moments) and the norm. */
static void run(const float *grad, Out *o) {
    dp_adam_config cfg = dp_adam_config_default();
    cfg.lr = 1e-3;
    cfg.check_finite = 1;
    memcpy(o->p, param_in, sizeof o->p);
    memset(o->m, 0, sizeof o->m);
    memset(o->v, 0, sizeof o->v);
    for (uint64_t step = 1; step <= 2; step++) {
        CHECK_STATUS(dp_adam_step_f32(&cfg, step, o->p, grad, o->m, o->v, NULL, N), DP_OK);
    }
    /* The norm through the sharded pieces (bitwise dp_grad_norm_multi_f32's norm). */
    dp_adam_tensor_f32 t = {o->p, grad, o->m, o->v, NULL, N};
    double partials[4];
    uint32_t found_inf = 7;
    CHECK(dp_grad_norm_piece_count(N) == 4);
    CHECK_STATUS(dp_grad_norm_partials_f32(&t, 1, 1.0, partials, 4, &found_inf), DP_OK);
    CHECK(found_inf == 0);
    CHECK_STATUS(dp_grad_norm_combine(partials, 4, &o->norm), DP_OK);
}

static size_t max_abs_diff_count(const float *a, const float *b, float bound, float *worst) {
    size_t bad = 0;
    *worst = 0.0f;
    for (unsigned i = 0; i < N; i++) {
        float d = fabsf(a[i] - b[i]);
        if (d > *worst) *worst = d;
        bad += !(d < bound);
    }
    return bad;
}

static Out ref_normal, ref_sub, ftz_normal, ftz_sub, ftz_sub_pool;

/* Whether this CPU (or emulator: valgrind ignores the two bits) honours FTZ|DAZ: the bits read
 * back and a subnormal operand is read as zero. */
static int ftz_daz_effective(unsigned saved) {
    _mm_setcsr((saved & ~FTZ_DAZ) | FTZ_DAZ);
    volatile float tiny = 1e-40f;
    volatile float twice = tiny * 2.0f;
    int ok = (_mm_getcsr() & FTZ_DAZ) == FTZ_DAZ && twice == 0.0f;
    _mm_setcsr(saved);
    return ok;
}

int main(void) {
    setup();
    const unsigned saved = _mm_getcsr();
    if (!ftz_daz_effective(saved)) {
        printf("fp_env: FTZ|DAZ not honoured here (valgrind?): skipped\n");
        return dp_test_finish("fp_env");
    }
    CHECK_STATUS(dp_set_num_threads(1), DP_OK);

    /* The default environment. */
    _mm_setcsr(saved & ~FTZ_DAZ);
    run(grad_normal, &ref_normal);
    run(grad_sub, &ref_sub);
    /* Under default rounding the subnormal gradients leave subnormal moments. */
    int any_subnormal = 0;
    for (unsigned i = 1; i < N; i += 2) any_subnormal |= ref_sub.m[i] != 0.0f;
    CHECK(any_subnormal);

    /* FTZ | DAZ, as an -Ofast host has. */
    _mm_setcsr((saved & ~FTZ_DAZ) | FTZ_DAZ);
    run(grad_normal, &ftz_normal);
    run(grad_sub, &ftz_sub);
    CHECK(_mm_getcsr() == ((saved & ~FTZ_DAZ) | FTZ_DAZ)); /* 2: left as the caller set it */
    /* Compare in the default environment: under DAZ a subnormal reads as zero here too. */
    _mm_setcsr(saved & ~FTZ_DAZ);

    /* 3: normal range: the same bits. */
    CHECK(dp_same_bits(ftz_normal.p, ref_normal.p, N));
    CHECK(dp_same_bits(ftz_normal.m, ref_normal.m, N));
    CHECK(dp_same_bits(ftz_normal.v, ref_normal.v, N));
    CHECK(ftz_normal.norm == ref_normal.norm);

    /* 4: subnormal gradients: moments within FLT_MIN, normal-size parameters unchanged. */
    float worst_m, worst_v, worst_p;
    CHECK(max_abs_diff_count(ftz_sub.m, ref_sub.m, FLT_MIN, &worst_m) == 0);
    CHECK(max_abs_diff_count(ftz_sub.v, ref_sub.v, FLT_MIN, &worst_v) == 0);
    max_abs_diff_count(ftz_sub.p, ref_sub.p, FLT_MIN, &worst_p);
    CHECK(dp_same_bits(ftz_sub.p, ref_sub.p, N));
    CHECK(fabs(ftz_sub.norm - ref_sub.norm) < FLT_MIN);
    size_t flushed = 0;
    for (unsigned i = 1; i < N; i += 2) flushed += ftz_sub.m[i] == 0.0f && ref_sub.m[i] != 0.0f;
    CHECK(flushed > 0); /* FTZ/DAZ did act: this test can tell the two environments apart */

    /* NaN and Inf are still found under DAZ (check_finite, and the norm's found_inf). */
    _mm_setcsr((saved & ~FTZ_DAZ) | FTZ_DAZ);
    {
        float p = 1.0f, g = NAN, m = 0.0f, v = 0.0f;
        dp_adam_config cfg = dp_adam_config_default();
        cfg.check_finite = 1;
        CHECK_STATUS(dp_adam_step_f32(&cfg, 1, &p, &g, &m, &v, NULL, 1), DP_ERR_NON_FINITE);
        CHECK(p == 1.0f && m == 0.0f && v == 0.0f);
        g = INFINITY;
        dp_adam_tensor_f32 t = {&p, &g, &m, &v, NULL, 1};
        double partial = 0.0;
        uint32_t found_inf = 0;
        CHECK_STATUS(dp_grad_norm_partials_f32(&t, 1, 1.0, &partial, 1, &found_inf), DP_OK);
        CHECK(found_inf == 1);
    }

    /* 5: one thread, same bits on a second run (and the split does not matter on one thread:
     * every block runs on the caller's thread with its MXCSR). */
    {
        static Out again;
        run(grad_sub, &again);
        CHECK(dp_same_bits(again.m, ftz_sub.m, N) && dp_same_bits(again.p, ftz_sub.p, N));
        CHECK(dp_same_bits(again.v, ftz_sub.v, N));
    }

    /* Reported only: the pool's threads were started here, under FTZ|DAZ, and inherit it. */
    CHECK_STATUS(dp_set_num_threads(2), DP_OK);
    run(grad_sub, &ftz_sub_pool);
    _mm_setcsr(saved);
    int pool_same = dp_same_bits(ftz_sub_pool.m, ftz_sub.m, N) &&
                    dp_same_bits(ftz_sub_pool.v, ftz_sub.v, N);
    CHECK_STATUS(dp_set_num_threads(0), DP_OK);
    printf("fp_env: FTZ|DAZ: normal range bitwise equal; subnormal gradients: %zu moments "
           "flushed, largest change %g (m) %g (v) %g (param); 2 pool "
           "threads started under FTZ|DAZ give %s bits\n",
           flushed, (double)worst_m, (double)worst_v, (double)worst_p, pool_same ? "the same" : "DIFFERENT");
    return dp_test_finish("fp_env");
}
#else
int main(void) {
    printf("fp_env: not x86-64, skipped\n");
    return dp_test_finish("fp_env");
}
#endif
