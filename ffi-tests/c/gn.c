/* Gauss-Newton diagonals and the GN^p step through the C ABI: real computations against
 * double-precision references written here, thread-count independence, the regression tests
 * of issue 13's GN defects, and every error status the exports can return, each checking that
 * no output changed. */
#include <stdint.h>
#include <stdlib.h>

#include "dp_test.h"

/* The layout of the config struct (LP64): a 1.x library reads exactly this. */
_Static_assert(sizeof(dp_gn_config) == 80, "dp_gn_config is 80 bytes");
_Static_assert(offsetof(dp_gn_config, struct_size) == 0, "struct_size leads");
_Static_assert(offsetof(dp_gn_config, lr) == 8, "lr at 8");
_Static_assert(offsetof(dp_gn_config, sophia_eps) == 56, "sophia_eps at 56");
_Static_assert(offsetof(dp_gn_config, bias_correction) == 64, "flags from 64");
_Static_assert(offsetof(dp_gn_config, reserved) == 76, "reserved at 76");

#define NS 9   /* samples */
#define DIM 13 /* features */
#define STRIDE 15
#define C 4 /* classes */

static float x[NS * STRIDE], w[NS], z[NS * C], zl[NS], s_fac[NS * C];

static void fill_inputs(void) {
    for (unsigned i = 0; i < NS * STRIDE; i++) x[i] = dp_value(i, 1, 1.5f);
    for (unsigned n = 0; n < NS; n++) w[n] = fabsf(dp_value(n, 2, 1.0f));
    for (unsigned i = 0; i < NS * C; i++) z[i] = dp_value(i, 3, 4.0f);
    for (unsigned n = 0; n < NS; n++) zl[n] = dp_value(n, 4, 6.0f);
    for (unsigned i = 0; i < NS * C; i++) s_fac[i] = fabsf(dp_value(i, 5, 1.0f));
}

static int close_to(float ours, double expected, double scale) {
    return fabs((double)ours - expected) <= 1e-5 * scale + 1e-30;
}

static void softmax(const float *logits, double *p) {
    double max = logits[0], total = 0.0;
    for (int c = 1; c < C; c++)
        if (logits[c] > max) max = logits[c];
    for (int c = 0; c < C; c++) total += p[c] = exp(logits[c] - max);
    for (int c = 0; c < C; c++) p[c] /= total;
}

/* dp_gn_diag_linear_f32 in the identity basis on the first NS * DIM floats of x. */
static dp_status linear(uint32_t output, const float *s, uint64_t seed, double beta, float *h,
                        float *hb) {
    return dp_gn_diag_linear_f32(x, NS * DIM, NS, DIM, output, s, NS * C, C, seed, NULL, 0, NULL,
                                 0, beta, h, C * DIM, hb, hb ? C : 0);
}

static void weighted_and_logistic(void) {
    for (int variant = 0; variant < 3; variant++) {
        float h[DIM];
        double expected[DIM];
        for (int j = 0; j < DIM; j++) {
            h[j] = 0.5f + 0.01f * (float)j;
            double sum = 0.0;
            for (int n = 0; n < NS; n++) {
                double v = x[n * STRIDE + j];
                double s = 1.0 / (1.0 + exp(-(double)zl[n]));
                double wn = variant == 0 ? 1.0 : variant == 1 ? w[n] : s * (1.0 - s);
                sum += wn * v * v;
            }
            expected[j] = 0.25 * h[j] + 0.75 * sum / NS;
        }
        if (variant == 0)
            CHECK_STATUS(dp_gn_diag_dense_f32(x, NS * STRIDE, NS, DIM, STRIDE, DP_GN_WEIGHTS_GIVEN,
                                              NULL, 0, NULL, 0, DIM, 0.25, h, DIM),
                         DP_OK);
        else if (variant == 1)
            CHECK_STATUS(dp_gn_diag_dense_f32(x, NS * STRIDE, NS, DIM, STRIDE, DP_GN_WEIGHTS_GIVEN,
                                              w, NS, NULL, 0, DIM, 0.25, h, DIM),
                         DP_OK);
        else
            CHECK_STATUS(dp_gn_diag_dense_f32(x, NS * STRIDE, NS, DIM, STRIDE,
                                              DP_GN_WEIGHTS_LOGISTIC, zl, NS, NULL, 0, DIM, 0.25,
                                              h, DIM),
                         DP_OK);
        for (int j = 0; j < DIM; j++) CHECK(close_to(h[j], expected[j], expected[j]));
    }
}

