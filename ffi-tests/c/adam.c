/* Adam/AdamW through the C ABI: real steps against a double-precision reference written here,
 * the multi-tensor call, threads, and every error status with its no-write guarantee. */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "dp_test.h"

#define N 37

/* The 1.0 layout of dp_adam_config (LP64): a leading size, six doubles, four uint32_t flags. */
#if UINTPTR_MAX == 0xffffffffffffffffu
_Static_assert(sizeof(dp_adam_config) == 72, "dp_adam_config is 72 bytes");
_Static_assert(offsetof(dp_adam_config, struct_size) == 0, "struct_size leads");
_Static_assert(offsetof(dp_adam_config, lr) == 8, "lr");
_Static_assert(offsetof(dp_adam_config, inv_grad_scale) == 48, "inv_grad_scale");
_Static_assert(offsetof(dp_adam_config, decoupled_weight_decay) == 56, "first flag");
_Static_assert(offsetof(dp_adam_config, check_finite) == 68, "last flag");
_Static_assert(sizeof(dp_adam_tensor_f32) == 48, "dp_adam_tensor_f32 is 48 bytes");
#endif

typedef struct state {
    float p[N], g[N], m[N], v[N], x[N];
} state;

static void fill(state *s, unsigned seed) {
    for (unsigned i = 0; i < N; i++) {
        s->p[i] = dp_value(i, seed, 1.0f);
        s->g[i] = dp_value(i, seed + 1, 0.1f);
        s->m[i] = dp_value(i, seed + 2, 0.01f);
        s->v[i] = fabsf(dp_value(i, seed + 3, 1e-3f));
        s->x[i] = s->v[i] * 1.5f;
    }
}

/* One Adam/AdamW step in double from the float state. */
static void reference_step(const dp_adam_config *c, uint64_t t, const state *s, double *p_out) {
    double bc1 = 1.0 - pow(c->beta1, (double)t), bc2 = 1.0 - pow(c->beta2, (double)t);
    for (unsigned i = 0; i < N; i++) {
        double p = s->p[i], g = s->g[i] * c->inv_grad_scale;
        if (c->maximize) g = -g;
        if (c->decoupled_weight_decay)
            p *= 1.0 - c->lr * c->weight_decay;
        else
            g += c->weight_decay * p;
        double m = c->beta1 * s->m[i] + (1.0 - c->beta1) * g;
        double v = c->beta2 * s->v[i] + (1.0 - c->beta2) * g * g;
        if (c->amsgrad && s->x[i] > v) v = s->x[i];
        p_out[i] = p - (c->lr / bc1) * m / (sqrt(v) / sqrt(bc2) + c->eps);
    }
}

static void real_steps_match_the_reference(void) {
    dp_adam_config configs[3];
    configs[0] = dp_adam_config_default();
    configs[1] = dp_adam_config_default();
    configs[1].lr = 1e-2;
    configs[1].weight_decay = 0.1;
    configs[1].decoupled_weight_decay = 1;
    configs[1].amsgrad = 1;
    configs[2] = dp_adam_config_default();
    configs[2].weight_decay = 0.05;
    configs[2].maximize = 1;
    configs[2].inv_grad_scale = 0.25;
    for (int c = 0; c < 3; c++) {
        state s;
        fill(&s, 10u + (unsigned)c);
        for (uint64_t t = 1; t <= 20; t++) {
            double expected[N];
            reference_step(&configs[c], t, &s, expected);
            CHECK_STATUS(dp_adam_step_f32(&configs[c], t, s.p, s.g, s.m, s.v,
                                          configs[c].amsgrad ? s.x : NULL, N),
                         DP_OK);
            for (unsigned i = 0; i < N; i++) {
                double tol = 1e-6 * (fabs(expected[i]) + configs[c].lr);
                if (fabs(s.p[i] - expected[i]) > tol) {
                    CHECK(fabs(s.p[i] - expected[i]) <= tol);
                    fprintf(stderr, "config %d step %d elem %u: %.9g vs %.9g\n", c, (int)t, i,
                            s.p[i], expected[i]);
                    return;
                }
            }
            for (unsigned i = 0; i < N; i++) s.g[i] = dp_value(i, (unsigned)(t * 7 + c), 0.1f);
        }
    }
}

