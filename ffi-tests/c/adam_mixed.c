/* Mixed-precision Adam, compressed state, the global norm and the two-pass clipped step through
 * the C ABI: real steps against double-precision references written here (including a decoder
 * of the documented 8-bit layout), and every error status with its no-write guarantee. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "dp_test.h"

#define N 300 /* more than one 256-element block of 8-bit state, with a tail */

static float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Round to nearest even (finite inputs). */
static uint16_t f32_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

static float f16_to_f32(uint16_t h) {
    int e = (h >> 10) & 0x1f, f = h & 0x3ff;
    double mag = e == 0 ? ldexp(f, -24) : ldexp(1.0 + f / 1024.0, e - 15);
    return (float)((h & 0x8000) ? -mag : mag);
}

/* The documented 8-bit codes. */
static double decode_m(uint8_t c, float scale) {
    int q = c & 0x7f, e = q >> 3, f = q & 7;
    double mag = e == 0 ? ldexp(f, -17) : ldexp(1.0 + f / 8.0, e - 15);
    return ((c & 0x80) ? -mag : mag) * scale;
}

static double decode_v(uint8_t c, float scale) {
    int e = c >> 3, f = c & 7;
    return (e == 0 ? ldexp(f, -33) : ldexp(1.0 + f / 8.0, e - 31)) * scale;
}

/* One Adam step in double; m, v in and out. */
static double ref_step(const dp_adam_config *c, uint64_t t, double p, double g, double *m,
                       double *v) {
    double bc1 = 1.0 - pow(c->beta1, (double)t), bc2 = 1.0 - pow(c->beta2, (double)t);
    g *= c->inv_grad_scale;
    if (c->maximize) g = -g;
    if (c->decoupled_weight_decay)
        p *= 1.0 - c->lr * c->weight_decay;
    else
        g += c->weight_decay * p;
    *m = c->beta1 * *m + (1.0 - c->beta1) * g;
    *v = c->beta2 * *v + (1.0 - c->beta2) * g * g;
    return p - (c->lr / bc1) * *m / (sqrt(*v) / sqrt(bc2) + c->eps);
}

/* One tensor as a list of one: the 1.0 ABI has only list entry points for these steps. */
static dp_status master_one(const dp_adam_config *c, uint64_t t, uint32_t format,
                            uint32_t rounding, uint64_t seed, float *master, uint16_t *param,
                            const uint16_t *grad, float *m, float *v, size_t len) {
    dp_adam_master_tensor x = {master, param, grad, m, v, len};
    return dp_adam_master_step_multi(c, t, format, rounding, seed, &x, 1);
}

static dp_status bf16_state_one(const dp_adam_config *c, uint64_t t, uint64_t seed, float *p,
                                const float *g, uint16_t *m, uint16_t *v, size_t len) {
    dp_adam_bf16_state_tensor x = {p, g, m, v, len};
    return dp_adam_bf16_state_step_multi_f32(c, t, seed, &x, 1);
}

/* scales_len is what the layout needs: dp_adam_8bit_scales_len(len). */
static dp_status q8_one(const dp_adam_config *c, uint64_t t, float *p, const float *g,
                        uint8_t *mc, float *ms, uint8_t *vc, float *vs, size_t len) {
    dp_adam_8bit_tensor x = {p, g, mc, ms, vc, vs, len, dp_adam_8bit_scales_len(len)};
    return dp_adam_8bit_step_multi_f32(c, t, &x, 1);
}

/* Every count as the layout needs it. */
static dp_status quantize_n(uint32_t moment, const float *values, uint8_t *codes, float *scales,
                            size_t len) {
    return dp_adam_8bit_quantize_f32(moment, values, len, codes, len, scales,
                                     dp_adam_8bit_scales_len(len));
}

static dp_status dequantize_n(uint32_t moment, const uint8_t *codes, const float *scales,
                              float *values, size_t len) {
    return dp_adam_8bit_dequantize_f32(moment, codes, len, scales, dp_adam_8bit_scales_len(len),
                                       values, len);
}

typedef struct state {
    float master[N], m[N], v[N], g[N], p[N];
    uint16_t p16[N], g16[N], m16[N], v16[N];
    uint8_t mc[N], vc[N];
    float ms[2], vs[2];
    double norm;
    uint32_t found_inf;
} state;

static void fill(state *s, unsigned seed) {
    memset(s, 0, sizeof *s);
    for (unsigned i = 0; i < N; i++) {
        s->master[i] = dp_value(i, seed, 1.0f);
        s->p[i] = s->master[i];
        s->g[i] = dp_value(i, seed + 1, 0.1f);
        s->g16[i] = f32_to_bf16(s->g[i]);
        s->m[i] = dp_value(i, seed + 2, 0.01f);
        s->v[i] = fabsf(dp_value(i, seed + 3, 1e-3f));
    }
}

static void master_bf16_steps_match_the_reference(void) {
    dp_adam_config c = dp_adam_config_default();
    c.lr = 1e-2;
    c.weight_decay = 0.01;
    c.decoupled_weight_decay = 1;
    state s;
    fill(&s, 3);
    for (uint64_t t = 1; t <= 5; t++) {
        double expect[N], m[N], v[N];
        for (unsigned i = 0; i < N; i++) {
            m[i] = s.m[i];
            v[i] = s.v[i];
            expect[i] = ref_step(&c, t, s.master[i], bf16_to_f32(s.g16[i]), &m[i], &v[i]);
        }
        CHECK_STATUS(master_one(&c, t, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, s.master, s.p16, s.g16, s.m, s.v, N), DP_OK);
        for (unsigned i = 0; i < N; i++) {
            CHECK(fabs(s.master[i] - expect[i]) <= 1e-6 * (fabs(expect[i]) + c.lr));
            CHECK(s.p16[i] == f32_to_bf16(s.master[i]));
            CHECK(fabs(s.m[i] - m[i]) <= 1e-6 * fabs(m[i]) + 1e-8);
        }
    }
    /* Stochastic: one of the two bf16 neighbours of the master weight; same seed, same bits. */
    state a, b;
    fill(&a, 4);
    fill(&b, 4);
    CHECK_STATUS(master_one(&c, 1, DP_FORMAT_BF16, DP_ROUND_STOCHASTIC, 99, a.master, a.p16, a.g16, a.m,
                                                     a.v, N),
                 DP_OK);
    CHECK_STATUS(master_one(&c, 1, DP_FORMAT_BF16, DP_ROUND_STOCHASTIC, 99, b.master, b.p16, b.g16, b.m,
                                                     b.v, N),
                 DP_OK);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    for (unsigned i = 0; i < N; i++) {
        int d = (int)a.p16[i] - (int)f32_to_bf16(a.master[i]);
        CHECK(d >= -1 && d <= 1);
        double lo = bf16_to_f32(a.p16[i]);
        CHECK(fabs(lo - a.master[i]) <= fabs(a.master[i]) / 128.0);
    }
}

