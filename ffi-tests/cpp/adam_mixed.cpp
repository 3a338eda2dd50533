// The C++17 wrappers of the mixed-precision, compressed-state and clipped steps.
#include "diagprec.hpp"

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "../c/dp_test.h"

static std::uint16_t to_bf16(float f) {
    std::uint32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    return static_cast<std::uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

// The C calls the wrappers must equal: one tensor as a list of one.
static dp_status c_master(const dp_adam_config* c, std::uint64_t t, std::uint32_t format,
                          std::uint32_t rounding, std::uint64_t seed, float* master,
                          std::uint16_t* param, const std::uint16_t* grad, float* m, float* v,
                          std::size_t n) {
    const dp_adam_master_tensor x = {master, param, grad, m, v, n};
    return dp_adam_master_step_multi(c, t, format, rounding, seed, &x, 1);
}

static void wrappers_equal_the_c_calls() {
    const std::size_t n = 777;
    std::vector<float> master(n), m(n, 0.0f), v(n, 0.0f);
    std::vector<std::uint16_t> p16(n), g16(n);
    for (unsigned i = 0; i < n; i++) {
        master[i] = dp_value(i, 1, 1.0f);
        g16[i] = to_bf16(dp_value(i, 2, 0.1f));
    }
    auto master2 = master, m2 = m, v2 = v;
    auto p2 = p16;
    auto cfg = diagprec::adam_config::adamw(1e-2);
    for (std::uint64_t t = 1; t <= 3; t++) {
        diagprec::adam_step_master_bf16(cfg, t, master, p16, g16, m, v,
                                        diagprec::rounding::stochastic_with(5));
        CHECK_STATUS(c_master(&cfg, t, DP_FORMAT_BF16, DP_ROUND_STOCHASTIC, 5, master2.data(), p2.data(),
                                                         g16.data(), m2.data(), v2.data(), n),
                     DP_OK);
    }
    CHECK(dp_same_bits(master.data(), master2.data(), n));
    CHECK(p16 == p2);

    // 8-bit state owned by the wrapper; its arrays are the checkpoint.
    std::vector<float> param(n), grad(n);
    for (unsigned i = 0; i < n; i++) {
        param[i] = dp_value(i, 3, 1.0f);
        grad[i] = dp_value(i, 4, 0.1f);
    }
    diagprec::adam_8bit_state state(n);
    CHECK(state.exp_avg_scales.size() == 4);
    state.step(cfg, 1, param, grad);
    auto saved = state;  // checkpoint
    auto param_saved = param;
    state.step(cfg, 2, param, grad);
    diagprec::adam_8bit_state restored = saved;
    restored.step(cfg, 2, param_saved, grad);
    CHECK(dp_same_bits(param.data(), param_saved.data(), n));
    CHECK(restored.exp_avg_codes == state.exp_avg_codes);
    // Through f32 and back: the decoded moments re-encode to the same state.
    auto m8 = state.exp_avg_f32(), v8 = state.exp_avg_sq_f32();
    std::vector<float> m8c(n), v8c(n);
    CHECK_STATUS(dp_adam_8bit_dequantize_f32(DP_MOMENT_EXP_AVG, state.exp_avg_codes.data(), n,
                                             state.exp_avg_scales.data(),
                                             state.exp_avg_scales.size(), m8c.data(), n),
                 DP_OK);
    CHECK_STATUS(dp_adam_8bit_dequantize_f32(DP_MOMENT_EXP_AVG_SQ, state.exp_avg_sq_codes.data(),
                                             n, state.exp_avg_sq_scales.data(),
                                             state.exp_avg_sq_scales.size(), v8c.data(), n),
                 DP_OK);
    CHECK(dp_same_bits(m8.data(), m8c.data(), n) && dp_same_bits(v8.data(), v8c.data(), n));
    auto again = diagprec::adam_8bit_state::from_f32(m8, v8);
    CHECK(again.exp_avg_scales == state.exp_avg_scales);
    CHECK(again.exp_avg_sq_scales == state.exp_avg_sq_scales);
    auto m8again = again.exp_avg_f32();
    CHECK(dp_same_bits(m8again.data(), m8.data(), n));

    // Tensor lists: the 8-bit states of two tensors in one call equal one call each; the
    // master step over a list equals the C call.
    diagprec::adam_8bit_state s1(n), s2(300), c1(n), c2(300);
    std::vector<float> q1 = param, q2(param.begin(), param.begin() + 300), r1 = q1, r2 = q2;
    std::vector<float> g2(grad.begin(), grad.begin() + 300);
    std::vector<dp_adam_8bit_tensor> list8 = {s1.tensor(q1.data(), grad.data()),
                                              s2.tensor(q2.data(), g2.data())};
    diagprec::adam_step_8bit_state_multi(cfg, 1, list8);
    c1.step(cfg, 1, r1, grad);
    c2.step(cfg, 1, r2, g2);
    CHECK(q1 == r1 && q2 == r2 && s1.exp_avg_sq_codes == c1.exp_avg_sq_codes &&
          s2.exp_avg_scales == c2.exp_avg_scales);
    auto master3 = master, m3 = m, v3 = v;
    auto p3 = p16;
    std::vector<dp_adam_master_tensor> listm = {
        {master.data(), p16.data(), g16.data(), m.data(), v.data(), 400},
        {master.data() + 400, p16.data() + 400, g16.data() + 400, m.data() + 400, v.data() + 400,
         n - 400}};
    diagprec::adam_step_master_bf16_multi(cfg, 4, listm, diagprec::rounding::stochastic_with(3));
    CHECK_STATUS(c_master(&cfg, 4, DP_FORMAT_BF16, DP_ROUND_STOCHASTIC, 3, master3.data(), p3.data(),
                                                     g16.data(), m3.data(), v3.data(), n),
                 DP_OK);
    CHECK(dp_same_bits(master.data(), master3.data(), n) && p16 == p3);
    // The two-pass form: with no clipping, the list step itself.
    double norm16 = diagprec::adam_step_master_clipped(cfg, 5, listm, INFINITY);
    diagprec::adam_step_master_bf16(cfg, 5, master3.data(), p3.data(), g16.data(), m3.data(),
                                    v3.data(), n, diagprec::rounding{});
    CHECK(norm16 > 0 && dp_same_bits(master.data(), master3.data(), n) && p16 == p3);

    std::vector<float> qa = param, qb = param;
    std::vector<std::uint16_t> ma(n), va(n), mb(n), vb(n);
    std::vector<dp_adam_bf16_state_tensor> listb = {
        {qa.data(), grad.data(), ma.data(), va.data(), 500},
        {qa.data() + 500, grad.data() + 500, ma.data() + 500, va.data() + 500, n - 500}};
    diagprec::adam_step_bf16_state_multi(cfg, 2, 8, listb);
    diagprec::adam_step_bf16_state(cfg, 2, 8, qb.data(), grad.data(), mb.data(), vb.data(), n);
    CHECK(qa == qb && ma == mb && va == vb);

    // Norm and the clipped step.
    std::vector<dp_adam_tensor_f32> list = {{param.data(), grad.data(), m.data(), v.data(), nullptr, n}};
    auto r = diagprec::grad_norm(list, 1.0);
    double exact = 0;
    for (float g : grad) exact += static_cast<double>(g) * g;
    CHECK(std::fabs(r.norm - std::sqrt(exact)) <= 1e-6 * std::sqrt(exact) && !r.found_inf);
    std::fill(m.begin(), m.end(), 0.0f);
    std::fill(v.begin(), v.end(), 0.0f);
    double norm = diagprec::adam_step_clipped(cfg, 1, list, 0.1);
    CHECK(norm == r.norm);

    // The 16-bit norm: the wrapper equals the C call (found_inf_out is a uint32_t 0/1).
    auto r16 = diagprec::grad_norm(diagprec::half_format::bf16, listm, 0.5);
    double norm16c = -1;
    std::uint32_t found16c = 7;
    CHECK_STATUS(dp_grad_norm_master_multi(DP_FORMAT_BF16, listm.data(), listm.size(), 0.5,
                                           &norm16c, &found16c),
                 DP_OK);
    CHECK(r16.norm == norm16c && found16c == 0 && !r16.found_inf && r16.norm > 0);
}

static void errors_become_exceptions_or_codes() {
    std::vector<float> param(10, 1.0f), grad(10, 0.5f), m(10), v(10);
    grad[3] = NAN;
    std::vector<dp_adam_tensor_f32> list = {{param.data(), grad.data(), m.data(), v.data(), nullptr, 10}};
    bool thrown = false;
    try {
        diagprec::adam_step_clipped(diagprec::adam_config(), 1, list, 1.0);
    } catch (const diagprec::error& e) {
        thrown = e.status() == DP_ERR_NON_FINITE;
    }
    CHECK(thrown);
    CHECK(param == std::vector<float>(10, 1.0f));
    std::error_code ec;
    diagprec::adam_step_clipped(diagprec::adam_config(), 1, list.data(), 1, 0.0, ec);
    CHECK(ec == DP_ERR_INVALID_HYPERPARAMETER);
    std::vector<std::uint16_t> p16(10), g16(9);
    std::vector<float> master(10);
    thrown = false;
    try {
        diagprec::adam_step_master_bf16(diagprec::adam_config(), 1, master, p16, g16, m, v);
    } catch (const diagprec::error& e) {
        thrown = e.status() == DP_ERR_LENGTH;
    }
    CHECK(thrown);
    diagprec::adam_step_master_f16(diagprec::adam_config().with_amsgrad(), 1, master.data(),
                                   p16.data(), g16.data(), m.data(), v.data(), 9,
                                   diagprec::rounding::nearest_even(), ec);
    CHECK(ec == DP_ERR_INVALID_ARGUMENT);
    diagprec::adam_step_bf16_state(diagprec::adam_config(), 0, 1, param.data(), grad.data(),
                                   p16.data(), g16.data(), 9, ec);
    CHECK(ec == DP_ERR_INVALID_HYPERPARAMETER);
    diagprec::adam_8bit_state state(10);
    thrown = false;
    try {
        std::vector<float> short_grad(9);
        state.step(diagprec::adam_config(), 1, master, short_grad);
    } catch (const diagprec::error& e) {
        thrown = e.status() == DP_ERR_LENGTH;
    }
    CHECK(thrown);
    // A corrupted checkpoint: the step throws and writes nothing.
    state.exp_avg_sq_scales[0] = NAN;
    std::vector<float> p10(10, 1.0f), g10(10, 0.5f);
    thrown = false;
    try {
        state.step(diagprec::adam_config(), 1, p10, g10);
    } catch (const diagprec::error& e) {
        thrown = e.status() == DP_ERR_INVALID_ARGUMENT;
    }
    CHECK(thrown);
    CHECK(p10 == std::vector<float>(10, 1.0f));
    thrown = false;
    try {
        (void)state.exp_avg_sq_f32();
    } catch (const diagprec::error& e) {
        thrown = e.status() == DP_ERR_INVALID_ARGUMENT;
    }
    CHECK(thrown);
    thrown = false;
    try {
        std::vector<float> negative(10, -1.0f);
        (void)diagprec::adam_8bit_state::from_f32(negative, negative);
    } catch (const diagprec::error& e) {
        thrown = e.status() == DP_ERR_INVALID_ARGUMENT;
    }
    CHECK(thrown);
    // Issue 13, defect 1 through the wrapper: a scale array one block short (as a caller
    // allocating floor(len / 256) would) is DP_ERR_LENGTH, nothing written, not a read past
    // its end.
    diagprec::adam_8bit_state short_state(300);
    short_state.exp_avg_scales.resize(1);
    short_state.exp_avg_sq_scales.resize(1);
    std::vector<float> p300(300, 1.0f), g300(300, 0.5f);
    thrown = false;
    try {
        short_state.step(diagprec::adam_config(), 1, p300, g300);
    } catch (const diagprec::error& e) {
        thrown = e.status() == DP_ERR_LENGTH &&
                 std::string(e.what()).find("scales_len") != std::string::npos;
    }
    CHECK(thrown);
    CHECK(p300 == std::vector<float>(300, 1.0f));
    // A config flag other than 0 or 1 (defect 4) throws DP_ERR_INVALID_ARGUMENT.
    diagprec::adam_config two;
    two.maximize = 2;
    std::vector<std::uint16_t> p16b(10), g16b(10);
    diagprec::adam_step_master_bf16(two, 1, master.data(), p16b.data(), g16b.data(), m.data(),
                                    v.data(), 10, diagprec::rounding{}, ec);
    CHECK(ec == DP_ERR_INVALID_ARGUMENT);
}

int main() {
    wrappers_equal_the_c_calls();
    errors_become_exceptions_or_codes();
    return dp_test_finish("adam_mixed.cpp");
}