/* h = S^T (X o X) / N with x read as NS x DIM contiguous (the first NS*DIM floats). */
static void linear_and_softmax(void) {
    for (int variant = 0; variant < 2; variant++) {
        float h[C * DIM], hb[C];
        double eh[C * DIM], ehb[C], s[NS * C];
        for (int n = 0; n < NS; n++) {
            double p[C];
            softmax(&z[n * C], p);
            for (int c = 0; c < C; c++)
                s[n * C + c] = variant == 0 ? s_fac[n * C + c] : p[c] * (1.0 - p[c]);
        }
        for (int c = 0; c < C; c++) {
            double b = 0.0;
            for (int n = 0; n < NS; n++) b += s[n * C + c];
            ehb[c] = b / NS;
            hb[c] = NAN; /* beta = 0 replaces without reading */
            for (int j = 0; j < DIM; j++) {
                double sum = 0.0;
                for (int n = 0; n < NS; n++) sum += s[n * C + c] * x[n * DIM + j] * x[n * DIM + j];
                eh[c * DIM + j] = sum / NS;
                h[c * DIM + j] = NAN;
            }
        }
        if (variant == 0)
            CHECK_STATUS(linear(DP_GN_OUTPUT_FACTORS, s_fac, 0, 0.0, h, hb), DP_OK);
        else
            CHECK_STATUS(linear(DP_GN_SOFTMAX_EXACT, z, 0, 0.0, h, hb), DP_OK);
        for (int i = 0; i < C * DIM; i++) CHECK(close_to(h[i], eh[i], eh[i]));
        for (int c = 0; c < C; c++) CHECK(close_to(hb[c], ehb[c], ehb[c]));
    }
    /* Sampled: reproducible for a seed, different across seeds, each factor (p - e_y)^2 so the
     * bias diagonal sums to (1/N) sum_n |p_n - e_y|^2 in (0, 2). */
    float a[C * DIM], b[C * DIM], c2[C * DIM], hb[C];
    CHECK_STATUS(linear(DP_GN_SOFTMAX_SAMPLED, z, 7, 0.0, a, hb), DP_OK);
    CHECK_STATUS(linear(DP_GN_SOFTMAX_SAMPLED, z, 7, 0.0, b, NULL), DP_OK);
    CHECK_STATUS(linear(DP_GN_SOFTMAX_SAMPLED, z, 8, 0.0, c2, NULL), DP_OK);
    CHECK(dp_same_bits(a, b, C * DIM));
    CHECK(!dp_same_bits(a, c2, C * DIM));
    double total = 0.0;
    for (int c = 0; c < C; c++) total += hb[c];
    CHECK(total > 0.0 && total < 2.0);
}

