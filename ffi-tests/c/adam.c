/* Adam/AdamW through the C ABI: real steps against a double-precision reference written here,
 * the multi-tensor call, threads, and every error status with its no-write guarantee. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "dp_test.h"

#define N 37

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

/* One Adam/AdamW step in double from the float state (DESIGN.md 2.1). */
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
    configs[1].decoupled_weight_decay = true;
    configs[1].amsgrad = true;
    configs[2] = dp_adam_config_default();
    configs[2].weight_decay = 0.05;
    configs[2].maximize = true;
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
    CHECK(!c.check_finite && c.inv_grad_scale == 1.0);
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
    c.amsgrad = true;
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
    c.amsgrad = true;
    CHECK_STATUS(dp_adam_step_f32(&c, 1, s.p, s.g, s.m, s.v, NULL, N), DP_ERR_NULL_POINTER);
    c.amsgrad = false;
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
    bad.check_finite = true;
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

int main(void) {
    defaults_are_torchs();
    real_steps_match_the_reference();
    multi_equals_single_and_threads_agree();
    errors_write_nothing();
    many_c_threads_at_once();
    return dp_test_finish("adam.c");
}