static void defaults_are_torchs(void) {
    dp_adam_config c = dp_adam_config_default();
    CHECK(c.lr == 1e-3 && c.beta1 == 0.9 && c.beta2 == 0.999 && c.eps == 1e-8);
    CHECK(c.weight_decay == 0.0 && !c.amsgrad && !c.maximize && !c.decoupled_weight_decay);
    CHECK(c.check_finite == 0 && c.inv_grad_scale == 1.0);
    CHECK(c.struct_size == sizeof(dp_adam_config));
    CHECK(c.decoupled_weight_decay == 0 && c.amsgrad == 0 && c.maximize == 0);
    CHECK(strlen(dp_version()) >= 5);
    CHECK(strcmp(dp_status_str(DP_ERR_ALIASING), "DP_ERR_ALIASING") == 0);
    CHECK(strcmp(dp_status_str(12345), "DP_UNKNOWN_STATUS") == 0);
    CHECK(strlen(dp_isa_name()) > 0);
}

static void multi_equals_single_and_threads_agree(void) {
    enum { T = 4 };
    static float bufs[2][T][5][5000];
    const size_t lens[T] = {1, 0, 4999, 17};
    dp_adam_config c = dp_adam_config_default();
    c.amsgrad = 1;
    for (int copy = 0; copy < 2; copy++)
        for (int t = 0; t < T; t++)
            for (int b = 0; b < 5; b++)
                for (unsigned i = 0; i < 5000; i++)
                    bufs[copy][t][b][i] = b >= 3 ? fabsf(dp_value(i, (unsigned)(t * 5 + b), 1.0f))
                                                 : dp_value(i, (unsigned)(t * 5 + b), 1.0f);
    dp_adam_tensor_f32 tensors[T];
    for (int t = 0; t < T; t++) {
        tensors[t].param = bufs[0][t][0];
        tensors[t].grad = bufs[0][t][1];
        tensors[t].exp_avg = bufs[0][t][2];
        tensors[t].exp_avg_sq = bufs[0][t][3];
        tensors[t].max_exp_avg_sq = bufs[0][t][4];
        tensors[t].len = lens[t];
    }
    CHECK_STATUS(dp_set_num_threads(2), DP_OK);
    CHECK(dp_get_num_threads() == 2);
    CHECK_STATUS(dp_adam_step_multi_f32(&c, 3, tensors, T), DP_OK);
    CHECK_STATUS(dp_set_num_threads(1), DP_OK);
    for (int t = 0; t < T; t++)
        CHECK_STATUS(dp_adam_step_f32(&c, 3, bufs[1][t][0], bufs[1][t][1], bufs[1][t][2],
                                      bufs[1][t][3], bufs[1][t][4], lens[t]),
                     DP_OK);
    CHECK(memcmp(bufs[0], bufs[1], sizeof bufs[0]) == 0);
    CHECK_STATUS(dp_set_num_threads(0), DP_OK);
    CHECK_STATUS(dp_adam_step_multi_f32(&c, 1, NULL, 0), DP_OK);
}