/* In a basis: U is DIM x K row-major; Kronecker: Q_C (C x C) and Q_X (DIM x DIM), row-major. */
static void bases(void) {
    enum { K = 5 };
    static float u[DIM * K], qc[C * C], qx[DIM * DIM];
    for (unsigned i = 0; i < DIM * K; i++) u[i] = dp_value(i, 6, 1.0f);
    for (unsigned i = 0; i < C * C; i++) qc[i] = dp_value(i, 7, 1.0f);
    for (unsigned i = 0; i < DIM * DIM; i++) qx[i] = dp_value(i, 8, 1.0f);
    float h[K];
    double eh[K];
    for (int a = 0; a < K; a++) {
        double sum = 0.0, scale = 0.0;
        for (int n = 0; n < NS; n++) {
            double y = 0.0, ya = 0.0;
            for (int i = 0; i < DIM; i++) {
                y += x[n * STRIDE + i] * u[i * K + a];
                ya += fabs(x[n * STRIDE + i] * u[i * K + a]);
            }
            sum += w[n] * y * y;
            scale += w[n] * ya * ya;
        }
        eh[a] = sum / NS;
        h[a] = NAN;
        (void)scale;
    }
    CHECK_STATUS(dp_gn_diag_dense_f32(x, NS * STRIDE, NS, DIM, STRIDE, DP_GN_WEIGHTS_GIVEN, w, NS,
                                      u, DIM * K, K, 0.0, h, K),
                 DP_OK);
    for (int a = 0; a < K; a++) CHECK(fabs(h[a] - eh[a]) <= 1e-5 * (fabs(eh[a]) + 1.0));

    static float hk[C * DIM], hkb[C];
    static double ek[C * DIM], ekb[C];
    for (int i = 0; i < C * DIM; i++) ek[i] = 0.0;
    for (int i = 0; i < C; i++) ekb[i] = 0.0;
    for (int n = 0; n < NS; n++) {
        double p[C], A[C], B[DIM];
        softmax(&z[n * C], p);
        for (int a = 0; a < C; a++) {
            double t1 = 0.0, t2 = 0.0;
            for (int c = 0; c < C; c++) {
                t1 += p[c] * qc[c * C + a] * qc[c * C + a];
                t2 += p[c] * qc[c * C + a];
            }
            A[a] = t1 - t2 * t2;
            ekb[a] += A[a] / NS;
        }
        for (int b = 0; b < DIM; b++) {
            double t = 0.0;
            for (int j = 0; j < DIM; j++) t += qx[j * DIM + b] * x[n * DIM + j];
            B[b] = t * t;
        }
        for (int a = 0; a < C; a++)
            for (int b = 0; b < DIM; b++) ek[a * DIM + b] += A[a] * B[b] / NS;
    }
    for (int i = 0; i < C * DIM; i++) hk[i] = 1.0f;
    for (int i = 0; i < C; i++) hkb[i] = 1.0f;
    CHECK_STATUS(dp_gn_diag_linear_f32(x, NS * DIM, NS, DIM, DP_GN_SOFTMAX_EXACT, z, NS * C, C, 0,
                                       qc, C * C, qx, DIM * DIM, 0.5, hk, C * DIM, hkb, C),
                 DP_OK);
    for (int i = 0; i < C * DIM; i++)
        CHECK(fabs(hk[i] - (0.5 + 0.5 * ek[i])) <= 1e-4 * (fabs(ek[i]) + 1.0));
    for (int i = 0; i < C; i++) CHECK(fabs(hkb[i] - (0.5 + 0.5 * ekb[i])) <= 1e-5);
}

#define L 37

/* One GN^p step in double. */
static void reference_step(const dp_gn_config *c, uint64_t t, const float *p, const float *g,
                           const float *m, const float *h, int momentum, double *p_out) {
    double bc1 = momentum && c->bias_correction ? 1.0 - pow(c->beta1, (double)t) : 1.0;
    for (int i = 0; i < L; i++) {
        double theta = p[i] * (1.0 - c->lr * c->weight_decay);
        double mh = momentum ? (c->beta1 * m[i] + (1.0 - c->beta1) * g[i]) / bc1 : g[i];
        double u;
        if (c->sophia) {
            double d = c->sophia_gamma * h[i];
            if (d < c->sophia_eps) d = c->sophia_eps;
            u = mh / d;
            u = u > 1.0 ? 1.0 : u < -1.0 ? -1.0 : u;
        } else {
            u = mh * pow((h[i] > 0 ? h[i] : 0.0) + c->damping, c->power);
        }
        p_out[i] = theta - c->lr * u;
    }
}

static void steps(void) {
    dp_gn_config configs[4];
    for (int k = 0; k < 4; k++) configs[k] = dp_gn_config_default();
    configs[1].power = -0.5;
    configs[1].beta1 = 0.9;
    configs[1].lr = 0.1;
    configs[2].power = 0.7;
    configs[2].weight_decay = 0.1;
    configs[2].lr = 0.01;
    configs[3].sophia = 1;
    configs[3].beta1 = 0.96;
    configs[3].lr = 0.01;
    for (int k = 0; k < 4; k++) {
        float p[L], g[L], m[L], h[L];
        for (int i = 0; i < L; i++) {
            p[i] = dp_value((unsigned)i, 20u + (unsigned)k, 1.0f);
            g[i] = dp_value((unsigned)i, 30u + (unsigned)k, 0.1f);
            m[i] = dp_value((unsigned)i, 40u + (unsigned)k, 0.01f);
            h[i] = fabsf(dp_value((unsigned)i, 50u + (unsigned)k, 2.0f));
        }
        int momentum = configs[k].beta1 > 0.0;
        double expected[L];
        reference_step(&configs[k], 3, p, g, m, h, momentum, expected);
        CHECK_STATUS(dp_gn_step_f32(&configs[k], 3, p, g, momentum ? m : NULL, h, L), DP_OK);
        for (int i = 0; i < L; i++) {
            double tol = 1e-5 * (fabs(expected[i]) + fabs(p[i]) + configs[k].lr);
            if (fabs(p[i] - expected[i]) > tol) {
                CHECK(fabs(p[i] - expected[i]) <= tol);
                fprintf(stderr, "config %d elem %d: %.9g vs %.9g\n", k, i, p[i], expected[i]);
                break;
            }
        }
    }
    dp_gn_config d = dp_gn_config_default();
    CHECK(d.lr == 1.0 && d.power == -1.0 && d.damping == 1e-4 && d.beta1 == 0.0);
    CHECK(d.bias_correction && !d.sophia && !d.check_finite && d.weight_decay == 0.0);
}

