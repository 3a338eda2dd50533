// The C++17 wrapper for bases (include/diagprec.hpp): RAII handles, exceptions and
// std::error_code, container overloads, a SOAP-like loop.
#include "diagprec.hpp"

#include <cmath>
#include <vector>

#include "../c/dp_test.h"

static std::vector<float> symmetric(std::size_t d, unsigned seed) {
    std::vector<float> a(d * d);
    for (std::size_t i = 0; i < d; i++)
        for (std::size_t j = 0; j <= i; j++) {
            float v = dp_value(static_cast<unsigned>(i * d + j), seed, 1.0f) +
                      (i == j ? static_cast<float>(i) : 0.0f);
            a[i * d + j] = a[j * d + i] = v;
        }
    return a;
}

static void handles_rotate_and_move() {
    const std::size_t d = 9;
    std::vector<float> eig;
    auto b = diagprec::basis::from_symmetric(symmetric(d, 1), d, &eig);
    CHECK(eig.size() == d && eig[0] >= eig[d - 1]);
    CHECK(b.info().kind == DP_BASIS_DENSE && b.size() == d);
    std::vector<float> g(d), rot(d), back(d);
    for (std::size_t i = 0; i < d; i++) g[i] = dp_value(static_cast<unsigned>(i), 2, 1.0f);
    b.rotate_into(g, rot);
    b.rotate_out(rot, back);
    double worst = 0.0;
    for (std::size_t i = 0; i < d; i++) worst = std::fmax(worst, std::fabs(back[i] - g[i]));
    CHECK(worst < 1e-5);

    auto u = b.matrix();
    auto b2 = diagprec::basis::dense(u, d);
    std::vector<float> rot2(d);
    b2.rotate_into(g, rot2);
    CHECK(dp_same_bits(rot.data(), rot2.data(), d));

    diagprec::basis moved = std::move(b2);
    CHECK(moved.get() != nullptr && b2.get() == nullptr);
    auto half = diagprec::basis::interpolate(b, moved, 0.5);
    CHECK(half.size() == d);

    bool thrown = false;
    try {
        std::vector<float> not_orthonormal(d * d, 1.0f);
        diagprec::basis::dense(not_orthonormal, d);
    } catch (const diagprec::error& e) {
        thrown = e.status() == DP_ERR_INVALID_ARGUMENT;
    }
    CHECK(thrown);
    thrown = false;
    try {
        std::vector<float> short_out(d - 1);
        b.rotate_into(g, short_out);
    } catch (const diagprec::error& e) {
        thrown = e.status() == DP_ERR_LENGTH;
    }
    CHECK(thrown);
    std::error_code ec;
    b.rotate_into(g.data(), g.data(), d, ec);
    CHECK(ec == DP_ERR_ALIASING);

    // A GN^p step in the basis moves the parameter along -U (h + lambda)^-1 U^T g.
    std::vector<float> p(d, 1.0f), h(d, 2.0f), ws(b.info().step_workspace_len);
    dp_gn_config gn = dp_gn_config_default();
    gn.lr = 0.5;
    diagprec::rotated_gn_step(gn, 1, b, p.data(), g.data(), nullptr, h.data(), d, ws.data(),
                              ws.size());
    worst = 0.0;
    for (std::size_t i = 0; i < d; i++)
        worst = std::fmax(worst, std::fabs(p[i] - (1.0 - 0.5 * g[i] / (2.0 + gn.damping))));
    CHECK(worst < 1e-5);
    diagprec::rotated_gn_step(gn, 0, b, p.data(), g.data(), nullptr, h.data(), d, ws.data(),
                              ws.size(), ec);
    CHECK(ec == DP_ERR_INVALID_HYPERPARAMETER);

    // A handle used after its owner freed it is refused, and freeing it again is a no-op.
    dp_basis* stale = nullptr;
    {
        auto tmp = diagprec::basis::dense(u, d);
        stale = tmp.get();
    }
    diagprec::basis dangling(stale);
    thrown = false;
    try {
        dangling.info();
    } catch (const diagprec::error& e) {
        thrown = e.status() == DP_ERR_INVALID_ARGUMENT;
    }
    CHECK(thrown);
}

static void soap_like_loop() {
    const std::size_t rows = 6, cols = 3, n = 30;
    std::vector<float> a(n * rows), target(n * cols), wstar(rows * cols);
    for (std::size_t i = 0; i < a.size(); i++)
        a[i] = dp_value(static_cast<unsigned>(i), 3, 1.0f) * (1.0f + static_cast<float>(i % rows));
    for (std::size_t i = 0; i < wstar.size(); i++)
        wstar[i] = dp_value(static_cast<unsigned>(i), 4, 1.0f);
    for (std::size_t s = 0; s < n; s++)
        for (std::size_t j = 0; j < cols; j++) {
            float acc = 0.0f;
            for (std::size_t k = 0; k < rows; k++) acc += a[s * rows + k] * wstar[k * cols + j];
            target[s * cols + j] = acc;
        }
    diagprec::kron_factors factors(rows, cols);
    diagprec::rotated_adam opt(diagprec::adam_config().with_lr(3e-2).with_betas(0.95, 0.95),
                               rows * cols);
    std::vector<float> w(rows * cols, 0.0f), g(rows * cols);
    diagprec::basis basis;
    double first = 0.0, loss = 0.0;
    for (std::uint64_t t = 1; t <= 400; t++) {
        loss = 0.0;
        std::fill(g.begin(), g.end(), 0.0f);
        for (std::size_t s = 0; s < n; s++)
            for (std::size_t j = 0; j < cols; j++) {
                float pred = 0.0f;
                for (std::size_t k = 0; k < rows; k++) pred += a[s * rows + k] * w[k * cols + j];
                float res = pred - target[s * cols + j];
                loss += 0.5 * res * res / n;
                for (std::size_t k = 0; k < rows; k++)
                    g[k * cols + j] += a[s * rows + k] * res / static_cast<float>(n);
            }
        if (t == 1) first = loss;
        factors.update(g, 0.95);
        if (!basis)
            basis = diagprec::basis::from_factors(factors.left, rows, factors.right, cols);
        else if (t % 10 == 0)
            opt.refresh(basis, factors.left, factors.right, DP_REFRESH_POWER_QR,
                        DP_TRANSFER_PERMUTE);
        opt.step(basis, w, g);
    }
    CHECK(loss < 1e-3 * first);
    CHECK(opt.steps_taken() == 400);
}

int main() {
    handles_rotate_and_move();
    soap_like_loop();
    return dp_test_finish("basis.cpp");
}