/* Every error status, each with a snapshot showing nothing was written. */
static void errors_write_nothing(void) {
    state s, before;
    fill(&s, 99);
    before = s;
    dp_adam_config c = dp_adam_config_default();
#define UNCHANGED() CHECK(memcmp(&s, &before, sizeof s) == 0)

    CHECK_STATUS(dp_adam_step_f32(NULL, 1, s.p, s.g, s.m, s.v, NULL, N), DP_ERR_NULL_POINTER);
    CHECK_STATUS(dp_adam_step_f32(&c, 1, NULL, s.g, s.m, s.v, NULL, N), DP_ERR_NULL_POINTER);
    CHECK(strstr(dp_last_error_message(), "param") != NULL);
    CHECK_STATUS(dp_adam_step_f32(&c, 1, s.p, NULL, s.m, s.v, NULL, N), DP_ERR_NULL_POINTER);
    c.amsgrad = 1;
    CHECK_STATUS(dp_adam_step_f32(&c, 1, s.p, s.g, s.m, s.v, NULL, N), DP_ERR_NULL_POINTER);
    c.amsgrad = 0;
    CHECK_STATUS(dp_adam_step_f32(&c, 1, NULL, NULL, NULL, NULL, NULL, 0), DP_OK);
    UNCHANGED();

    CHECK_STATUS(dp_adam_step_f32(&c, 1, s.p, s.g, s.m, s.v, NULL, SIZE_MAX / 2), DP_ERR_LENGTH);
    UNCHANGED();

    CHECK_STATUS(dp_adam_step_f32(&c, 1, s.p, s.g, s.p, s.v, NULL, N), DP_ERR_ALIASING);
    CHECK_STATUS(dp_adam_step_f32(&c, 1, s.p + 1, s.p, s.m, s.v, NULL, N), DP_ERR_ALIASING);
    UNCHANGED();

    dp_adam_config bad = c;
    bad.beta1 = 1.0;
    CHECK_STATUS(dp_adam_step_f32(&bad, 1, s.p, s.g, s.m, s.v, NULL, N),
                 DP_ERR_INVALID_HYPERPARAMETER);
    CHECK(strstr(dp_last_error_message(), "beta1") != NULL);
    bad = c;
    bad.eps = 0.0;
    CHECK_STATUS(dp_adam_step_f32(&bad, 1, s.p, s.g, s.m, s.v, NULL, N),
                 DP_ERR_INVALID_HYPERPARAMETER);
    bad = c;
    bad.lr = NAN;
    CHECK_STATUS(dp_adam_step_f32(&bad, 1, s.p, s.g, s.m, s.v, NULL, N),
                 DP_ERR_INVALID_HYPERPARAMETER);
    CHECK_STATUS(dp_adam_step_f32(&c, 0, s.p, s.g, s.m, s.v, NULL, N),
                 DP_ERR_INVALID_HYPERPARAMETER);
    UNCHANGED();

    bad = c;
    bad.check_finite = 1;
    s.g[N - 1] = NAN;
    before.g[N - 1] = NAN;
    CHECK_STATUS(dp_adam_step_f32(&bad, 1, s.p, s.g, s.m, s.v, NULL, N), DP_ERR_NON_FINITE);
    UNCHANGED();
    s.g[N - 1] = before.g[N - 1] = 0.5f;

    float *misaligned = (float *)(void *)((char *)(void *)s.m + 1);
    CHECK_STATUS(dp_adam_step_f32(&c, 1, s.p, s.g, misaligned, s.v, NULL, N - 1),
                 DP_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dp_set_num_threads(1000000), DP_ERR_INVALID_ARGUMENT);
    UNCHANGED();

    CHECK_STATUS(dp_check_panic_boundary(), DP_ERR_PANIC);

    /* Multi-tensor: overlap across tensors, a NaN in the last one, a list too long to check. */
    dp_adam_tensor_f32 ts[2] = {{s.p, s.g, s.m, s.v, NULL, 10}, {s.p + 5, s.g, s.x, s.x + 10, NULL, 5}};
    CHECK_STATUS(dp_adam_step_multi_f32(&c, 1, ts, 2), DP_ERR_ALIASING);
    CHECK(strstr(dp_last_error_message(), "tensors[1].param") != NULL);
    ts[1].param = s.p + 20;
    CHECK_STATUS(dp_adam_step_multi_f32(&c, 1, ts, 2), DP_OK);
    before = s;
    s.g[3] = INFINITY;
    before.g[3] = INFINITY;
    CHECK_STATUS(dp_adam_step_multi_f32(&bad, 2, ts, 2), DP_ERR_NON_FINITE);
    UNCHANGED();
    CHECK_STATUS(dp_adam_step_multi_f32(&c, 1, NULL, 3), DP_ERR_NULL_POINTER);
    CHECK_STATUS(dp_adam_step_multi_f32(&c, 1, ts, SIZE_MAX / 2 / sizeof(dp_adam_tensor_f32)),
                 DP_ERR_ALLOCATION);
    UNCHANGED();
#undef UNCHANGED
}