static void threads_agree(void) {
    enum { BN = 1000, BD = 300 };
    static float bx[BN * BD], h1[BD], h3[BD], l1[C * BD], l3[C * BD];
    static float bz[BN * C];
    for (unsigned i = 0; i < BN * BD; i++) bx[i] = dp_value(i, 9, 1.0f);
    for (unsigned i = 0; i < BN * C; i++) bz[i] = dp_value(i, 10, 3.0f);
    CHECK_STATUS(dp_set_num_threads(1), DP_OK);
    CHECK_STATUS(dp_gn_diag_dense_f32(bx, BN * BD, BN, BD, BD, DP_GN_WEIGHTS_GIVEN, NULL, 0, NULL,
                                      0, BD, 0.0, h1, BD),
                 DP_OK);
    CHECK_STATUS(dp_gn_diag_linear_f32(bx, BN * BD, BN, BD, DP_GN_SOFTMAX_SAMPLED, bz, BN * C, C,
                                       3, NULL, 0, NULL, 0, 0.0, l1, C * BD, NULL, 0),
                 DP_OK);
    CHECK_STATUS(dp_set_num_threads(3), DP_OK);
    CHECK_STATUS(dp_gn_diag_dense_f32(bx, BN * BD, BN, BD, BD, DP_GN_WEIGHTS_GIVEN, NULL, 0, NULL,
                                      0, BD, 0.0, h3, BD),
                 DP_OK);
    CHECK_STATUS(dp_gn_diag_linear_f32(bx, BN * BD, BN, BD, DP_GN_SOFTMAX_SAMPLED, bz, BN * C, C,
                                       3, NULL, 0, NULL, 0, 0.0, l3, C * BD, NULL, 0),
                 DP_OK);
    CHECK(dp_same_bits(h1, h3, BD));
    CHECK(dp_same_bits(l1, l3, C * BD));
    CHECK_STATUS(dp_set_num_threads(0), DP_OK);
}

/* Shorthands for the identity-basis dense diagonal over x's NS rows of STRIDE floats. */
static dp_status dense(const float *xs, size_t n, size_t dim, size_t stride, float *h) {
    size_t x_len = n == 0 ? 0 : (n - 1) * stride + dim;
    return dp_gn_diag_dense_f32(xs, x_len, n, dim, stride, DP_GN_WEIGHTS_GIVEN, NULL, 0, NULL, 0,
                                dim, 0.0, h, dim);
}

/* Every error status the GN exports can return (DP_ERR_ALLOCATION aside: it needs a workspace
 * larger than memory behind valid buffers), each leaving every output unchanged. */
