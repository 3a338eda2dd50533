/* ZeRO stage 1 over MPI with diagprec: the optimizer state (Adam's two moments) is sharded
 * across ranks; each rank steps its shard of the parameters, then an MPI_Allgatherv shares
 * the updated parameters. Clipping by the global gradient norm is combined across ranks from
 * per-piece partial sums of squares (dp_grad_norm_partials_f32 / MPI_Allgatherv /
 * dp_grad_norm_combine), in the library's fixed order, so the parameters after N steps are
 * bitwise those of one process's dp_adam_step_clipped_multi_f32 on every tensor, for any
 * number of ranks. Rank 0 checks that against such a single-process run and writes the
 * parameters' bits to argv[1] (examples/mpi/run.sh compares the files of 1, 2 and 4 ranks).
 *
 * Threads per rank: each rank's diagprec pool has DIAGPREC_NUM_THREADS threads (run.sh sets
 * 1), or the call dp_set_num_threads(n) below sets it; with R ranks on a host of C cores,
 * use C / R threads per rank so ranks do not compete for cores.
 *
 * The gradient here is a deterministic function of the parameters and the step, identical on
 * every rank; in data-parallel training it would be each rank's gradient after the usual
 * all-reduce (or reduce-scatter: a rank needs only its shard's gradient). */
#include <diagprec.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Tensor lengths of the "model": several norm pieces (16384 elements) each, odd tails. */
static const size_t LENS[] = {3 * 16384 + 5, 1000, 16384, 2 * 16384 + 777, 33, 5 * 16384 + 1,
                              7};
enum { NT = sizeof LENS / sizeof LENS[0], STEPS = 20 };
/* Clipping is active in the first steps (norm above it) and not in the later ones. */
static const double MAX_GRAD_NORM = 250.0;

#define CHECK(call)                                                                         \
    do {                                                                                    \
        dp_status s_ = (call);                                                              \
        if (s_ != DP_OK) {                                                                  \
            fprintf(stderr, "%s:%d: %s: %s (%s)\n", __FILE__, __LINE__, #call,              \
                    dp_status_str(s_), dp_last_error_message());                            \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                   \
        }                                                                                   \
    } while (0)

static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb93fe53a85ebULL;
    x ^= x >> 33;
    return x;
}

/* A value in [-0.5, 0.5) from (i, salt). */
static float unit(uint64_t i, uint64_t salt) {
    return (float)(mix(i * 0x9e3779b97f4a7c15ULL + salt) >> 40) / 16777216.0f - 0.5f;
}

/* The gradient of a noisy quadratic: g = w (p - target) + noise(step). */
static void gradient(const float *p, float *g, size_t n, uint64_t step) {
    for (size_t i = 0; i < n; i++) {
        float w = 0.5f + unit(i, 1) + 0.5f;
        g[i] = w * (p[i] - unit(i, 2)) + 0.1f * unit(i, 1000 + step);
    }
}