/* Several C threads stepping disjoint buffers at once give the serial results; each thread's
 * error message is its own. */
typedef struct job {
    state s;
    int fail_first;
    int ok;
} job;

static void *run_job(void *arg) {
    job *j = (job *)arg;
    dp_adam_config c = dp_adam_config_default();
    j->ok = 1;
    if (j->fail_first) {
        j->ok &= dp_adam_step_f32(&c, 0, j->s.p, j->s.g, j->s.m, j->s.v, NULL, N) ==
                 DP_ERR_INVALID_HYPERPARAMETER;
    }
    for (uint64_t t = 1; t <= 50; t++)
        j->ok &= dp_adam_step_f32(&c, t, j->s.p, j->s.g, j->s.m, j->s.v, NULL, N) == DP_OK;
    if (j->fail_first) {
        j->ok &= dp_adam_step_f32(&c, 0, j->s.p, j->s.g, j->s.m, j->s.v, NULL, N) ==
                 DP_ERR_INVALID_HYPERPARAMETER;
        j->ok &= strstr(dp_last_error_message(), "step") != NULL;
    }
    return NULL;
}

static void many_c_threads_at_once(void) {
    enum { J = 6 };
    static job jobs[J];
    static state serial;
    pthread_t threads[J];
    for (int i = 0; i < J; i++) {
        fill(&jobs[i].s, 500);
        jobs[i].fail_first = i % 2;
    }
    serial = jobs[0].s;
    for (int i = 0; i < J; i++) CHECK(pthread_create(&threads[i], NULL, run_job, &jobs[i]) == 0);
    for (int i = 0; i < J; i++) CHECK(pthread_join(threads[i], NULL) == 0);
    dp_adam_config c = dp_adam_config_default();
    for (uint64_t t = 1; t <= 50; t++)
        CHECK_STATUS(dp_adam_step_f32(&c, t, serial.p, serial.g, serial.m, serial.v, NULL, N),
                     DP_OK);
    for (int i = 0; i < J; i++) {
        CHECK(jobs[i].ok);
        CHECK(dp_same_bits(jobs[i].s.p, serial.p, N));
    }
}

/* ---- Regression tests of issue 13 (each failed on the 0.x ABI) ---------------------------- */

/* Issue 13, defect 4: the flags were C `bool`s, and a byte other than 0 or 1 was undefined
 * behaviour on the Rust side. They are uint32_t now, and any value but 0 or 1 is
 * DP_ERR_INVALID_ARGUMENT with nothing written; a struct_size other than sizeof too. */
