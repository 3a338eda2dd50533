// The C++17 wrapper (include/diagprec.hpp): exceptions, std::error_code, container overloads.
#include "diagprec.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "../c/dp_test.h"

static void container_steps_match_pointer_steps() {
    const std::size_t n = 1001;
    std::vector<float> p(n), g(n), m(n, 0.0f), v(n, 0.0f), x(n, 0.0f);
    for (unsigned i = 0; i < n; i++) {
        p[i] = dp_value(i, 1, 1.0f);
        g[i] = dp_value(i, 2, 0.1f);
    }
    std::vector<float> p2 = p, m2 = m, v2 = v, x2 = x;
    auto cfg = diagprec::adam_config::adamw(1e-2).with_amsgrad();
    for (std::uint64_t t = 1; t <= 5; t++) {
        diagprec::adam_step(cfg, t, p, g, m, v, x);
        CHECK_STATUS(dp_adam_step_f32(&cfg, t, p2.data(), g.data(), m2.data(), v2.data(),
                                      x2.data(), n),
                     DP_OK);
    }
    CHECK(dp_same_bits(p.data(), p2.data(), n));
    CHECK(dp_same_bits(x.data(), x2.data(), n));
    CHECK(p[0] != dp_value(0, 1, 1.0f));

    std::vector<dp_adam_tensor_f32> list = {{p.data(), g.data(), m.data(), v.data(), x.data(), 500},
                                            {p.data() + 500, g.data(), m.data() + 500,
                                             v.data() + 500, x.data() + 500, 501}};
    diagprec::adam_step_multi(cfg, 6, list);
    CHECK_STATUS(dp_adam_step_f32(&cfg, 6, p2.data(), g.data(), m2.data(), v2.data(), x2.data(),
                                  500),
                 DP_OK);
    CHECK_STATUS(dp_adam_step_f32(&cfg, 6, p2.data() + 500, g.data(), m2.data() + 500,
                                  v2.data() + 500, x2.data() + 500, 501),
                 DP_OK);
    CHECK(dp_same_bits(p.data(), p2.data(), n));
}

static void errors_become_exceptions_or_codes() {
    std::array<float, 8> p{}, g{}, m{}, v{};
    std::vector<float> short_grad(7);
    diagprec::adam_config cfg;
    bool thrown = false;
    try {
        diagprec::adam_step(cfg, 1, p, short_grad, m, v);
    } catch (const diagprec::error& e) {
        thrown = e.status() == DP_ERR_LENGTH;
    }
    CHECK(thrown);

    thrown = false;
    try {
        diagprec::adam_step(cfg.with_betas(0.9, 1.5), 1, p, g, m, v);
    } catch (const diagprec::error& e) {
        thrown = e.status() == DP_ERR_INVALID_HYPERPARAMETER &&
                 std::string(e.what()).find("beta2") != std::string::npos &&
                 e.code().category() == diagprec::category() &&
                 e.code().message() == "DP_ERR_INVALID_HYPERPARAMETER";
    }
    CHECK(thrown);

    std::error_code ec;
    diagprec::adam_config ok;
    diagprec::adam_step(ok, 1, p.data(), g.data(), p.data(), v.data(), nullptr, p.size(), ec);
    CHECK(ec == DP_ERR_ALIASING);
    diagprec::adam_step(ok, 1, p.data(), g.data(), m.data(), v.data(), nullptr, p.size(), ec);
    CHECK(!ec);
    g[3] = NAN;
    diagprec::adam_step(ok.with_check_finite(), 2, p.data(), g.data(), m.data(), v.data(),
                        nullptr, p.size(), ec);
    CHECK(ec == DP_ERR_NON_FINITE);

    thrown = false;
    try {
        diagprec::set_num_threads(1u << 30);
    } catch (const std::system_error& e) {
        thrown = e.code() == DP_ERR_INVALID_ARGUMENT;
    }
    CHECK(thrown);
    CHECK(!diagprec::version().empty() && !diagprec::isa_name().empty());

    // The flags are uint32_t 0/1: the setters write exactly 0 or 1, and any other value the
    // caller stores is refused (issue 13, defect 4).
    auto flags = diagprec::adam_config().with_amsgrad().with_maximize().with_check_finite();
    CHECK(flags.amsgrad == 1 && flags.maximize == 1 && flags.check_finite == 1);
    CHECK(flags.with_amsgrad(false).amsgrad == 0);
    CHECK(diagprec::adam_config::adamw(1e-3).decoupled_weight_decay == 1);
    CHECK(diagprec::adam_config().struct_size == sizeof(dp_adam_config));
    diagprec::adam_config bad;
    bad.check_finite = 3;
    std::fill(g.begin(), g.end(), 0.5f);
    auto p_before = p;
    diagprec::adam_step(bad, 1, p.data(), g.data(), m.data(), v.data(), nullptr, p.size(), ec);
    CHECK(ec == DP_ERR_INVALID_ARGUMENT && p == p_before);
}

int main() {
    container_steps_match_pointer_steps();
    errors_become_exceptions_or_codes();
    return dp_test_finish("adam.cpp");
}