static void init_params(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        p[i] = 2.0f * unit(i, 3);
    }
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, ranks;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    if (dp_abi_version() != DP_ABI_VERSION) {
        fprintf(stderr, "diagprec ABI mismatch\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    /* One pool thread per rank unless DIAGPREC_NUM_THREADS says otherwise. */
    if (getenv("DIAGPREC_NUM_THREADS") == NULL) {
        CHECK(dp_set_num_threads(1));
    }

    /* The global list of norm pieces: (tensor, first element within the tensor). */
    const size_t piece = dp_grad_norm_piece_len();
    size_t n_pieces = 0, total = 0, offset[NT];
    for (int t = 0; t < NT; t++) {
        offset[t] = total;
        total += LENS[t];
        n_pieces += dp_grad_norm_piece_count(LENS[t]);
    }
    int *piece_tensor = malloc(n_pieces * sizeof *piece_tensor);
    size_t *piece_start = malloc(n_pieces * sizeof *piece_start);
    for (int t = 0, k = 0; t < NT; t++) {
        for (size_t s = 0; s < LENS[t]; s += piece, k++) {
            piece_tensor[k] = t;
            piece_start[k] = s;
        }
    }
    /* Rank r owns the pieces [pr[r], pr[r+1]): a contiguous range of the flat parameters,
     * cut inside tensors only at piece boundaries. */
    int *piece_counts = malloc(ranks * sizeof(int)), *piece_displs = malloc(ranks * sizeof(int));
    int *elem_counts = malloc(ranks * sizeof(int)), *elem_displs = malloc(ranks * sizeof(int));
    for (int r = 0; r < ranks; r++) {
        size_t lo = n_pieces * r / ranks, hi = n_pieces * (r + 1) / ranks;
        size_t e_lo = lo < n_pieces ? offset[piece_tensor[lo]] + piece_start[lo] : total;
        size_t e_hi = hi < n_pieces ? offset[piece_tensor[hi]] + piece_start[hi] : total;
        piece_counts[r] = (int)(hi - lo);
        piece_displs[r] = (int)lo;
        elem_counts[r] = (int)(e_hi - e_lo);
        elem_displs[r] = (int)e_lo;
    }
    const size_t my_lo = (size_t)piece_displs[rank], my_hi = my_lo + (size_t)piece_counts[rank];
    const size_t my_start = (size_t)elem_displs[rank], my_len = (size_t)elem_counts[rank];

    float *param = malloc(total * sizeof(float)), *grad = malloc(total * sizeof(float));
    /* ZeRO-1: this rank's optimizer state covers its shard only. */
    float *m = calloc(my_len ? my_len : 1, sizeof(float));
    float *v = calloc(my_len ? my_len : 1, sizeof(float));
    /* The shard as a tensor list: one entry per tensor it touches. */
    dp_adam_tensor_f32 shard[NT];
    size_t n_shard = 0;
    for (size_t k = my_lo; k < my_hi;) {
        int t = piece_tensor[k];
        size_t first = k;
        while (k < my_hi && piece_tensor[k] == t) {
            k++;
        }
        size_t start = offset[t] + piece_start[first];
        size_t end = k < n_pieces && piece_tensor[k] == t ? offset[t] + piece_start[k]
                                                          : offset[t] + LENS[t];
        dp_adam_tensor_f32 e = {param + start, grad + start, m + (start - my_start),
                                v + (start - my_start), NULL, end - start};
        shard[n_shard++] = e;
    }
    double *my_partials = malloc((my_hi - my_lo + 1) * sizeof(double));
    double *partials = malloc(n_pieces * sizeof(double));
    double norms[STEPS];

    dp_adam_config cfg = dp_adam_config_default();
    cfg.lr = 1e-2;
    cfg.weight_decay = 0.01;
    cfg.decoupled_weight_decay = 1;

    init_params(param, total);
    for (uint64_t step = 1; step <= STEPS; step++) {
        gradient(param, grad, total, step);
        uint32_t found_inf = 0;
        CHECK(dp_grad_norm_partials_f32(shard, n_shard, cfg.inv_grad_scale, my_partials,
                                        my_hi - my_lo, &found_inf));
        MPI_Allgatherv(my_partials, piece_counts[rank], MPI_DOUBLE, partials, piece_counts,
                       piece_displs, MPI_DOUBLE, MPI_COMM_WORLD);
        double norm, clip;
        CHECK(dp_grad_norm_combine(partials, n_pieces, &norm));
        /* A NaN/Inf gradient anywhere makes the norm non-finite on every rank: all skip. */
        CHECK(dp_grad_norm_clip_coefficient(norm, MAX_GRAD_NORM, &clip));
        dp_adam_config folded = cfg;
        folded.inv_grad_scale = cfg.inv_grad_scale * clip;
        folded.check_finite = 0;
        CHECK(dp_adam_step_multi_f32(&folded, step, shard, n_shard));
        MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, param, elem_counts, elem_displs,
                       MPI_FLOAT, MPI_COMM_WORLD);
        norms[step - 1] = norm;
        if (rank == 0 && (step == 1 || step == STEPS || step % 5 == 0)) {
            printf("ranks %d step %2llu: global grad norm %.6f, clip %.6f\n", ranks,
                   (unsigned long long)step, norm, clip);
        }
    }

    int failed = 0;
    if (rank == 0) {
        /* One process, every tensor, the library's two-pass clipped step. */
        float *p1 = malloc(total * sizeof(float)), *g1 = malloc(total * sizeof(float));
        float *m1 = calloc(total, sizeof(float)), *v1 = calloc(total, sizeof(float));
        dp_adam_tensor_f32 all[NT];
        for (int t = 0; t < NT; t++) {
            size_t o = offset[t];
            dp_adam_tensor_f32 e = {p1 + o, g1 + o, m1 + o, v1 + o, NULL, LENS[t]};
            all[t] = e;
        }
        init_params(p1, total);
        for (uint64_t step = 1; step <= STEPS; step++) {
            gradient(p1, g1, total, step);
            double norm;
            CHECK(dp_adam_step_clipped_multi_f32(&cfg, step, all, NT, MAX_GRAD_NORM, &norm));
            if (memcmp(&norm, &norms[step - 1], sizeof norm) != 0) {
                fprintf(stderr, "step %llu: norm %.17g, single process %.17g\n",
                        (unsigned long long)step, norms[step - 1], norm);
                failed = 1;
            }
        }
        size_t differ = 0;
        for (size_t i = 0; i < total; i++) {
            differ += memcmp(&p1[i], &param[i], sizeof(float)) != 0;
        }
        if (differ) {
            fprintf(stderr, "%zu of %zu parameters differ from the single-process step\n",
                    differ, total);
            failed = 1;
        }
        uint64_t h = 1469598103934665603ULL;
        for (size_t i = 0; i < total; i++) {
            uint32_t bits;
            memcpy(&bits, &param[i], 4);
            h = (h ^ bits) * 1099511628211ULL;
        }
        printf("ranks %d: %zu parameters in %d tensors, %zu norm pieces, %d steps; "
               "fnv1a %016llx; %s the single-process dp_adam_step_clipped_multi_f32\n",
               ranks, total, NT, n_pieces, STEPS, (unsigned long long)h,
               failed ? "DIFFERENT FROM" : "bitwise equal to");
        if (argc > 1) {
            FILE *f = fopen(argv[1], "wb");
            if (!f || fwrite(param, sizeof(float), total, f) != total || fclose(f) != 0) {
                fprintf(stderr, "cannot write %s\n", argv[1]);
                failed = 1;
            }
        }
        free(p1), free(g1), free(m1), free(v1);
    }
    MPI_Bcast(&failed, 1, MPI_INT, 0, MPI_COMM_WORLD);
    free(param), free(grad), free(m), free(v), free(my_partials), free(partials);
    free(piece_tensor), free(piece_start), free(piece_counts), free(piece_displs);
    free(elem_counts), free(elem_displs);
    MPI_Finalize();
    return failed;
}
