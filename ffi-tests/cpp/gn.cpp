// The C++17 wrapper's Gauss-Newton calls (include/diagprec.hpp): container and pointer forms
// agree with the C ABI bit for bit, errors become exceptions or std::error_code.
#include "diagprec.hpp"

#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "../c/dp_test.h"

static void wrappers_match_the_c_abi() {
    const std::size_t n = 50, dim = 33, classes = 6;
    std::vector<float> x(n * dim), z(n * classes), w(n);
    for (unsigned i = 0; i < x.size(); i++) x[i] = dp_value(i, 1, 1.0f);
    for (unsigned i = 0; i < z.size(); i++) z[i] = dp_value(i, 2, 3.0f);
    for (unsigned i = 0; i < n; i++) w[i] = std::fabs(dp_value(i, 3, 1.0f));

    std::vector<float> h(dim, 0.5f), h2(dim, 0.5f);
    diagprec::gn_diag_weighted(x, n, 0.9f, h);
    CHECK_STATUS(dp_gn_diag_dense_f32(x.data(), x.size(), n, dim, dim, DP_GN_WEIGHTS_GIVEN, nullptr,
                                      0, nullptr, 0, dim, 0.9, h2.data(), dim),
                 DP_OK);
    CHECK(dp_same_bits(h.data(), h2.data(), dim));
    // h_j = 0.9 * 0.5 + 0.1 * mean x^2, checked on one column in double.
    double mean = 0.0;
    for (std::size_t s = 0; s < n; s++) mean += double(x[s * dim + 5]) * x[s * dim + 5] / n;
    CHECK(std::fabs(h[5] - (0.45 + 0.1 * mean)) <= 1e-6);

    std::vector<float> hs(classes * dim), hb(classes), hs2(classes * dim), hb2(classes);
    diagprec::gn_diag_softmax(x.data(), z.data(), n, dim, classes, diagprec::gn_estimator::sampled,
                              11, 0.0f, hs.data(), hb.data());
    CHECK_STATUS(dp_gn_diag_linear_f32(x.data(), x.size(), n, dim, DP_GN_SOFTMAX_SAMPLED, z.data(),
                                       z.size(), classes, 11, nullptr, 0, nullptr, 0, 0.0,
                                       hs2.data(), hs2.size(), hb2.data(), hb2.size()),
                 DP_OK);
    CHECK(dp_same_bits(hs.data(), hs2.data(), hs.size()));
    CHECK(dp_same_bits(hb.data(), hb2.data(), hb.size()));

    // MSE linear layer (s = 1) equals the identity-basis diagonal for every output row.
    std::vector<float> ones(n * 2, 1.0f), hl(2 * dim), hi(dim);
    diagprec::gn_diag_linear(x.data(), n, dim, ones.data(), 2, 0.0f, hl.data());
    diagprec::gn_diag_weighted(x.data(), n, dim, dim, nullptr, 0.0f, hi.data());
    for (std::size_t j = 0; j < dim; j++) {
        CHECK(std::fabs(hl[j] - hi[j]) <= 1e-5f * hi[j]);
        CHECK(hl[j] == hl[dim + j]);
    }

    // The identity basis reproduces the identity-basis diagonal.
    std::vector<float> u(dim * dim, 0.0f), hu(dim);
    for (std::size_t i = 0; i < dim; i++) u[i + i * dim] = 1.0f;
    diagprec::gn_diag_weighted_in_basis(x.data(), n, dim, dim, w.data(), u.data(), dim, 0.0f,
                                        hu.data());
    std::vector<float> hw(dim);
    diagprec::gn_diag_weighted(x.data(), n, dim, dim, w.data(), 0.0f, hw.data());
    for (std::size_t j = 0; j < dim; j++) CHECK(std::fabs(hu[j] - hw[j]) <= 1e-5f * hw[j]);

    // Kronecker with identity bases equals the plain exact softmax diagonal.
    std::vector<float> qc(classes * classes, 0.0f), hk(classes * dim), hkb(classes);
    for (std::size_t i = 0; i < classes; i++) qc[i + i * classes] = 1.0f;
    diagprec::gn_diag_softmax_in_kronecker(x.data(), z.data(), n, dim, classes,
                                           diagprec::gn_estimator::exact, 0, qc.data(), u.data(),
                                           0.0f, hk.data(), hkb.data());
    diagprec::gn_diag_softmax(x.data(), z.data(), n, dim, classes, diagprec::gn_estimator::exact, 0,
                              0.0f, hs.data(), hb.data());
    for (std::size_t i = 0; i < hk.size(); i++)
        CHECK(std::fabs(hk[i] - hs[i]) <= 1e-5f * hs[i] + 1e-7f);

    // Steps: container forms equal pointer calls.
    std::vector<float> p(dim), p2(dim), g(dim), m(dim, 0.0f), m2(dim, 0.0f);
    for (unsigned i = 0; i < dim; i++) {
        p[i] = p2[i] = dp_value(i, 4, 1.0f);
        g[i] = dp_value(i, 5, 0.1f);
    }
    auto cfg = diagprec::gn_config().with_power(-0.5).with_beta1(0.9).with_lr(0.1);
    diagprec::gn_step(cfg, 1, p, g, m, h);
    CHECK_STATUS(dp_gn_step_f32(&cfg, 1, p2.data(), g.data(), m2.data(), h.data(), dim), DP_OK);
    CHECK(dp_same_bits(p.data(), p2.data(), dim));
    CHECK(dp_same_bits(m.data(), m2.data(), dim));
    auto sophia = diagprec::gn_config::sophia_step(1e-2);
    diagprec::gn_step(sophia, 2, p, g, h);
    CHECK_STATUS(dp_gn_step_f32(&sophia, 2, p2.data(), g.data(), nullptr, h.data(), dim), DP_OK);
    CHECK(dp_same_bits(p.data(), p2.data(), dim));
}

