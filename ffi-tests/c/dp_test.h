/* Minimal check macros shared by the C and C++ test programs. Each program returns non-zero
 * when a check fails; the Rust harness (ffi-tests/tests/programs.rs) runs them. */
#ifndef DP_TEST_H
#define DP_TEST_H

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "diagprec.h"

static int dp_checks = 0;
static int dp_failures = 0;

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        dp_checks++;                                                                     \
        if (!(cond)) {                                                                   \
            dp_failures++;                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
        }                                                                                \
    } while (0)

/* The call returns `want`; on failure the message is non-empty, on success empty. */
#define CHECK_STATUS(call, want)                                                         \
    do {                                                                                 \
        dp_status got_ = (call);                                                         \
        dp_checks++;                                                                     \
        if (got_ != (want)) {                                                            \
            dp_failures++;                                                               \
            fprintf(stderr, "%s:%d: %s returned %s, want %s (%s)\n", __FILE__, __LINE__, \
                    #call, dp_status_str((int)got_), dp_status_str((int)(want)),         \
                    dp_last_error_message());                                            \
        } else if ((got_ == DP_OK) != (dp_last_error_message()[0] == '\0')) {            \
            dp_failures++;                                                               \
            fprintf(stderr, "%s:%d: %s: message '%s' does not fit the status\n",         \
                    __FILE__, __LINE__, #call, dp_last_error_message());                 \
        }                                                                                \
    } while (0)

static inline int dp_test_finish(const char *suite) {
    printf("%s: %d passed, %d failed\n", suite, dp_checks - dp_failures, dp_failures);
    return dp_failures == 0 ? 0 : 1;
}

/* Bitwise equality of float buffers (NaN == NaN). */
static inline int dp_same_bits(const float *a, const float *b, size_t n) {
    return n == 0 || memcmp(a, b, n * sizeof(float)) == 0;
}

/* A deterministic value in about [-scale, scale]. */
static inline float dp_value(unsigned i, unsigned seed, float scale) {
    unsigned x = i * 2654435761u + seed * 40503u + 12345u;
    x ^= x >> 13;
    x *= 0x5bd1e995u;
    x ^= x >> 15;
    return scale * ((float)(x % 20001u) / 10000.0f - 1.0f);
}

#endif
