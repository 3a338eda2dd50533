/* A trainer that calls only dp_adam_step_f32: what a static link against libdiagprec.a carries
 * (examples/size/measure.sh links it statically with and without --gc-sections, stripped or
 * not, and dynamically, and prints the sizes). */
#include <diagprec.h>
#include <stdio.h>

int main(void) {
    enum { N = 1000 };
    static float p[N], g[N], m[N], v[N];
    for (int i = 0; i < N; i++) {
        p[i] = 1.0f;
        g[i] = (float)(i % 13) - 6.0f;
    }
    dp_adam_config cfg = dp_adam_config_default();
    for (unsigned step = 1; step <= 10; step++) {
        if (dp_adam_step_f32(&cfg, step, p, g, m, v, NULL, N) != DP_OK) {
            fprintf(stderr, "%s\n", dp_last_error_message());
            return 1;
        }
    }
    printf("p[0] = %.6f\n", p[0]);
    return 0;
}
