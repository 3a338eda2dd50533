/* A consumer of the installed diagprec package (built by .ci/consumers.sh with CMake, both
 * targets, and with pkg-config, shared and static): checks the ABI version and one Adam step
 * against a double-precision reference written here. Exits non-zero on any failure. */
#include <diagprec.h>
#include <math.h>
#include <stdio.h>

int main(void) {
    if (dp_abi_version() != DP_ABI_VERSION) {
        fprintf(stderr, "ABI %u loaded, header %d\n", dp_abi_version(), DP_ABI_VERSION);
        return 1;
    }
    enum { N = 37 };
    float param[N], grad[N], m[N], v[N];
    double want[N];
    dp_adam_config cfg = dp_adam_config_default();
    cfg.lr = 0.01;
    for (int i = 0; i < N; i++) {
        param[i] = 0.5f - (float)i / N;
        grad[i] = (float)((i % 7) - 3) * 0.25f;
        m[i] = v[i] = 0.0f;
        /* Step 1 of Adam, bias-corrected: m_hat = g, v_hat = g^2. */
        double g = grad[i];
        want[i] = param[i] - cfg.lr * g / (fabs(g) + cfg.eps);
    }
    dp_status s = dp_adam_step_f32(&cfg, 1, param, grad, m, v, NULL, N);
    if (s != DP_OK) {
        fprintf(stderr, "dp_adam_step_f32: %s: %s\n", dp_status_str(s), dp_last_error_message());
        return 1;
    }
    for (int i = 0; i < N; i++) {
        if (fabs(param[i] - want[i]) > 1e-6) {
            fprintf(stderr, "param[%d] = %.9g, want %.9g\n", i, param[i], want[i]);
            return 1;
        }
    }
    printf("diagprec %s (C ABI %u, %s): one Adam step matches the reference\n", dp_version(),
           dp_abi_version(), dp_isa_name());
    return 0;
}