static void flags_other_than_0_or_1_are_refused(void) {
    state s, before;
    fill(&s, 41);
    before = s;
    static const uint32_t values[] = {2, 3, 255, 256, 0x80000000u, UINT32_MAX};
    static const char *names[] = {"decoupled_weight_decay", "amsgrad", "maximize",
                                  "check_finite"};
    for (int f = 0; f < 4; f++) {
        for (unsigned k = 0; k < sizeof values / sizeof values[0]; k++) {
            dp_adam_config c = dp_adam_config_default();
            uint32_t *fields[] = {&c.decoupled_weight_decay, &c.amsgrad, &c.maximize,
                                  &c.check_finite};
            *fields[f] = values[k];
            CHECK_STATUS(dp_adam_step_f32(&c, 1, s.p, s.g, s.m, s.v, s.x, N),
                         DP_ERR_INVALID_ARGUMENT);
            CHECK(strstr(dp_last_error_message(), names[f]) != NULL);
            dp_adam_tensor_f32 t = {s.p, s.g, s.m, s.v, s.x, N};
            CHECK_STATUS(dp_adam_step_multi_f32(&c, 1, &t, 1), DP_ERR_INVALID_ARGUMENT);
            CHECK_STATUS(dp_adam_step_clipped_multi_f32(&c, 1, &t, 1, 1.0, NULL),
                         DP_ERR_INVALID_ARGUMENT);
        }
    }
    CHECK(memcmp(&s, &before, sizeof s) == 0);
    /* 0 and 1 of every flag work (amsgrad with its buffer). */
    for (int f = 0; f < 4; f++) {
        dp_adam_config c = dp_adam_config_default();
        uint32_t *fields[] = {&c.decoupled_weight_decay, &c.amsgrad, &c.maximize,
                              &c.check_finite};
        *fields[f] = 1;
        CHECK_STATUS(dp_adam_step_f32(&c, 1, s.p, s.g, s.m, s.v, s.x, N), DP_OK);
    }
    /* A config not filled by dp_adam_config_default(): refused, named. */
    before = s;
    static const size_t sizes[] = {0, 1, sizeof(dp_adam_config) - 8, sizeof(dp_adam_config) + 8,
                                   SIZE_MAX};
    for (unsigned k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        dp_adam_config c = dp_adam_config_default();
        c.struct_size = sizes[k];
        CHECK_STATUS(dp_adam_step_f32(&c, 1, s.p, s.g, s.m, s.v, NULL, N),
                     DP_ERR_INVALID_ARGUMENT);
        CHECK(strstr(dp_last_error_message(), "struct_size") != NULL);
    }
    CHECK(memcmp(&s, &before, sizeof s) == 0);
}

/* Issue 13, defect 5: `cfg` at an odd address returned DP_OK after an unaligned reference
 * (undefined behaviour). The library reads the struct unaligned: the step works and equals the
 * step with an aligned copy, bit for bit. */
static void config_at_an_odd_address_is_read_unaligned(void) {
    dp_adam_config c = dp_adam_config_default();
    c.lr = 1e-2;
    c.weight_decay = 0.1;
    c.decoupled_weight_decay = 1;
    c.amsgrad = 1;
    static unsigned char raw[sizeof(dp_adam_config) + 16];
    for (unsigned offset = 1; offset < 8; offset += 2) {
        memcpy(raw + offset, &c, sizeof c);
        const dp_adam_config *odd = (const dp_adam_config *)(const void *)(raw + offset);
        state a, b;
        fill(&a, 43);
        b = a;
        CHECK_STATUS(dp_adam_step_f32(odd, 1, a.p, a.g, a.m, a.v, a.x, N), DP_OK);
        CHECK_STATUS(dp_adam_step_f32(&c, 1, b.p, b.g, b.m, b.v, b.x, N), DP_OK);
        CHECK(memcmp(&a, &b, sizeof a) == 0);
        CHECK(a.p[0] != dp_value(0, 43, 1.0f));
        dp_adam_tensor_f32 t = {a.p, a.g, a.m, a.v, a.x, N};
        dp_adam_tensor_f32 u = {b.p, b.g, b.m, b.v, b.x, N};
        CHECK_STATUS(dp_adam_step_multi_f32(odd, 2, &t, 1), DP_OK);
        CHECK_STATUS(dp_adam_step_multi_f32(&c, 2, &u, 1), DP_OK);
        CHECK(memcmp(&a, &b, sizeof a) == 0);
    }
    /* A misaligned tensor list is refused (not read through a misaligned reference). */
    state s, before;
    fill(&s, 44);
    before = s;
    static unsigned char list_raw[sizeof(dp_adam_tensor_f32) + 16];
    dp_adam_tensor_f32 t = {s.p, s.g, s.m, s.v, NULL, N};
    memcpy(list_raw + 4, &t, sizeof t);
    const dp_adam_tensor_f32 *odd_list = (const dp_adam_tensor_f32 *)(const void *)(list_raw + 4);
    dp_adam_config d = dp_adam_config_default();
    CHECK_STATUS(dp_adam_step_multi_f32(&d, 1, odd_list, 1), DP_ERR_INVALID_ARGUMENT);
    CHECK(memcmp(&s, &before, sizeof s) == 0);
}