static void master_f16_step_rounds_to_nearest(void) {
    dp_adam_config c = dp_adam_config_default();
    state s;
    fill(&s, 5);
    for (unsigned i = 0; i < N; i++) s.g16[i] = (uint16_t)(0x2000u + (i * 37u) % 0x1000u);
    CHECK_STATUS(master_one(&c, 1, DP_FORMAT_F16, DP_ROUND_NEAREST, 0, s.master, s.p16, s.g16, s.m, s.v, N), DP_OK);
    for (unsigned i = 0; i < N; i++) {
        double x = s.master[i], y = f16_to_f32(s.p16[i]);
        /* Within half an f16 ulp: 2^-11 relative for normal values. */
        CHECK(fabs(x - y) <= fabs(x) * ldexp(1.0, -11) + ldexp(1.0, -25));
    }
    CHECK_STATUS(master_one(&c, 2, DP_FORMAT_F16, DP_ROUND_STOCHASTIC, 7, s.master, s.p16, s.g16, s.m, s.v,
                                                    N),
                 DP_OK);
    for (unsigned i = 0; i < N; i++) {
        double x = s.master[i], y = f16_to_f32(s.p16[i]);
        CHECK(fabs(x - y) <= fabs(x) * ldexp(1.0, -10) + ldexp(1.0, -24));
    }
}

static void norm_and_clipped_step(void) {
    state s[2];
    fill(&s[0], 6);
    fill(&s[1], 7);
    dp_adam_tensor_f32 ts[2];
    double exact = 0;
    for (int k = 0; k < 2; k++) {
        dp_adam_tensor_f32 t = {s[k].p, s[k].g, s[k].m, s[k].v, NULL, N - (size_t)k * 50};
        ts[k] = t;
        for (size_t i = 0; i < t.len; i++) exact += (s[k].g[i] * 0.5) * (s[k].g[i] * 0.5);
    }
    exact = sqrt(exact);
    double norm = -1;
    uint32_t found = 1;
    CHECK_STATUS(dp_grad_norm_multi_f32(ts, 2, 0.5, &norm, &found), DP_OK);
    CHECK(fabs(norm - exact) <= 1e-6 * exact);
    CHECK(found == 0);
    /* The clipped step equals the multi-tensor step with the folded factor. */
    state copy[2];
    memcpy(copy, s, sizeof copy);
    dp_adam_tensor_f32 cs[2];
    for (int k = 0; k < 2; k++) {
        dp_adam_tensor_f32 t = {copy[k].p, copy[k].g, copy[k].m, copy[k].v, NULL, ts[k].len};
        cs[k] = t;
    }
    dp_adam_config c = dp_adam_config_default();
    c.inv_grad_scale = 0.5;
    double max_norm = 0.05, got = -1;
    CHECK_STATUS(dp_adam_step_clipped_multi_f32(&c, 1, ts, 2, max_norm, &got), DP_OK);
    CHECK(got == norm);
    double clip = max_norm / (norm + 1e-6);
    c.inv_grad_scale = 0.5 * (clip < 1 ? clip : 1);
    CHECK_STATUS(dp_adam_step_multi_f32(&c, 1, cs, 2), DP_OK);
    for (int k = 0; k < 2; k++) {
        CHECK(dp_same_bits(s[k].p, copy[k].p, N));
        CHECK(dp_same_bits(s[k].m, copy[k].m, N));
        CHECK(dp_same_bits(s[k].v, copy[k].v, N));
    }
    /* A NaN gradient: found_inf from the norm, DP_ERR_NON_FINITE and no write from the step. */
    s[1].g[17] = NAN;
    CHECK_STATUS(dp_grad_norm_multi_f32(ts, 2, 1.0, &norm, &found), DP_OK);
    CHECK(found == 1);
    state before[2];
    memcpy(before, s, sizeof before);
    got = -1;
    c = dp_adam_config_default();
    CHECK_STATUS(dp_adam_step_clipped_multi_f32(&c, 1, ts, 2, 1.0, &got), DP_ERR_NON_FINITE);
    CHECK(memcmp(before, s, sizeof s) == 0);
    CHECK(got == -1);
    /* An infinite gradient too. */
    s[1].g[17] = -INFINITY;
    memcpy(before, s, sizeof before);
    CHECK_STATUS(dp_adam_step_clipped_multi_f32(&c, 1, ts, 2, 1.0, NULL), DP_ERR_NON_FINITE);
    CHECK(memcmp(before, s, sizeof s) == 0);
}

static void compressed_state_steps(void) {
    dp_adam_config c = dp_adam_config_default();
    c.lr = 1e-2;
    state s;
    fill(&s, 8);
    for (unsigned i = 0; i < N; i++) s.m16[i] = s.v16[i] = 0;
    CHECK(dp_adam_8bit_scales_len(N) == 2 && dp_adam_8bit_scales_len(0) == 0 &&
          dp_adam_8bit_scales_len(256) == 1);
    /* The 8-bit state starts from f32 moments: each block's scale is its absmax, each code
     * decodes (documented layout) to within the format's bound, and the decoder gives exactly
     * code value times scale, rounded once. */
    CHECK_STATUS(quantize_n(DP_MOMENT_EXP_AVG, s.m, s.mc, s.ms, N), DP_OK);
    CHECK_STATUS(quantize_n(DP_MOMENT_EXP_AVG_SQ, s.v, s.vc, s.vs, N), DP_OK);
    float md[N], vd[N];
    CHECK_STATUS(dequantize_n(DP_MOMENT_EXP_AVG, s.mc, s.ms, md, N), DP_OK);
    CHECK_STATUS(dequantize_n(DP_MOMENT_EXP_AVG_SQ, s.vc, s.vs, vd, N), DP_OK);
    for (unsigned b = 0; b < 2; b++) {
        float mmax = 0, vmax = 0;
        for (unsigned i = b * 256; i < N && i < b * 256 + 256; i++) {
            if (fabsf(s.m[i]) > mmax) mmax = fabsf(s.m[i]);
            if (s.v[i] > vmax) vmax = s.v[i];
        }
        CHECK(s.ms[b] == mmax && s.vs[b] == vmax);
    }
    for (unsigned i = 0; i < N; i++) {
        CHECK(md[i] == (float)decode_m(s.mc[i], s.ms[i / 256]));
        CHECK(vd[i] == (float)decode_v(s.vc[i], s.vs[i / 256]));
        CHECK(fabs(md[i] - s.m[i]) <= fabs(s.m[i]) / 16.0 + s.ms[i / 256] * ldexp(1.0, -14));
        CHECK(fabs(vd[i] - s.v[i]) <= s.v[i] / 16.0 + s.vs[i / 256] * ldexp(1.0, -30));
    }
    double m[N] = {0}, v[N] = {0}, mq[N] = {0}, vq[N] = {0};
    float p8[N];
    memcpy(p8, s.p, sizeof p8);
    for (uint64_t t = 1; t <= 3; t++) {
        for (unsigned i = 0; i < N; i++) s.g[i] = dp_value(i, (unsigned)(20 + t), 0.1f);
        double expect[N], expect8[N];
        for (unsigned i = 0; i < N; i++) {
            m[i] = bf16_to_f32(s.m16[i]);
            v[i] = bf16_to_f32(s.v16[i]);
            expect[i] = ref_step(&c, t, s.p[i], s.g[i], &m[i], &v[i]);
            mq[i] = decode_m(s.mc[i], s.ms[i / 256]);
            vq[i] = decode_v(s.vc[i], s.vs[i / 256]);
            expect8[i] = ref_step(&c, t, p8[i], s.g[i], &mq[i], &vq[i]);
        }
        CHECK_STATUS(bf16_state_one(&c, t, 5, s.p, s.g, s.m16, s.v16, N), DP_OK);
        CHECK_STATUS(
            q8_one(&c, t, p8, s.g, s.mc, s.ms, s.vc, s.vs, N), DP_OK);
        for (unsigned i = 0; i < N; i++) {
            CHECK(fabs(s.p[i] - expect[i]) <= 1e-6 * (fabs(expect[i]) + c.lr));
            CHECK(fabs(bf16_to_f32(s.m16[i]) - m[i]) <= fabs(m[i]) / 128.0 + 1e-12);
            CHECK(fabs(bf16_to_f32(s.v16[i]) - v[i]) <= v[i] / 128.0 + 1e-15);
            CHECK(fabs(p8[i] - expect8[i]) <= 1e-6 * (fabs(expect8[i]) + c.lr));
        }
        /* The new codes decode (per the documented layout) to the reference's m, v. */
        for (unsigned b = 0; b < 2; b++) {
            double mmax = 0, vmax = 0;
            for (unsigned i = b * 256; i < N && i < b * 256 + 256; i++) {
                if (fabs(mq[i]) > mmax) mmax = fabs(mq[i]);
                if (vq[i] > vmax) vmax = vq[i];
            }
            CHECK(fabs(s.ms[b] - mmax) <= 1e-6 * mmax);
            CHECK(fabs(s.vs[b] - vmax) <= 1e-6 * vmax);
            for (unsigned i = b * 256; i < N && i < b * 256 + 256; i++) {
                double dm = fabs(decode_m(s.mc[i], s.ms[b]) - mq[i]);
                double dv = fabs(decode_v(s.vc[i], s.vs[b]) - vq[i]);
                CHECK(dm <= fabs(mq[i]) / 16.0 + mmax * ldexp(1.0, -17));
                CHECK(dv <= vq[i] / 16.0 + vmax * ldexp(1.0, -32));
            }
        }
    }
}

