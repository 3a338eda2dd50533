/* The sharded-norm exports (src/ffi/grad_norm.rs): the partials of every shard, gathered in the
 * list's order and combined, give dp_adam_step_clipped_multi_f32's norm bit for bit; a shard
 * stepped with the clip coefficient folded into inv_grad_scale gives its parameters bit for
 * bit; every status of the contract, with nothing written on failure. */
#include <float.h>
#include <stdint.h>
#include <stdlib.h>

#include "dp_test.h"

enum { A = 2 * 16384 + 100, B = 16384, C = 7, TOTAL = A + B + C };

static float grad[TOTAL], p1[TOTAL], m1[TOTAL], v1[TOTAL], p2[TOTAL], m2[TOTAL], v2[TOTAL];

int main(void) {
    const size_t lens[3] = {A, B, C};
    for (unsigned i = 0; i < TOTAL; i++) {
        grad[i] = dp_value(i, 5, 1.0f);
        p1[i] = p2[i] = dp_value(i, 6, 1.0f);
    }
    CHECK(dp_grad_norm_piece_len() == 16384);
    CHECK(dp_grad_norm_piece_count(0) == 0 && dp_grad_norm_piece_count(1) == 1);
    CHECK(dp_grad_norm_piece_count(A) == 3 && dp_grad_norm_piece_count(B) == 1);

    dp_adam_config cfg = dp_adam_config_default();
    cfg.lr = 1e-2;
    cfg.inv_grad_scale = 0.5;
    /* One process: the two-pass clipped step over the three tensors. */
    dp_adam_tensor_f32 all[3];
    for (size_t t = 0, o = 0; t < 3; o += lens[t], t++) {
        dp_adam_tensor_f32 e = {p1 + o, grad + o, m1 + o, v1 + o, NULL, lens[t]};
        all[t] = e;
    }
    double norm1 = -1.0;
    CHECK_STATUS(dp_adam_step_clipped_multi_f32(&cfg, 1, all, 3, 10.0, &norm1), DP_OK);

    /* Two "ranks": the first holds tensor A's first two pieces, the second the rest (A's
     * last piece, B, C): a cut inside A at a piece boundary. */
    dp_adam_tensor_f32 r0[1] = {{p2, grad, m2, v2, NULL, 2 * 16384}};
    dp_adam_tensor_f32 r1[3] = {{p2 + 2 * 16384, grad + 2 * 16384, m2 + 2 * 16384,
                                 v2 + 2 * 16384, NULL, 100},
                                {p2 + A, grad + A, m2 + A, v2 + A, NULL, B},
                                {p2 + A + B, grad + A + B, m2 + A + B, v2 + A + B, NULL, C}};
    double partials[5];
    uint32_t inf = 7;
    CHECK_STATUS(dp_grad_norm_partials_f32(r0, 1, 0.5, partials, 2, &inf), DP_OK);
    CHECK(inf == 0);
    CHECK_STATUS(dp_grad_norm_partials_f32(r1, 3, 0.5, partials + 2, 3, NULL), DP_OK);
    double norm2 = -1.0, clip = -1.0;
    CHECK_STATUS(dp_grad_norm_combine(partials, 5, &norm2), DP_OK);
    CHECK(memcmp(&norm1, &norm2, sizeof norm1) == 0);
    CHECK_STATUS(dp_grad_norm_clip_coefficient(norm2, 10.0, &clip), DP_OK);
    CHECK(clip > 0.0 && clip < 1.0); /* clipping is active */
    dp_adam_config folded = cfg;
    folded.inv_grad_scale = cfg.inv_grad_scale * clip;
    folded.check_finite = 0;
    CHECK_STATUS(dp_adam_step_multi_f32(&folded, 1, r0, 1), DP_OK);
    CHECK_STATUS(dp_adam_step_multi_f32(&folded, 1, r1, 3), DP_OK);
    CHECK(dp_same_bits(p1, p2, TOTAL) && dp_same_bits(m1, m2, TOTAL));
    CHECK(dp_same_bits(v1, v2, TOTAL));
    CHECK_STATUS(dp_grad_norm_clip_coefficient(1.0, INFINITY, &clip), DP_OK);
    CHECK(clip == 1.0);

    /* Failures write nothing. */
    double keep[5] = {9, 9, 9, 9, 9}, out = 42.0;
    uint32_t flag = 42;
    CHECK_STATUS(dp_grad_norm_partials_f32(NULL, 1, 1.0, keep, 0, &flag), DP_ERR_NULL_POINTER);
    CHECK_STATUS(dp_grad_norm_partials_f32(r1, 3, 1.0, NULL, 3, &flag), DP_ERR_NULL_POINTER);
    CHECK_STATUS(dp_grad_norm_partials_f32(r1, 3, 1.0, keep, 4, &flag), DP_ERR_LENGTH);
    CHECK_STATUS(dp_grad_norm_partials_f32(r1, 3, 1.0, keep, 2, &flag), DP_ERR_LENGTH);
    CHECK_STATUS(dp_grad_norm_partials_f32(r1, 3, 0.0, keep, 3, &flag),
                 DP_ERR_INVALID_HYPERPARAMETER);
    CHECK_STATUS(dp_grad_norm_partials_f32(r1, 3, 1e300, keep, 3, &flag),
                 DP_ERR_INVALID_HYPERPARAMETER);
    CHECK_STATUS(dp_grad_norm_partials_f32(r1, 3, 1.0, (double *)(void *)((char *)keep + 1), 3,
                                           &flag),
                 DP_ERR_INVALID_ARGUMENT);
    /* Partials written over a gradient. */
    dp_adam_tensor_f32 g8 = {NULL, (const float *)(const void *)keep, NULL, NULL, NULL, 8};
    CHECK_STATUS(dp_grad_norm_partials_f32(&g8, 1, 1.0, keep, 1, &flag), DP_ERR_ALIASING);
    CHECK_STATUS(dp_grad_norm_partials_f32(r1, 3, 1.0, keep, 3, (uint32_t *)(void *)keep),
                 DP_ERR_ALIASING);
    CHECK(keep[0] == 9 && keep[1] == 9 && keep[2] == 9 && keep[3] == 9 && keep[4] == 9);
    CHECK(flag == 42);
    CHECK_STATUS(dp_grad_norm_combine(keep, 5, NULL), DP_ERR_NULL_POINTER);
    CHECK_STATUS(dp_grad_norm_combine(NULL, 5, &out), DP_ERR_NULL_POINTER);
    CHECK_STATUS(dp_grad_norm_combine(keep, 5, keep + 2), DP_ERR_ALIASING);
    CHECK_STATUS(dp_grad_norm_combine(keep, SIZE_MAX / 4, &out), DP_ERR_LENGTH);
    CHECK(out == 42.0 && keep[2] == 9);
    CHECK_STATUS(dp_grad_norm_combine(NULL, 0, &out), DP_OK);
    CHECK(out == 0.0);
    out = 42.0;
    CHECK_STATUS(dp_grad_norm_clip_coefficient(1.0, 1.0, NULL), DP_ERR_NULL_POINTER);
    CHECK_STATUS(dp_grad_norm_clip_coefficient(NAN, 1.0, &out), DP_ERR_NON_FINITE);
    CHECK_STATUS(dp_grad_norm_clip_coefficient(INFINITY, 1.0, &out), DP_ERR_NON_FINITE);
    CHECK_STATUS(dp_grad_norm_clip_coefficient(-1.0, 1.0, &out), DP_ERR_INVALID_HYPERPARAMETER);
    CHECK_STATUS(dp_grad_norm_clip_coefficient(1.0, 0.0, &out), DP_ERR_INVALID_HYPERPARAMETER);
    CHECK_STATUS(dp_grad_norm_clip_coefficient(1.0, NAN, &out), DP_ERR_INVALID_HYPERPARAMETER);
    CHECK_STATUS(dp_grad_norm_clip_coefficient(1e300, 1e-300, &out),
                 DP_ERR_INVALID_HYPERPARAMETER);
    CHECK(out == 42.0);
    return dp_test_finish("grad_norm");
}