/* Issue 13, defect 3: a buffer whose address range wraps around the address space
 * (param = UINTPTR_MAX - 7, len = 4: 16 bytes from 8 bytes below the top) crashed (SIGSEGV in
 * release) instead of DP_ERR_LENGTH. Every buffer position, read or written, single or list. */
static void address_range_wrap_is_a_length_error(void) {
    state s, before;
    fill(&s, 45);
    before = s;
    dp_adam_config c = dp_adam_config_default();
    c.amsgrad = 1;
    float *top = (float *)(uintptr_t)(UINTPTR_MAX - 7);
    for (int which = 0; which < 5; which++) {
        float *b[5] = {s.p, s.g, s.m, s.v, s.x};
        b[which] = top;
        CHECK_STATUS(dp_adam_step_f32(&c, 1, b[0], b[1], b[2], b[3], b[4], 4), DP_ERR_LENGTH);
        dp_adam_tensor_f32 ok = {s.p + 8, s.g + 8, s.m + 8, s.v + 8, s.x + 8, 4};
        dp_adam_tensor_f32 list[2] = {ok, {b[0], b[1], b[2], b[3], b[4], 4}};
        CHECK_STATUS(dp_adam_step_multi_f32(&c, 1, list, 2), DP_ERR_LENGTH);
        CHECK(strstr(dp_last_error_message(), "tensors[1]") != NULL);
        CHECK_STATUS(dp_adam_step_clipped_multi_f32(&c, 1, list, 2, 1.0, NULL), DP_ERR_LENGTH);
        double norm = -1;
        uint32_t found = 7;
        if (which == 1) {
            CHECK_STATUS(dp_grad_norm_multi_f32(list, 2, 1.0, &norm, &found), DP_ERR_LENGTH);
            CHECK(norm == -1 && found == 7);
        }
    }
    /* The tensor list itself at the top of the address space. */
    const dp_adam_tensor_f32 *top_list = (const dp_adam_tensor_f32 *)(uintptr_t)(UINTPTR_MAX - 15);
    CHECK_STATUS(dp_adam_step_multi_f32(&c, 1, top_list, 1), DP_ERR_LENGTH);
    CHECK(memcmp(&s, &before, sizeof s) == 0);
}

/* Issue 13, defect 2: finite hyperparameters whose f32 coefficients overflow or vanish
 * returned DP_OK and wrote inf/NaN; inv_grad_scale = 1e39 with check_finite reported
 * DP_ERR_NON_FINITE. All are DP_ERR_INVALID_HYPERPARAMETER now, with nothing written. */