static void errors_write_nothing(void) {
    float h[C * DIM], hb[C], hs[C * DIM], hbs[C];
    for (int i = 0; i < C * DIM; i++) h[i] = 0.5f;
    for (int i = 0; i < C; i++) hb[i] = 0.5f;
    memcpy(hs, h, sizeof h);
    memcpy(hbs, hb, sizeof hb);
#define UNCHANGED() CHECK(memcmp(h, hs, sizeof h) == 0 && memcmp(hb, hbs, sizeof hb) == 0)
    const size_t XL = NS * STRIDE;
    /* NULL pointers. */
    CHECK_STATUS(dp_gn_diag_dense_f32(NULL, XL, NS, DIM, STRIDE, DP_GN_WEIGHTS_GIVEN, NULL, 0,
                                      NULL, 0, DIM, 0.0, h, DIM),
                 DP_ERR_NULL_POINTER);
    CHECK(strstr(dp_last_error_message(), "x") != NULL);
    CHECK_STATUS(dp_gn_diag_dense_f32(x, XL, NS, DIM, STRIDE, DP_GN_WEIGHTS_GIVEN, NULL, 0, NULL,
                                      0, DIM, 0.0, NULL, DIM),
                 DP_ERR_NULL_POINTER);
    CHECK_STATUS(dp_gn_diag_dense_f32(x, XL, NS, DIM, STRIDE, DP_GN_WEIGHTS_LOGISTIC, NULL, NS,
                                      NULL, 0, DIM, 0.0, h, DIM),
                 DP_ERR_NULL_POINTER);
    CHECK_STATUS(linear(DP_GN_OUTPUT_FACTORS, NULL, 0, 0.0, h, hb), DP_ERR_NULL_POINTER);
    CHECK_STATUS(linear(DP_GN_SOFTMAX_EXACT, NULL, 0, 0.0, h, hb), DP_ERR_NULL_POINTER);
    CHECK_STATUS(dp_gn_diag_dense_f32(x, XL, NS, DIM, STRIDE, DP_GN_WEIGHTS_GIVEN, NULL, 0, NULL,
                                      DIM * 3, 3, 0.0, h, 3),
                 DP_ERR_NULL_POINTER);
    CHECK_STATUS(dp_gn_diag_linear_f32(x, NS * DIM, NS, DIM, DP_GN_SOFTMAX_EXACT, z, NS * C, C, 0,
                                       NULL, C * C, NULL, DIM * DIM, 0.0, h, C * DIM, hb, C),
                 DP_ERR_NULL_POINTER);
    CHECK_STATUS(dp_gn_step_f32(NULL, 1, h, h + 10, NULL, h + 20, 5), DP_ERR_NULL_POINTER);
    UNCHANGED();
    /* Lengths. */
    CHECK_STATUS(dense(x, 0, DIM, STRIDE, h), DP_ERR_LENGTH);
    CHECK_STATUS(dense(x, NS, DIM, DIM - 1, h), DP_ERR_LENGTH);
    CHECK(strstr(dp_last_error_message(), "row_stride") != NULL);
    CHECK_STATUS(dp_gn_diag_dense_f32(x, XL, SIZE_MAX / 2, DIM, STRIDE, DP_GN_WEIGHTS_GIVEN, NULL,
                                      0, NULL, 0, DIM, 0.0, h, DIM),
                 DP_ERR_LENGTH);
    CHECK_STATUS(dp_gn_diag_linear_f32(x, NS * DIM, SIZE_MAX / 2, 4, DP_GN_OUTPUT_FACTORS, s_fac,
                                       NS * C, C, 0, NULL, 0, NULL, 0, 0.0, h, C * 4, hb, C),
                 DP_ERR_LENGTH);
    CHECK_STATUS(dp_gn_diag_linear_f32(x, 0, 0, DIM, DP_GN_SOFTMAX_EXACT, z, 0, C, 0, NULL, 0,
                                       NULL, 0, 0.0, h, C * DIM, hb, C),
                 DP_ERR_LENGTH);
    /* Every count against what the call needs: x one float short, weights, u, h, s, h_bias,
     * q_c and q_x each off by one. */
    CHECK_STATUS(dp_gn_diag_dense_f32(x, (NS - 1) * STRIDE + DIM - 1, NS, DIM, STRIDE,
                                      DP_GN_WEIGHTS_GIVEN, NULL, 0, NULL, 0, DIM, 0.0, h, DIM),
                 DP_ERR_LENGTH);
    CHECK_STATUS(dp_gn_diag_dense_f32(x, XL, NS, DIM, STRIDE, DP_GN_WEIGHTS_GIVEN, w, NS - 1,
                                      NULL, 0, DIM, 0.0, h, DIM),
                 DP_ERR_LENGTH);
    CHECK_STATUS(dp_gn_diag_dense_f32(x, XL, NS, DIM, STRIDE, DP_GN_WEIGHTS_GIVEN, NULL, 0, s_fac,
                                      DIM * 2 - 1, 2, 0.0, h, 2),
                 DP_ERR_LENGTH);
    CHECK_STATUS(dp_gn_diag_dense_f32(x, XL, NS, DIM, STRIDE, DP_GN_WEIGHTS_GIVEN, NULL, 0, NULL,
                                      0, DIM, 0.0, h, DIM - 1),
                 DP_ERR_LENGTH);
    CHECK_STATUS(dp_gn_diag_dense_f32(x, XL, NS, DIM, STRIDE, DP_GN_WEIGHTS_GIVEN, NULL, 0, NULL,
                                      0, DIM - 1, 0.0, h, DIM - 1),
                 DP_ERR_LENGTH);
    CHECK_STATUS(dp_gn_diag_linear_f32(x, NS * DIM, NS, DIM, DP_GN_OUTPUT_FACTORS, s_fac,
                                       NS * C - 1, C, 0, NULL, 0, NULL, 0, 0.0, h, C * DIM, hb, C),
                 DP_ERR_LENGTH);
    CHECK_STATUS(dp_gn_diag_linear_f32(x, NS * DIM, NS, DIM, DP_GN_OUTPUT_FACTORS, s_fac, NS * C,
                                       C, 0, NULL, 0, NULL, 0, 0.0, h, C * DIM, hb, C - 1),
                 DP_ERR_LENGTH);
    CHECK_STATUS(dp_gn_diag_linear_f32(x, NS * DIM, NS, DIM, DP_GN_SOFTMAX_EXACT, z, NS * C, C, 0,
                                       s_fac, C * C - 1, x, DIM * DIM, 0.0, h, C * DIM, hb, C),
                 DP_ERR_LENGTH);
    UNCHANGED();
    /* Hyperparameters. */
    CHECK_STATUS(dp_gn_diag_dense_f32(x, XL, NS, DIM, STRIDE, DP_GN_WEIGHTS_GIVEN, NULL, 0, NULL,
                                      0, DIM, 1.0, h, DIM),
                 DP_ERR_INVALID_HYPERPARAMETER);
    CHECK(strstr(dp_last_error_message(), "beta") != NULL);
    /* A double beta below 1 that rounds to 1 in float. */
    CHECK_STATUS(dp_gn_diag_dense_f32(x, XL, NS, DIM, STRIDE, DP_GN_WEIGHTS_GIVEN, NULL, 0, NULL,
                                      0, DIM, 1.0 - 1e-12, h, DIM),
                 DP_ERR_INVALID_HYPERPARAMETER);
    CHECK_STATUS(linear(DP_GN_OUTPUT_FACTORS, s_fac, 0, NAN, h, hb),
                 DP_ERR_INVALID_HYPERPARAMETER);
    CHECK_STATUS(linear(DP_GN_SOFTMAX_EXACT, z, 0, -0.5, h, hb), DP_ERR_INVALID_HYPERPARAMETER);
    dp_gn_config c = dp_gn_config_default(), bad = c;
    float p[8] = {1, 2, 3, 4, 5, 6, 7, 8}, ps[8], g[8] = {1, 1, 1, 1, 1, 1, 1, 1}, m[8] = {0},
          hh[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    memcpy(ps, p, sizeof p);
    bad.damping = 0.0; /* power -1 needs damping > 0 */
    CHECK_STATUS(dp_gn_step_f32(&bad, 1, p, g, m, hh, 8), DP_ERR_INVALID_HYPERPARAMETER);
    CHECK(strstr(dp_last_error_message(), "damping") != NULL);
    bad = c;
    bad.power = INFINITY;
    CHECK_STATUS(dp_gn_step_f32(&bad, 1, p, g, m, hh, 8), DP_ERR_INVALID_HYPERPARAMETER);
    bad = c;
    bad.sophia = 1;
    bad.sophia_eps = 0.0;
    CHECK_STATUS(dp_gn_step_f32(&bad, 1, p, g, m, hh, 8), DP_ERR_INVALID_HYPERPARAMETER);
    bad = c;
    bad.beta1 = 1.0;
    CHECK_STATUS(dp_gn_step_f32(&bad, 1, p, g, m, hh, 8), DP_ERR_INVALID_HYPERPARAMETER);
    CHECK_STATUS(dp_gn_step_f32(&c, 0, p, g, m, hh, 8), DP_ERR_INVALID_HYPERPARAMETER);
    CHECK(memcmp(p, ps, sizeof p) == 0);
    UNCHANGED();
    /* Invalid arguments: an unknown mode, half a Kronecker basis, output factors in a Kronecker
     * basis, a misaligned buffer. */
    CHECK_STATUS(linear(3u, z, 0, 0.0, h, hb), DP_ERR_INVALID_ARGUMENT);
    CHECK(strstr(dp_last_error_message(), "output") != NULL);
    CHECK_STATUS(dp_gn_diag_dense_f32(x, XL, NS, DIM, STRIDE, 2u, NULL, 0, NULL, 0, DIM, 0.0, h,
                                      DIM),
                 DP_ERR_INVALID_ARGUMENT);
    CHECK(strstr(dp_last_error_message(), "weighting") != NULL);
    CHECK_STATUS(dp_gn_diag_linear_f32(x, 4, 2, 2, 99u, z, 4, 2, 0, s_fac, 4, s_fac, 4, 0.0, h, 4,
                                       hb, 2),
                 DP_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dp_gn_diag_linear_f32(x, 4, 2, 2, DP_GN_SOFTMAX_EXACT, z, 4, 2, 0, s_fac, 4, NULL,
                                       0, 0.0, h, 4, hb, 2),
                 DP_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dp_gn_diag_linear_f32(x, 4, 2, 2, DP_GN_OUTPUT_FACTORS, z, 4, 2, 0, s_fac, 4,
                                       s_fac, 4, 0.0, h, 4, hb, 2),
                 DP_ERR_INVALID_ARGUMENT);
    float *misaligned = (float *)(void *)((char *)(void *)h + 1);
    CHECK_STATUS(dp_gn_diag_dense_f32(x, XL, NS, DIM - 1, STRIDE, DP_GN_WEIGHTS_GIVEN, NULL, 0,
                                      NULL, 0, DIM - 1, 0.0, misaligned, DIM - 1),
                 DP_ERR_INVALID_ARGUMENT);
    UNCHANGED();
    /* Aliasing: an output over an input, two outputs over each other. */
    CHECK_STATUS(dense(h, 2, 4, 4, h + 6), DP_ERR_ALIASING);
    CHECK_STATUS(dp_gn_diag_linear_f32(x, NS * DIM, NS, DIM, DP_GN_OUTPUT_FACTORS, s_fac, NS * C,
                                       C, 0, NULL, 0, NULL, 0, 0.0, h, C * DIM, h + 4, C),
                 DP_ERR_ALIASING);
    CHECK(strstr(dp_last_error_message(), "h_bias") != NULL);
    CHECK_STATUS(dp_gn_step_f32(&c, 1, p, g, p + 1, hh, 4), DP_ERR_ALIASING);
    CHECK(memcmp(p, ps, sizeof p) == 0);
    UNCHANGED();
    /* grad and h may share memory (both read). */
    CHECK_STATUS(dp_gn_step_f32(&c, 1, p, g, NULL, g, 8), DP_OK);
    memcpy(p, ps, sizeof p);
    /* Non-finite grad or h with check_finite. */
    bad = c;
    bad.check_finite = 1;
    hh[7] = NAN;
    CHECK_STATUS(dp_gn_step_f32(&bad, 1, p, g, m, hh, 8), DP_ERR_NON_FINITE);
    hh[7] = 1.0f;
    g[0] = INFINITY;
    CHECK_STATUS(dp_gn_step_f32(&bad, 1, p, g, m, hh, 8), DP_ERR_NON_FINITE);
    CHECK(memcmp(p, ps, sizeof p) == 0 && m[0] == 0.0f);
    /* Empty buffers with a zero length are fine. */
    CHECK_STATUS(dp_gn_step_f32(&c, 1, NULL, NULL, NULL, NULL, 0), DP_OK);
    CHECK_STATUS(dp_gn_diag_dense_f32(x, XL, NS, 0, 0, DP_GN_WEIGHTS_GIVEN, NULL, 0, NULL, 0, 0,
                                      0.0, NULL, 0),
                 DP_OK);
#undef UNCHANGED
}

/* The issue 13 defects of the GN exports, each failing on the old library. */
static void issue_13_regressions(void) {
    float p[4] = {1, 2, 3, 4}, ps[4], g[4] = {0, 0, 0, 0}, h0[4] = {0, 0, 0, 0};
    memcpy(ps, p, sizeof p);
    dp_gn_config c = dp_gn_config_default();
    /* Defect 2: damping = 1e-46 is 0 in float: (h + damping)^-1 is inf. */
    dp_gn_config bad = c;
    bad.damping = 1e-46;
    CHECK_STATUS(dp_gn_step_f32(&bad, 1, p, g, NULL, h0, 4), DP_ERR_INVALID_HYPERPARAMETER);
    /* Defect 2: damping = 1e-39 (a float subnormal) with power -1 and h = 0: 1 / 1e-39 = 1e39
     * overflows float. */
    bad = c;
    bad.damping = 1e-39;
    bad.power = -1.0;
    CHECK_STATUS(dp_gn_step_f32(&bad, 1, p, g, NULL, h0, 4), DP_ERR_INVALID_HYPERPARAMETER);
    CHECK(memcmp(p, ps, sizeof p) == 0);
    /* Defect 4: flags are uint32_t and only 0 or 1 is valid (a bool byte of 2 was UB). */
    bad = c;
    bad.check_finite = 2;
    CHECK_STATUS(dp_gn_step_f32(&bad, 1, p, g, NULL, h0, 4), DP_ERR_INVALID_ARGUMENT);
    CHECK(strstr(dp_last_error_message(), "check_finite") != NULL);
    bad = c;
    bad.bias_correction = 0xffffffffu;
    CHECK_STATUS(dp_gn_step_f32(&bad, 1, p, g, NULL, h0, 4), DP_ERR_INVALID_ARGUMENT);
    bad = c;
    bad.struct_size = 0;
    CHECK_STATUS(dp_gn_step_f32(&bad, 1, p, g, NULL, h0, 4), DP_ERR_INVALID_ARGUMENT);
    CHECK(strstr(dp_last_error_message(), "struct_size") != NULL);
    CHECK(memcmp(p, ps, sizeof p) == 0);
    /* Defect 5: a config at an odd address is read unaligned: same result as an aligned one. */
    unsigned char raw[sizeof(dp_gn_config) + 1];
    dp_gn_config odd = c;
    odd.lr = 0.5;
    memcpy(raw + 1, &odd, sizeof odd);
    float q[4] = {1, 2, 3, 4}, g1[4] = {1, -1, 2, -2}, h1[4] = {1, 1, 1, 1};
    CHECK_STATUS(dp_gn_step_f32((const dp_gn_config *)(void *)(raw + 1), 1, q, g1, NULL, h1, 4),
                 DP_OK);
    float r[4] = {1, 2, 3, 4};
    CHECK_STATUS(dp_gn_step_f32(&odd, 1, r, g1, NULL, h1, 4), DP_OK);
    CHECK(dp_same_bits(q, r, 4));
    /* Defect 3: a range that wraps the address space is a length error, not a SIGSEGV. */
    CHECK_STATUS(dp_gn_step_f32(&c, 1, (float *)(uintptr_t)(UINTPTR_MAX - 7), g, NULL, h0, 4),
                 DP_ERR_LENGTH);
    CHECK_STATUS(dp_gn_diag_dense_f32(x, NS * STRIDE, NS, 4, STRIDE, DP_GN_WEIGHTS_GIVEN, NULL, 0,
                                      NULL, 0, 4, 0.0, (float *)(uintptr_t)(UINTPTR_MAX - 15), 4),
                 DP_ERR_LENGTH);
    /* Defect 8: dp_gn_matrix_accumulate_f32 with n_samples = 0 (it wiped h with beta = 0). */
    float hm[4] = {1, 2, 2, 5}, hms[4];
    memcpy(hms, hm, sizeof hm);
    CHECK_STATUS(dp_gn_matrix_accumulate_f32(hm, 4, 2, x, NS * STRIDE, 0, 2, NULL, 0, 0.0),
                 DP_ERR_LENGTH);
    CHECK(memcmp(hm, hms, sizeof hm) == 0);
}

int main(void) {
    fill_inputs();
    weighted_and_logistic();
    linear_and_softmax();
    bases();
    steps();
    threads_agree();
    errors_write_nothing();
    issue_13_regressions();
    return dp_test_finish("gn (C)");
}