/* The tensor-list steps: the same bits as single calls (stochastic rounding: as one call on
 * the concatenation), and every tensor checked before any is written. */
#define LIST 3
#define TOTAL (300 + 1 + 777)
static const size_t list_len[LIST] = {300, 1, 777};

typedef struct list_state {
    float master[TOTAL], m[TOTAL], v[TOTAL], p[TOTAL], g[TOTAL], q[TOTAL];
    uint16_t p16[TOTAL], g16[TOTAL], m16[TOTAL], v16[TOTAL];
    uint8_t mc[TOTAL], vc[TOTAL];
    float ms[2 + 1 + 4], vs[2 + 1 + 4];
} list_state;

static void fill_list(list_state *s) {
    memset(s, 0, sizeof *s);
    for (unsigned i = 0; i < TOTAL; i++) {
        s->master[i] = s->p[i] = s->q[i] = dp_value(i, 31, 1.0f);
        s->g[i] = dp_value(i, 32, 0.1f);
        s->g16[i] = f32_to_bf16(s->g[i]);
    }
}

static void master_list(list_state *s, dp_adam_master_tensor *t) {
    size_t at = 0;
    for (int k = 0; k < LIST; k++) {
        dp_adam_master_tensor x = {s->master + at, s->p16 + at, s->g16 + at,
                                   s->m + at,      s->v + at,   list_len[k]};
        t[k] = x;
        at += list_len[k];
    }
}

static void quant_list(list_state *s, dp_adam_8bit_tensor *t) {
    size_t at = 0, sc = 0;
    for (int k = 0; k < LIST; k++) {
        dp_adam_8bit_tensor x = {s->p + at,  s->g + at,  s->mc + at,  s->ms + sc,
                                 s->vc + at, s->vs + sc, list_len[k], dp_adam_8bit_scales_len(list_len[k])};
        t[k] = x;
        at += list_len[k];
        sc += dp_adam_8bit_scales_len(list_len[k]);
    }
}

static void bf16_state_list(list_state *s, dp_adam_bf16_state_tensor *t) {
    size_t at = 0;
    for (int k = 0; k < LIST; k++) {
        dp_adam_bf16_state_tensor x = {s->q + at, s->g + at, s->m16 + at, s->v16 + at,
                                       list_len[k]};
        t[k] = x;
        at += list_len[k];
    }
}