static void hyperparameters_that_overflow_f32_are_refused(void) {
    state s, before;
    fill(&s, 46);
    dp_adam_config base = dp_adam_config_default();
    dp_adam_config cases[4];
    const char *names[4] = {"lr", "eps", "weight_decay", "inv_grad_scale"};
    for (int k = 0; k < 4; k++) cases[k] = base;
    cases[0].lr = 1e39;
    cases[1].eps = 1e-46;
    cases[2].weight_decay = 1e39;
    cases[2].decoupled_weight_decay = 1;
    cases[3].inv_grad_scale = 1e39;
    cases[3].check_finite = 1;
    for (int k = 0; k < 4; k++) {
        if (k == 1) /* eps divides where v = 0: a zero gradient and zero moments */
            for (unsigned i = 0; i < N; i++) s.g[i] = s.m[i] = s.v[i] = 0.0f;
        else
            fill(&s, 46);
        before = s;
        CHECK_STATUS(dp_adam_step_f32(&cases[k], 1, s.p, s.g, s.m, s.v, NULL, N),
                     DP_ERR_INVALID_HYPERPARAMETER);
        CHECK(strstr(dp_last_error_message(), names[k]) != NULL);
        dp_adam_tensor_f32 t = {s.p, s.g, s.m, s.v, NULL, N};
        CHECK_STATUS(dp_adam_step_multi_f32(&cases[k], 1, &t, 1), DP_ERR_INVALID_HYPERPARAMETER);
        CHECK_STATUS(dp_adam_step_clipped_multi_f32(&cases[k], 1, &t, 1, 1.0, NULL),
                     DP_ERR_INVALID_HYPERPARAMETER);
        CHECK(memcmp(&s, &before, sizeof s) == 0);
        for (unsigned i = 0; i < N; i++) CHECK(isfinite(s.p[i]));
    }
    /* The norm's own scale: 1e39 is infinite as the f32 factor. */
    dp_adam_tensor_f32 t = {s.p, s.g, s.m, s.v, NULL, N};
    double norm = -1;
    uint32_t found = 7;
    CHECK_STATUS(dp_grad_norm_multi_f32(&t, 1, 1e39, &norm, &found),
                 DP_ERR_INVALID_HYPERPARAMETER);
    CHECK_STATUS(dp_grad_norm_multi_f32(&t, 1, 1e-46, &norm, &found),
                 DP_ERR_INVALID_HYPERPARAMETER);
    CHECK(norm == -1 && found == 7);
    /* A large scale that fits f32 (and whose squares do too) is accepted. */
    fill(&s, 46);
    CHECK_STATUS(dp_grad_norm_multi_f32(&t, 1, 1e15, &norm, &found), DP_OK);
    CHECK(found == 0 && isfinite(norm));
}

/* The grad_norm family's found_inf_out is a uint32_t written 0 or 1 (it was a C bool). */
static void found_inf_is_0_or_1(void) {
    state s;
    fill(&s, 47);
    dp_adam_tensor_f32 t = {NULL, s.g, NULL, NULL, NULL, N};
    double norm = -1;
    uint32_t found = 0xdeadbeefu;
    CHECK_STATUS(dp_grad_norm_multi_f32(&t, 1, 1.0, &norm, &found), DP_OK);
    CHECK(found == 0 && norm > 0);
    s.g[N / 2] = NAN;
    found = 0xdeadbeefu;
    CHECK_STATUS(dp_grad_norm_multi_f32(&t, 1, 1.0, &norm, &found), DP_OK);
    CHECK(found == 1);
    /* Outputs overlapping each other are refused. */
    double both[2] = {-1, -1};
    CHECK_STATUS(dp_grad_norm_multi_f32(&t, 1, 1.0, &both[0], (uint32_t *)(void *)&both[0]),
                 DP_ERR_ALIASING);
    CHECK(both[0] == -1 && both[1] == -1);
}

int main(void) {
    defaults_are_torchs();
    real_steps_match_the_reference();
    multi_equals_single_and_threads_agree();
    errors_write_nothing();
    many_c_threads_at_once();
    flags_other_than_0_or_1_are_refused();
    config_at_an_odd_address_is_read_unaligned();
    address_range_wrap_is_a_length_error();
    hyperparameters_that_overflow_f32_are_refused();
    found_inf_is_0_or_1();
    return dp_test_finish("adam.c");
}