static void errors_become_exceptions_or_codes() {
    std::array<float, 8> p{}, g{}, h{};
    std::vector<float> short_h(7);
    bool thrown = false;
    try {
        diagprec::gn_step(diagprec::gn_config(), 1, p, g, short_h);
    } catch (const diagprec::error& e) {
        thrown = e.status() == DP_ERR_LENGTH;
    }
    CHECK(thrown);

    thrown = false;
    try {
        diagprec::gn_step(diagprec::gn_config().with_damping(0.0), 1, p, g, h);
    } catch (const diagprec::error& e) {
        thrown = e.status() == DP_ERR_INVALID_HYPERPARAMETER &&
                 std::string(e.what()).find("damping") != std::string::npos;
    }
    CHECK(thrown);

    std::error_code ec;
    std::array<float, 4> x{1, 2, 3, 4}, hh{};
    diagprec::gn_diag_weighted(x.data(), 2, 2, 2, nullptr, 1.0f, hh.data(), ec);
    CHECK(ec == std::error_code(DP_ERR_INVALID_HYPERPARAMETER));
    diagprec::gn_diag_softmax(x.data(), x.data(), 2, 2, 2,
                              static_cast<diagprec::gn_estimator>(7u), 0, 0.0f, hh.data(), nullptr,
                              ec);
    CHECK(ec == std::error_code(DP_ERR_INVALID_ARGUMENT));
    diagprec::gn_diag_linear(x.data(), 2, 2, x.data(), 2, 0.0f, hh.data(), hh.data() + 1, ec);
    CHECK(ec == std::error_code(DP_ERR_ALIASING));
    diagprec::gn_diag_weighted(x.data(), 2, 2, 2, nullptr, 0.0f, hh.data(), ec);
    CHECK(!ec && hh[0] == 5.0f && hh[1] == 10.0f);
    thrown = false;
    try {
        std::vector<float> xs(5);
        diagprec::gn_diag_weighted(xs, 2, 0.0f, hh);
    } catch (const diagprec::error& e) {
        thrown = e.status() == DP_ERR_LENGTH;
    }
    CHECK(thrown);
}

int main() {
    wrappers_match_the_c_abi();
    errors_become_exceptions_or_codes();
    return dp_test_finish("gn (C++)");
}