static void tensor_lists(void) {
    dp_adam_config c = dp_adam_config_default();
    c.lr = 1e-2;
    static list_state a, b;
    dp_adam_master_tensor mt[LIST];
    dp_adam_8bit_tensor qt[LIST];
    CHECK(dp_adam_8bit_scales_len(300) + dp_adam_8bit_scales_len(1) +
              dp_adam_8bit_scales_len(777) == sizeof a.ms / sizeof a.ms[0]);
    for (uint64_t t = 1; t <= 2; t++) {
        if (t == 1) {
            fill_list(&a);
            fill_list(&b);
        }
        master_list(&a, mt);
        CHECK_STATUS(dp_adam_master_step_multi(&c, t, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, mt, LIST), DP_OK);
        quant_list(&a, qt);
        CHECK_STATUS(dp_adam_8bit_step_multi_f32(&c, t, qt, LIST), DP_OK);
        master_list(&b, mt);
        quant_list(&b, qt);
        for (int k = 0; k < LIST; k++) {
            dp_adam_master_tensor x = mt[k];
            CHECK_STATUS(master_one(&c, t, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, x.master, x.param, x.grad, x.exp_avg,
                                                  x.exp_avg_sq, x.len),
                         DP_OK);
            dp_adam_8bit_tensor y = qt[k];
            CHECK_STATUS(q8_one(&c, t, y.param, y.grad, y.exp_avg_codes,
                                                 y.exp_avg_scales, y.exp_avg_sq_codes,
                                                 y.exp_avg_sq_scales, y.len),
                         DP_OK);
        }
        CHECK(memcmp(&a, &b, sizeof a) == 0);
    }
    /* Stochastic rounding, f16: the list as one call on the concatenation (the same memory). */
    for (unsigned i = 0; i < TOTAL; i++) a.g16[i] = b.g16[i] = (uint16_t)(0x2000u + i % 0x1000u);
    master_list(&a, mt);
    CHECK_STATUS(dp_adam_master_step_multi(&c, 3, DP_FORMAT_F16, DP_ROUND_STOCHASTIC, 11, mt, LIST), DP_OK);
    CHECK_STATUS(master_one(&c, 3, DP_FORMAT_F16, DP_ROUND_STOCHASTIC, 11, b.master, b.p16, b.g16, b.m,
                                                    b.v, TOTAL),
                 DP_OK);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    master_list(&a, mt);
    CHECK_STATUS(dp_adam_master_step_multi(&c, 4, DP_FORMAT_F16, DP_ROUND_NEAREST, 0, mt, LIST), DP_OK);
    CHECK_STATUS(dp_adam_master_step_multi(&c, 5, DP_FORMAT_BF16, DP_ROUND_STOCHASTIC, 11, mt, LIST), DP_OK);
    CHECK_STATUS(
        master_one(&c, 4, DP_FORMAT_F16, DP_ROUND_NEAREST, 0, b.master, b.p16, b.g16, b.m, b.v, TOTAL), DP_OK);
    CHECK_STATUS(master_one(&c, 5, DP_FORMAT_BF16, DP_ROUND_STOCHASTIC, 11, b.master, b.p16, b.g16, b.m,
                                                     b.v, TOTAL),
                 DP_OK);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    /* bf16 state: also one call on the concatenation. */
    dp_adam_bf16_state_tensor bt[LIST];
    for (uint64_t t = 1; t <= 2; t++) {
        bf16_state_list(&a, bt);
        CHECK_STATUS(dp_adam_bf16_state_step_multi_f32(&c, t, 21, bt, LIST), DP_OK);
        CHECK_STATUS(bf16_state_one(&c, t, 21, b.q, b.g, b.m16, b.v16, TOTAL), DP_OK);
    }
    CHECK(memcmp(&a, &b, sizeof a) == 0);

    /* 16-bit norms (of the widened values) and the two-pass master step: the norm, then the
     * list step with the folded factor. */
    double exact16 = 0, exact_bf = 0, norm = -1;
    uint32_t found = 1;
    for (unsigned i = 0; i < TOTAL; i++) {
        double x = f16_to_f32(a.g16[i]) * 0.5, y = bf16_to_f32(a.g16[i]) * 0.5;
        exact16 += x * x;
        exact_bf += y * y;
    }
    master_list(&a, mt);
    CHECK_STATUS(dp_grad_norm_master_multi(DP_FORMAT_F16, mt, LIST, 0.5, &norm, &found), DP_OK);
    CHECK(fabs(norm - sqrt(exact16)) <= 1e-6 * sqrt(exact16) && found == 0);
    CHECK_STATUS(dp_grad_norm_master_multi(DP_FORMAT_BF16, mt, LIST, 0.5, &norm, &found), DP_OK);
    CHECK(fabs(norm - sqrt(exact_bf)) <= 1e-6 * sqrt(exact_bf) && found == 0);
    CHECK_STATUS(dp_grad_norm_master_multi(DP_FORMAT_BF16, mt, LIST, 0.0, &norm, &found),
                 DP_ERR_INVALID_HYPERPARAMETER);
    CHECK_STATUS(dp_grad_norm_master_multi(DP_FORMAT_BF16, mt, LIST, 1.0, NULL, &found), DP_ERR_NULL_POINTER);
    memcpy(&b, &a, sizeof a);
    double got = -1;
    c.inv_grad_scale = 0.5;
    CHECK_STATUS(dp_adam_master_step_clipped_multi(&c, 6, DP_FORMAT_F16, DP_ROUND_STOCHASTIC, 2, mt, LIST, 0.01, &got),
                 DP_OK);
    CHECK(got == sqrt(exact16) || fabs(got - sqrt(exact16)) <= 1e-6 * sqrt(exact16));
    dp_adam_config folded = c;
    folded.inv_grad_scale = 0.5 * (0.01 / (got + 1e-6));
    master_list(&b, mt);
    CHECK_STATUS(dp_adam_master_step_multi(&folded, 6, DP_FORMAT_F16, DP_ROUND_STOCHASTIC, 2, mt, LIST), DP_OK);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    master_list(&a, mt);
    CHECK_STATUS(dp_adam_master_step_clipped_multi(&c, 7, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, mt, LIST, INFINITY, NULL), DP_OK);
    CHECK_STATUS(dp_adam_master_step_clipped_multi(&c, 7, DP_FORMAT_F16, DP_ROUND_NEAREST, 0, mt, LIST, 1e9, &got), DP_OK);
    CHECK_STATUS(dp_adam_master_step_clipped_multi(&c, 8, DP_FORMAT_BF16, DP_ROUND_STOCHASTIC, 5, mt, LIST, 1.0, &got),
                 DP_OK);
    c.inv_grad_scale = 1.0;

    /* Errors: nothing written in any tensor. */
    memcpy(&b, &a, sizeof a);
    dp_adam_config fin = c;
    fin.check_finite = 1;
    dp_adam_config ams = c;
    ams.amsgrad = 1;
    master_list(&a, mt);
    quant_list(&a, qt);
    CHECK_STATUS(dp_adam_master_step_multi(&c, 1, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, NULL, LIST), DP_ERR_NULL_POINTER);
    CHECK_STATUS(dp_adam_master_step_multi(NULL, 1, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, mt, LIST), DP_ERR_NULL_POINTER);
    CHECK_STATUS(dp_adam_master_step_multi(&c, 1, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, mt, SIZE_MAX / 2), DP_ERR_LENGTH);
    CHECK_STATUS(dp_adam_master_step_multi(&c, 0, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, mt, LIST), DP_ERR_INVALID_HYPERPARAMETER);
    CHECK_STATUS(dp_adam_master_step_multi(&ams, 1, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, mt, LIST), DP_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dp_adam_8bit_step_multi_f32(&c, 1, NULL, LIST), DP_ERR_NULL_POINTER);
    CHECK_STATUS(dp_adam_8bit_step_multi_f32(&ams, 1, qt, LIST), DP_ERR_INVALID_ARGUMENT);
    mt[2].grad = NULL;
    CHECK_STATUS(dp_adam_master_step_multi(&c, 1, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, mt, LIST), DP_ERR_NULL_POINTER);
    CHECK(strstr(dp_last_error_message(), "tensors[2].grad") != NULL);
    master_list(&a, mt);
    mt[2].master = mt[0].exp_avg + 10; /* written by two tensors */
    CHECK_STATUS(dp_adam_master_step_multi(&c, 1, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, mt, LIST), DP_ERR_ALIASING);
    master_list(&a, mt);
    mt[1].grad = mt[0].grad; /* gradients may share memory: only read */
    mt[1].len = 1;
    CHECK_STATUS(dp_adam_master_step_multi(&fin, 1, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, mt, LIST), DP_OK);
    memcpy(&b, &a, sizeof a);
    master_list(&a, mt);
    a.g16[TOTAL - 1] = b.g16[TOTAL - 1] = 0x7fc0; /* NaN in the last tensor */
    CHECK_STATUS(dp_adam_master_step_multi(&fin, 1, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, mt, LIST), DP_ERR_NON_FINITE);
    got = -1;
    CHECK_STATUS(dp_adam_master_step_clipped_multi(&c, 1, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, mt, LIST, 1.0, &got),
                 DP_ERR_NON_FINITE);
    CHECK(got == -1);
    CHECK_STATUS(dp_adam_master_step_clipped_multi(&c, 1, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, mt, LIST, 0.0, &got),
                 DP_ERR_INVALID_HYPERPARAMETER);
    double *in_m = (double *)(void *)(a.m + 2);
    CHECK_STATUS(dp_adam_master_step_clipped_multi(&c, 1, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, mt, LIST, 1.0, in_m),
                 DP_ERR_ALIASING);
    CHECK_STATUS(dp_grad_norm_master_multi(DP_FORMAT_BF16, mt, LIST, 1.0, &norm, &found), DP_OK);
    CHECK(found == 1);
    a.g[TOTAL - 1] = b.g[TOTAL - 1] = INFINITY;
    CHECK_STATUS(dp_adam_8bit_step_multi_f32(&fin, 1, qt, LIST), DP_ERR_NON_FINITE);
    bf16_state_list(&a, bt);
    CHECK_STATUS(dp_adam_bf16_state_step_multi_f32(&fin, 1, 21, bt, LIST), DP_ERR_NON_FINITE);
    bt[0].exp_avg_sq_bf16 = bt[2].exp_avg_bf16;
    CHECK_STATUS(dp_adam_bf16_state_step_multi_f32(&c, 1, 21, bt, LIST), DP_ERR_ALIASING);
    a.g[TOTAL - 1] = b.g[TOTAL - 1] = 0.5f;
    qt[2].exp_avg_sq_codes = qt[0].exp_avg_codes + 5;
    CHECK_STATUS(dp_adam_8bit_step_multi_f32(&c, 1, qt, LIST), DP_ERR_ALIASING);
    quant_list(&a, qt);
    qt[1].exp_avg_scales = NULL;
    CHECK_STATUS(dp_adam_8bit_step_multi_f32(&c, 1, qt, LIST), DP_ERR_NULL_POINTER);
    CHECK(strstr(dp_last_error_message(), "tensors[1].exp_avg_scales") != NULL);
    quant_list(&a, qt);
    a.vs[3] = b.vs[3] = -1.0f; /* the first scale of tensors[2] */
    CHECK_STATUS(dp_adam_8bit_step_multi_f32(&c, 1, qt, LIST), DP_ERR_INVALID_ARGUMENT);
    CHECK(strstr(dp_last_error_message(), "tensors[2]: exp_avg_sq_scales[0]") != NULL);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
}

/* Every error status of every export here, each with a snapshot showing nothing was written. */
static void errors_write_nothing(void) {
    state s, before;
    fill(&s, 9);
    for (unsigned i = 0; i < N; i++) s.m16[i] = s.v16[i] = 0x3c00;
    memcpy(&before, &s, sizeof s);
#define UNCHANGED() CHECK(memcmp(&s, &before, sizeof s) == 0)
    dp_adam_config c = dp_adam_config_default();
    dp_adam_config bad = c;
    bad.beta2 = 1.0;
    dp_adam_config ams = c;
    ams.amsgrad = 1;
    dp_adam_config fin = c;
    fin.check_finite = 1;

    /* master (bf16 and f16, nearest and stochastic) */
    CHECK_STATUS(master_one(NULL, 1, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, s.master, s.p16, s.g16, s.m, s.v, N),
                 DP_ERR_NULL_POINTER);
    CHECK_STATUS(master_one(&c, 1, DP_FORMAT_F16, DP_ROUND_NEAREST, 0, s.master, NULL, s.g16, s.m, s.v, N),
                 DP_ERR_NULL_POINTER);
    CHECK_STATUS(
        master_one(&c, 1, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, s.master, s.p16, s.g16, s.m, s.v, SIZE_MAX / 2),
        DP_ERR_LENGTH);
    CHECK_STATUS(master_one(&c, 0, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, s.master, s.p16, s.g16, s.m, s.v, N),
                 DP_ERR_INVALID_HYPERPARAMETER);
    CHECK_STATUS(master_one(&bad, 1, DP_FORMAT_F16, DP_ROUND_STOCHASTIC, 1, s.master, s.p16, s.g16, s.m,
                                                    s.v, N),
                 DP_ERR_INVALID_HYPERPARAMETER);
    CHECK_STATUS(master_one(&ams, 1, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, s.master, s.p16, s.g16, s.m, s.v, N),
                 DP_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(master_one(&c, 1, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, s.master, (uint16_t *)(void *)s.m, s.g16, s.m,
                                          s.v, N),
                 DP_ERR_ALIASING);
    CHECK_STATUS(master_one(&c, 1, DP_FORMAT_BF16, DP_ROUND_STOCHASTIC, 1, s.master, s.p16, s.g16, s.m,
                                                     s.master + 1, N - 1),
                 DP_ERR_ALIASING);
    uint16_t *odd = (uint16_t *)(void *)((char *)(void *)s.p16 + 1);
    CHECK_STATUS(master_one(&c, 1, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, s.master, odd, s.g16, s.m, s.v, N - 1),
                 DP_ERR_INVALID_ARGUMENT);
    s.g16[N - 1] = 0x7fc0; /* NaN */
    before.g16[N - 1] = 0x7fc0;
    CHECK_STATUS(master_one(&fin, 1, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, s.master, s.p16, s.g16, s.m, s.v, N),
                 DP_ERR_NON_FINITE);
    s.g16[N - 1] = 0x7c00; /* f16 infinity */
    before.g16[N - 1] = 0x7c00;
    CHECK_STATUS(master_one(&fin, 1, DP_FORMAT_F16, DP_ROUND_NEAREST, 0, s.master, s.p16, s.g16, s.m, s.v, N),
                 DP_ERR_NON_FINITE);
    UNCHANGED();

    /* bf16 state */
    CHECK_STATUS(bf16_state_one(NULL, 1, 1, s.p, s.g, s.m16, s.v16, N),
                 DP_ERR_NULL_POINTER);
    CHECK_STATUS(bf16_state_one(&c, 1, 1, s.p, s.g, s.m16, NULL, N),
                 DP_ERR_NULL_POINTER);
    CHECK_STATUS(bf16_state_one(&c, 1, 1, s.p, s.g, s.m16, s.v16, SIZE_MAX / 4),
                 DP_ERR_LENGTH);
    CHECK_STATUS(bf16_state_one(&bad, 1, 1, s.p, s.g, s.m16, s.v16, N),
                 DP_ERR_INVALID_HYPERPARAMETER);
    CHECK_STATUS(bf16_state_one(&ams, 1, 1, s.p, s.g, s.m16, s.v16, N),
                 DP_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(bf16_state_one(&c, 1, 1, s.p, s.g, s.m16, s.m16 + 3, N - 3),
                 DP_ERR_ALIASING);
    s.g[5] = INFINITY;
    before.g[5] = INFINITY;
    CHECK_STATUS(bf16_state_one(&fin, 1, 1, s.p, s.g, s.m16, s.v16, N),
                 DP_ERR_NON_FINITE);
    UNCHANGED();

    /* 8-bit state */
    CHECK_STATUS(q8_one(NULL, 1, s.p, s.g, s.mc, s.ms, s.vc, s.vs, N),
                 DP_ERR_NULL_POINTER);
    CHECK_STATUS(q8_one(&c, 1, s.p, s.g, s.mc, NULL, s.vc, s.vs, N),
                 DP_ERR_NULL_POINTER);
    CHECK_STATUS(q8_one(&c, 1, s.p, s.g, s.mc, s.ms, s.vc, s.vs, SIZE_MAX / 2),
                 DP_ERR_LENGTH);
    CHECK_STATUS(q8_one(&c, 0, s.p, s.g, s.mc, s.ms, s.vc, s.vs, N),
                 DP_ERR_INVALID_HYPERPARAMETER);
    CHECK_STATUS(q8_one(&ams, 1, s.p, s.g, s.mc, s.ms, s.vc, s.vs, N),
                 DP_ERR_INVALID_ARGUMENT);
    /* The scales of m overlap those of v (2 floats each, 1 apart). */
    CHECK_STATUS(q8_one(&c, 1, s.p, s.g, s.mc, s.ms, s.vc, s.ms + 1, N),
                 DP_ERR_ALIASING);
    CHECK_STATUS(q8_one(&fin, 1, s.p, s.g, s.mc, s.ms, s.vc, s.vs, N),
                 DP_ERR_NON_FINITE);
    UNCHANGED();
    /* A corrupted scale (NaN, negative) is refused. */
    s.ms[1] = before.ms[1] = NAN;
    CHECK_STATUS(q8_one(&c, 1, s.p, s.g, s.mc, s.ms, s.vc, s.vs, N),
                 DP_ERR_INVALID_ARGUMENT);
    UNCHANGED();
    s.ms[1] = before.ms[1] = 0;
    s.vs[0] = before.vs[0] = -1;
    CHECK_STATUS(q8_one(&c, 1, s.p, s.g, s.mc, s.ms, s.vc, s.vs, N),
                 DP_ERR_INVALID_ARGUMENT);
    UNCHANGED();

    /* 8-bit encoder and decoder */
    CHECK_STATUS(quantize_n(DP_MOMENT_EXP_AVG, NULL, s.mc, s.ms, N),
                 DP_ERR_NULL_POINTER);
    CHECK_STATUS(quantize_n(2, s.m, s.mc, s.ms, N), DP_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(quantize_n(DP_MOMENT_EXP_AVG, s.m, s.mc, s.ms, SIZE_MAX / 2),
                 DP_ERR_LENGTH);
    CHECK_STATUS(
        quantize_n(DP_MOMENT_EXP_AVG, s.m, (uint8_t *)(void *)s.m, s.ms, N),
        DP_ERR_ALIASING);
    /* m holds negative values: not a second moment. */
    CHECK_STATUS(quantize_n(DP_MOMENT_EXP_AVG_SQ, s.m, s.vc, s.vs, N),
                 DP_ERR_INVALID_ARGUMENT);
    s.v[7] = before.v[7] = INFINITY;
    CHECK_STATUS(quantize_n(DP_MOMENT_EXP_AVG_SQ, s.v, s.vc, s.vs, N),
                 DP_ERR_INVALID_ARGUMENT);
    UNCHANGED();
    CHECK_STATUS(dequantize_n(DP_MOMENT_EXP_AVG, s.mc, NULL, s.m, N),
                 DP_ERR_NULL_POINTER);
    CHECK_STATUS(dequantize_n(7, s.mc, s.ms, s.m, N), DP_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dequantize_n(DP_MOMENT_EXP_AVG, s.mc, s.m + 1, s.m, N),
                 DP_ERR_ALIASING);
    CHECK_STATUS(dequantize_n(DP_MOMENT_EXP_AVG_SQ, s.vc, s.vs, s.v, N),
                 DP_ERR_INVALID_ARGUMENT); /* vs[0] = -1 */
    UNCHANGED();
    s.vs[0] = before.vs[0] = 0;

    /* norm and the clipped step */
    s.g[5] = 0.5f;
    before.g[5] = 0.5f;
    dp_adam_tensor_f32 t = {s.p, s.g, s.m, s.v, NULL, N};
    dp_adam_tensor_f32 nullgrad = {s.p, NULL, s.m, s.v, NULL, N};
    CHECK_STATUS(dp_grad_norm_multi_f32(NULL, 1, 1.0, &s.norm, &s.found_inf),
                 DP_ERR_NULL_POINTER);
    CHECK_STATUS(dp_grad_norm_multi_f32(&t, 1, 1.0, NULL, &s.found_inf), DP_ERR_NULL_POINTER);
    CHECK_STATUS(dp_grad_norm_multi_f32(&nullgrad, 1, 1.0, &s.norm, &s.found_inf),
                 DP_ERR_NULL_POINTER);
    CHECK_STATUS(dp_grad_norm_multi_f32(&t, SIZE_MAX / 8, 1.0, &s.norm, &s.found_inf),
                 DP_ERR_LENGTH);
    CHECK_STATUS(dp_grad_norm_multi_f32(&t, 1, 0.0, &s.norm, &s.found_inf),
                 DP_ERR_INVALID_HYPERPARAMETER);
    CHECK_STATUS(dp_grad_norm_multi_f32(&t, 1, 1.0, (double *)(void *)s.g, &s.found_inf),
                 DP_ERR_ALIASING);
    double *odd_norm = (double *)(void *)((char *)(void *)&s.norm + 1);
    CHECK_STATUS(dp_grad_norm_multi_f32(&t, 1, 1.0, odd_norm, &s.found_inf),
                 DP_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dp_adam_step_clipped_multi_f32(NULL, 1, &t, 1, 1.0, &s.norm),
                 DP_ERR_NULL_POINTER);
    CHECK_STATUS(dp_adam_step_clipped_multi_f32(&c, 1, &nullgrad, 1, 1.0, &s.norm),
                 DP_ERR_NULL_POINTER);
    CHECK_STATUS(dp_adam_step_clipped_multi_f32(&c, 1, &t, SIZE_MAX / 8, 1.0, &s.norm),
                 DP_ERR_LENGTH);
    CHECK_STATUS(dp_adam_step_clipped_multi_f32(&c, 1, &t, 1, 0.0, &s.norm),
                 DP_ERR_INVALID_HYPERPARAMETER);
    CHECK_STATUS(dp_adam_step_clipped_multi_f32(&c, 1, &t, 1, NAN, &s.norm),
                 DP_ERR_INVALID_HYPERPARAMETER);
    CHECK_STATUS(dp_adam_step_clipped_multi_f32(&bad, 1, &t, 1, 1.0, &s.norm),
                 DP_ERR_INVALID_HYPERPARAMETER);
    CHECK_STATUS(dp_adam_step_clipped_multi_f32(&c, 1, &t, 1, 1.0, (double *)(void *)s.m),
                 DP_ERR_ALIASING);
    CHECK_STATUS(dp_adam_step_clipped_multi_f32(&ams, 1, &t, 1, 1.0, &s.norm),
                 DP_ERR_NULL_POINTER); /* amsgrad needs max_exp_avg_sq */
    UNCHANGED();
#undef UNCHANGED
}

/* ---- Regression tests of issue 13 (each failed on the 0.x ABI) ---------------------------- */

/* Issue 13, defect 1: the 8-bit step read ceil(len / 256) scales per moment with no count
 * from the caller (one who allocated floor(len / 256) got a SIGSEGV at a page end). Each
 * tensor now carries scales_len, which must equal dp_adam_8bit_scales_len(len), else
 * DP_ERR_LENGTH with nothing written; the encoder and decoder take every count too. */
static void eight_bit_scales_need_their_count(void) {
    dp_adam_config c = dp_adam_config_default();
    state s, before;
    fill(&s, 50);
    CHECK_STATUS(quantize_n(DP_MOMENT_EXP_AVG, s.m, s.mc, s.ms, N), DP_OK);
    CHECK_STATUS(quantize_n(DP_MOMENT_EXP_AVG_SQ, s.v, s.vc, s.vs, N), DP_OK);
    before = s;
    static const size_t wrong[] = {0, 1 /* floor(300 / 256) */, 3, SIZE_MAX};
    for (unsigned k = 0; k < sizeof wrong / sizeof wrong[0]; k++) {
        dp_adam_8bit_tensor t = {s.p, s.g, s.mc, s.ms, s.vc, s.vs, N, wrong[k]};
        CHECK_STATUS(dp_adam_8bit_step_multi_f32(&c, 1, &t, 1), DP_ERR_LENGTH);
        /* SIZE_MAX scales overflow the address space: a length error of its own. */
        if (wrong[k] != SIZE_MAX) CHECK(strstr(dp_last_error_message(), "scales_len") != NULL);
    }
    CHECK(memcmp(&s, &before, sizeof s) == 0);
    /* In a list: the second tensor's count is wrong; the first is not written either. */
    dp_adam_8bit_tensor list[2] = {{s.p, s.g, s.mc, s.ms, s.vc, s.vs, 256, 1},
                                   {s.p + 256, s.g + 256, s.mc + 256, s.ms + 1, s.vc + 256,
                                    s.vs + 1, N - 256, 0}};
    CHECK_STATUS(dp_adam_8bit_step_multi_f32(&c, 1, list, 2), DP_ERR_LENGTH);
    CHECK(strstr(dp_last_error_message(), "tensors[1].scales_len") != NULL);
    CHECK(memcmp(&s, &before, sizeof s) == 0);
    list[1].scales_len = 1;
    CHECK_STATUS(dp_adam_8bit_step_multi_f32(&c, 1, list, 2), DP_OK);
    CHECK(memcmp(s.p, before.p, sizeof s.p) != 0);
    /* Exact block multiples and the empty tensor. */
    dp_adam_8bit_tensor empty = {NULL, NULL, NULL, NULL, NULL, NULL, 0, 0};
    CHECK_STATUS(dp_adam_8bit_step_multi_f32(&c, 2, &empty, 1), DP_OK);
    empty.exp_avg_scales = s.ms; /* a count of 1 needs a pointer: else DP_ERR_NULL_POINTER */
    empty.exp_avg_sq_scales = s.vs;
    empty.scales_len = 1;
    CHECK_STATUS(dp_adam_8bit_step_multi_f32(&c, 2, &empty, 1), DP_ERR_LENGTH);
    /* The encoder and decoder: every count must be what the layout needs. */
    before = s;
    float out[N];
    memcpy(out, s.m, sizeof out);
    CHECK_STATUS(dp_adam_8bit_quantize_f32(DP_MOMENT_EXP_AVG, s.m, N, s.mc, N - 1, s.ms, 2),
                 DP_ERR_LENGTH);
    CHECK(strstr(dp_last_error_message(), "codes_len") != NULL);
    CHECK_STATUS(dp_adam_8bit_quantize_f32(DP_MOMENT_EXP_AVG, s.m, N, s.mc, N, s.ms, 1),
                 DP_ERR_LENGTH);
    CHECK(strstr(dp_last_error_message(), "scales_len") != NULL);
    CHECK_STATUS(dp_adam_8bit_quantize_f32(DP_MOMENT_EXP_AVG, s.m, N, s.mc, N + 1, s.ms, 2),
                 DP_ERR_LENGTH);
    CHECK_STATUS(dp_adam_8bit_dequantize_f32(DP_MOMENT_EXP_AVG, s.mc, N, s.ms, 1, out, N),
                 DP_ERR_LENGTH);
    CHECK_STATUS(dp_adam_8bit_dequantize_f32(DP_MOMENT_EXP_AVG, s.mc, N - 1, s.ms, 2, out, N),
                 DP_ERR_LENGTH);
    CHECK_STATUS(dp_adam_8bit_dequantize_f32(DP_MOMENT_EXP_AVG, s.mc, N, s.ms, 3, out, N),
                 DP_ERR_LENGTH);
    CHECK(memcmp(&s, &before, sizeof s) == 0 && memcmp(out, s.m, sizeof out) == 0);
    CHECK_STATUS(dp_adam_8bit_dequantize_f32(DP_MOMENT_EXP_AVG, s.mc, N, s.ms, 2, out, N),
                 DP_OK);
    /* A mode is checked after the counts, before anything is written. */
    CHECK_STATUS(dp_adam_8bit_dequantize_f32(2, s.mc, N, s.ms, 2, out, N),
                 DP_ERR_INVALID_ARGUMENT);
}

/* Issue 13, "fewer entry points": format, rounding and moment are uint32_t arguments; any
 * value not #defined is DP_ERR_INVALID_ARGUMENT with nothing written. The flags of the config
 * (defect 4) are checked by these steps too. */
static void modes_and_flags_are_validated(void) {
    dp_adam_config c = dp_adam_config_default();
    static list_state a, b;
    fill_list(&a);
    memcpy(&b, &a, sizeof a);
    dp_adam_master_tensor mt[LIST];
    dp_adam_8bit_tensor qt[LIST];
    dp_adam_bf16_state_tensor bt[LIST];
    master_list(&a, mt);
    quant_list(&a, qt);
    bf16_state_list(&a, bt);
    static const uint32_t bad_modes[] = {2, 3, 0x100, UINT32_MAX};
    double norm = -1;
    uint32_t found = 7;
    for (unsigned k = 0; k < sizeof bad_modes / sizeof bad_modes[0]; k++) {
        uint32_t m = bad_modes[k];
        CHECK_STATUS(dp_adam_master_step_multi(&c, 1, m, DP_ROUND_NEAREST, 0, mt, LIST),
                     DP_ERR_INVALID_ARGUMENT);
        CHECK(strstr(dp_last_error_message(), "format") != NULL);
        CHECK_STATUS(dp_adam_master_step_multi(&c, 1, DP_FORMAT_BF16, m, 0, mt, LIST),
                     DP_ERR_INVALID_ARGUMENT);
        CHECK(strstr(dp_last_error_message(), "rounding") != NULL);
        CHECK_STATUS(dp_adam_master_step_clipped_multi(&c, 1, m, DP_ROUND_NEAREST, 0, mt, LIST,
                                                       1.0, &norm),
                     DP_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(dp_adam_master_step_clipped_multi(&c, 1, DP_FORMAT_F16, m, 0, mt, LIST,
                                                       1.0, &norm),
                     DP_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(dp_grad_norm_master_multi(m, mt, LIST, 1.0, &norm, &found),
                     DP_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(dp_adam_8bit_quantize_f32(m, a.m, 300, a.mc, 300, a.ms, 2),
                     DP_ERR_INVALID_ARGUMENT);
        CHECK(strstr(dp_last_error_message(), "moment") != NULL);
    }
    for (int f = 0; f < 4; f++) {
        dp_adam_config bad = c;
        uint32_t *fields[] = {&bad.decoupled_weight_decay, &bad.amsgrad, &bad.maximize,
                              &bad.check_finite};
        *fields[f] = 2;
        CHECK_STATUS(dp_adam_master_step_multi(&bad, 1, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, mt,
                                               LIST),
                     DP_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(dp_adam_master_step_clipped_multi(&bad, 1, DP_FORMAT_BF16,
                                                       DP_ROUND_NEAREST, 0, mt, LIST, 1.0,
                                                       &norm),
                     DP_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(dp_adam_bf16_state_step_multi_f32(&bad, 1, 3, bt, LIST),
                     DP_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(dp_adam_8bit_step_multi_f32(&bad, 1, qt, LIST), DP_ERR_INVALID_ARGUMENT);
        bad = c;
        bad.struct_size = 0;
        CHECK_STATUS(dp_adam_8bit_step_multi_f32(&bad, 1, qt, LIST), DP_ERR_INVALID_ARGUMENT);
        CHECK(strstr(dp_last_error_message(), "struct_size") != NULL);
    }
    CHECK(norm == -1 && found == 7);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    /* Nearest rounding ignores the seed; stochastic rounding uses it. */
    CHECK_STATUS(dp_adam_master_step_multi(&c, 1, DP_FORMAT_BF16, DP_ROUND_NEAREST, 1, mt, LIST),
                 DP_OK);
    master_list(&b, mt);
    CHECK_STATUS(dp_adam_master_step_multi(&c, 1, DP_FORMAT_BF16, DP_ROUND_NEAREST, 99, mt,
                                           LIST),
                 DP_OK);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
}

/* Defects 5, 3 and 2 for the mixed-precision and compressed steps: cfg at an odd address is
 * read unaligned; a wrapping address range is DP_ERR_LENGTH; f32-overflowing hyperparameters
 * are DP_ERR_INVALID_HYPERPARAMETER; nothing is written on failure. */
static void odd_config_wrap_and_hyperparameters(void) {
    dp_adam_config c = dp_adam_config_default();
    c.lr = 1e-2;
    static unsigned char raw[sizeof(dp_adam_config) + 8];
    memcpy(raw + 3, &c, sizeof c);
    const dp_adam_config *odd = (const dp_adam_config *)(const void *)(raw + 3);
    static list_state a, b;
    fill_list(&a);
    memcpy(&b, &a, sizeof a);
    dp_adam_master_tensor mt[LIST];
    dp_adam_8bit_tensor qt[LIST];
    dp_adam_bf16_state_tensor bt[LIST];
    master_list(&a, mt);
    CHECK_STATUS(dp_adam_master_step_multi(odd, 1, DP_FORMAT_F16, DP_ROUND_STOCHASTIC, 4, mt,
                                           LIST),
                 DP_OK);
    quant_list(&a, qt);
    CHECK_STATUS(dp_adam_8bit_step_multi_f32(odd, 1, qt, LIST), DP_OK);
    bf16_state_list(&a, bt);
    CHECK_STATUS(dp_adam_bf16_state_step_multi_f32(odd, 1, 4, bt, LIST), DP_OK);
    master_list(&b, mt);
    CHECK_STATUS(dp_adam_master_step_multi(&c, 1, DP_FORMAT_F16, DP_ROUND_STOCHASTIC, 4, mt,
                                           LIST),
                 DP_OK);
    quant_list(&b, qt);
    CHECK_STATUS(dp_adam_8bit_step_multi_f32(&c, 1, qt, LIST), DP_OK);
    bf16_state_list(&b, bt);
    CHECK_STATUS(dp_adam_bf16_state_step_multi_f32(&c, 1, 4, bt, LIST), DP_OK);
    CHECK(memcmp(&a, &b, sizeof a) == 0);

    /* Address wrap: 16 bytes starting 8 below the top of the address space. */
    void *top = (void *)(uintptr_t)(UINTPTR_MAX - 7);
    master_list(&a, mt);
    mt[0].grad = (const uint16_t *)top; /* 300 values: 600 bytes */
    CHECK_STATUS(dp_adam_master_step_multi(&c, 1, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, mt, LIST),
                 DP_ERR_LENGTH);
    double norm = -1;
    uint32_t found = 7;
    CHECK_STATUS(dp_grad_norm_master_multi(DP_FORMAT_BF16, mt, LIST, 1.0, &norm, &found),
                 DP_ERR_LENGTH);
    quant_list(&a, qt);
    qt[2].exp_avg_sq_scales = (float *)top; /* 4 scales: 16 bytes */
    CHECK_STATUS(dp_adam_8bit_step_multi_f32(&c, 1, qt, LIST), DP_ERR_LENGTH);
    bf16_state_list(&a, bt);
    bt[0].exp_avg_bf16 = (uint16_t *)top;
    CHECK_STATUS(dp_adam_bf16_state_step_multi_f32(&c, 1, 4, bt, LIST), DP_ERR_LENGTH);
    CHECK_STATUS(dp_adam_8bit_quantize_f32(DP_MOMENT_EXP_AVG, a.m, 256, (uint8_t *)top, 256,
                                           a.ms, 1),
                 DP_ERR_LENGTH);
    CHECK(norm == -1 && found == 7);
    CHECK(memcmp(&a, &b, sizeof a) == 0);

    /* Hyperparameters not representable as the f32 the kernels use. */
    dp_adam_config big_lr = c, tiny_eps = c, big_wd = c, big_scale = c;
    big_lr.lr = 1e39;
    tiny_eps.eps = 1e-46;
    big_wd.weight_decay = 1e39;
    big_wd.decoupled_weight_decay = 1;
    big_scale.inv_grad_scale = 1e39;
    big_scale.check_finite = 1;
    const dp_adam_config *bad[4] = {&big_lr, &tiny_eps, &big_wd, &big_scale};
    master_list(&a, mt);
    quant_list(&a, qt);
    bf16_state_list(&a, bt);
    for (int k = 0; k < 4; k++) {
        CHECK_STATUS(dp_adam_master_step_multi(bad[k], 1, DP_FORMAT_BF16, DP_ROUND_NEAREST, 0, mt,
                                               LIST),
                     DP_ERR_INVALID_HYPERPARAMETER);
        CHECK_STATUS(dp_adam_master_step_clipped_multi(bad[k], 1, DP_FORMAT_BF16,
                                                       DP_ROUND_NEAREST, 0, mt, LIST, 1.0,
                                                       &norm),
                     DP_ERR_INVALID_HYPERPARAMETER);
        CHECK_STATUS(dp_adam_8bit_step_multi_f32(bad[k], 1, qt, LIST),
                     DP_ERR_INVALID_HYPERPARAMETER);
        CHECK_STATUS(dp_adam_bf16_state_step_multi_f32(bad[k], 1, 4, bt, LIST),
                     DP_ERR_INVALID_HYPERPARAMETER);
    }
    CHECK_STATUS(dp_grad_norm_master_multi(DP_FORMAT_F16, mt, LIST, 1e39, &norm, &found),
                 DP_ERR_INVALID_HYPERPARAMETER);
    CHECK(norm == -1 && found == 7);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
}

/* The headers' concurrency promise: C threads calling the master, bf16-state and 8-bit steps
 * and the norm at once on disjoint buffers get the serial results, bit for bit. */
typedef struct mixed_job {
    list_state s;
    double norm;
    uint32_t found;
    int ok;
} mixed_job;

static void run_mixed_steps(mixed_job *j) {
    dp_adam_config c = dp_adam_config_default();
    c.lr = 1e-2;
    dp_adam_master_tensor mt[LIST];
    dp_adam_8bit_tensor qt[LIST];
    dp_adam_bf16_state_tensor bt[LIST];
    j->ok = 1;
    for (uint64_t t = 1; t <= 3; t++) {
        master_list(&j->s, mt);
        quant_list(&j->s, qt);
        bf16_state_list(&j->s, bt);
        j->ok &= dp_adam_master_step_multi(&c, t, DP_FORMAT_BF16, DP_ROUND_STOCHASTIC, 9, mt,
                                           LIST) == DP_OK;
        j->ok &= dp_adam_8bit_step_multi_f32(&c, t, qt, LIST) == DP_OK;
        j->ok &= dp_adam_bf16_state_step_multi_f32(&c, t, 9, bt, LIST) == DP_OK;
        j->ok &= dp_grad_norm_master_multi(DP_FORMAT_BF16, mt, LIST, 1.0, &j->norm, &j->found) ==
                 DP_OK;
        j->ok &= dp_last_error_message()[0] == '\0';
    }
}

static void *mixed_thread(void *arg) {
    run_mixed_steps((mixed_job *)arg);
    return NULL;
}

static void many_c_threads_at_once(void) {
    enum { J = 4 };
    static mixed_job jobs[J], serial;
    pthread_t threads[J];
    fill_list(&serial.s);
    for (int i = 0; i < J; i++) memcpy(&jobs[i].s, &serial.s, sizeof serial.s);
    run_mixed_steps(&serial);
    CHECK(serial.ok);
    CHECK_STATUS(dp_set_num_threads(2), DP_OK);
    for (int i = 0; i < J; i++)
        CHECK(pthread_create(&threads[i], NULL, mixed_thread, &jobs[i]) == 0);
    for (int i = 0; i < J; i++) CHECK(pthread_join(threads[i], NULL) == 0);
    CHECK_STATUS(dp_set_num_threads(0), DP_OK);
    for (int i = 0; i < J; i++) {
        CHECK(jobs[i].ok);
        CHECK(memcmp(&jobs[i].s, &serial.s, sizeof serial.s) == 0);
        CHECK(jobs[i].norm == serial.norm && jobs[i].found == serial.found);
    }
}

int main(void) {
    master_bf16_steps_match_the_reference();
    master_f16_step_rounds_to_nearest();
    norm_and_clipped_step();
    compressed_state_steps();
    tensor_lists();
    errors_write_nothing();
    eight_bit_scales_need_their_count();
    modes_and_flags_are_validated();
    odd_config_wrap_and_hyperparameters();
    many_c_threads_at_once();
    return dp_test_finish("adam_mixed.c");
}
