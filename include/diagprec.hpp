// diagprec C++17 wrapper over diagprec.h (hand-written; the C header is generated).
//
// * Errors: every call has a throwing form (diagprec::error, a std::system_error carrying the
//   dp_status and dp_last_error_message()) and a noexcept form taking a std::error_code&.
// * Buffers: pointer + size overloads, and overloads for any contiguous container with data()
//   and size() (std::vector, std::array, std::span in C++20); sizes are checked to agree.
#ifndef DIAGPREC_HPP
#define DIAGPREC_HPP

#include "diagprec.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <system_error>
#include <type_traits>
#include <vector>

namespace diagprec {

/// The std::error_category of dp_status values; message() gives the status name.
inline const std::error_category& category() noexcept {
    struct category_impl final : std::error_category {
        const char* name() const noexcept override { return "diagprec"; }
        std::string message(int status) const override { return dp_status_str(status); }
    };
    static const category_impl instance;
    return instance;
}

inline std::error_code make_error_code(dp_status status) noexcept {
    return {static_cast<int>(status), category()};
}

/// Thrown by the throwing overloads: code() is the dp_status, what() the library's reason.
class error : public std::system_error {
public:
    error(dp_status status, const std::string& reason)
        : std::system_error(make_error_code(status), reason) {}
    dp_status status() const noexcept { return static_cast<dp_status>(code().value()); }
};

namespace detail {
inline void throw_if_failed(dp_status status) {
    if (status != DP_OK) throw error(status, dp_last_error_message());
}
inline std::error_code to_code(dp_status status) noexcept {
    return status == DP_OK ? std::error_code() : make_error_code(status);
}
template <class C>
using value_t = std::remove_cv_t<std::remove_pointer_t<decltype(std::declval<C&>().data())>>;
}  // namespace detail

inline std::string version() { return dp_version(); }
inline std::string isa_name() { return dp_isa_name(); }
inline void set_num_threads(std::size_t n) { detail::throw_if_failed(dp_set_num_threads(n)); }
inline std::size_t num_threads() noexcept { return dp_get_num_threads(); }

/// dp_adam_config with PyTorch's defaults and chainable setters.
struct adam_config : dp_adam_config {
    adam_config() noexcept : dp_adam_config(dp_adam_config_default()) {}
    static adam_config adamw(double lr, double weight_decay = 1e-2) noexcept {
        adam_config c;
        c.lr = lr;
        c.weight_decay = weight_decay;
        c.decoupled_weight_decay = true;
        return c;
    }
    adam_config& with_lr(double v) noexcept { lr = v; return *this; }
    adam_config& with_betas(double b1, double b2) noexcept { beta1 = b1; beta2 = b2; return *this; }
    adam_config& with_eps(double v) noexcept { eps = v; return *this; }
    adam_config& with_weight_decay(double v) noexcept { weight_decay = v; return *this; }
    adam_config& with_amsgrad(bool v = true) noexcept { amsgrad = v; return *this; }
    adam_config& with_maximize(bool v = true) noexcept { maximize = v; return *this; }
    adam_config& with_check_finite(bool v = true) noexcept { check_finite = v; return *this; }
    adam_config& with_inv_grad_scale(double v) noexcept { inv_grad_scale = v; return *this; }
};

/// One Adam/AdamW step (dp_adam_step_f32). max_exp_avg_sq may be nullptr unless amsgrad.
inline std::error_code adam_step(const dp_adam_config& cfg, std::uint64_t step, float* param,
                                 const float* grad, float* exp_avg, float* exp_avg_sq,
                                 float* max_exp_avg_sq, std::size_t len,
                                 std::error_code& ec) noexcept {
    ec = detail::to_code(
        dp_adam_step_f32(&cfg, step, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, len));
    return ec;
}

inline void adam_step(const dp_adam_config& cfg, std::uint64_t step, float* param,
                      const float* grad, float* exp_avg, float* exp_avg_sq,
                      float* max_exp_avg_sq, std::size_t len) {
    detail::throw_if_failed(
        dp_adam_step_f32(&cfg, step, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, len));
}

/// Container form: all containers must have the same size (DP_ERR_LENGTH otherwise).
template <class P, class G, class M, class V,
          class = std::enable_if_t<std::is_same_v<detail::value_t<P>, float>>>
void adam_step(const dp_adam_config& cfg, std::uint64_t step, P& param, const G& grad,
               M& exp_avg, V& exp_avg_sq) {
    const std::size_t n = param.size();
    if (grad.size() != n || exp_avg.size() != n || exp_avg_sq.size() != n)
        throw error(DP_ERR_LENGTH, "diagprec::adam_step: containers differ in size");
    adam_step(cfg, step, param.data(), grad.data(), exp_avg.data(), exp_avg_sq.data(), nullptr,
              n);
}

/// Container form with amsgrad's running maximum.
template <class P, class G, class M, class V, class X,
          class = std::enable_if_t<std::is_same_v<detail::value_t<P>, float>>>
void adam_step(const dp_adam_config& cfg, std::uint64_t step, P& param, const G& grad,
               M& exp_avg, V& exp_avg_sq, X& max_exp_avg_sq) {
    const std::size_t n = param.size();
    if (grad.size() != n || exp_avg.size() != n || exp_avg_sq.size() != n ||
        max_exp_avg_sq.size() != n)
        throw error(DP_ERR_LENGTH, "diagprec::adam_step: containers differ in size");
    adam_step(cfg, step, param.data(), grad.data(), exp_avg.data(), exp_avg_sq.data(),
              max_exp_avg_sq.data(), n);
}

/// Many tensors in one call (dp_adam_step_multi_f32).
inline std::error_code adam_step_multi(const dp_adam_config& cfg, std::uint64_t step,
                                       const dp_adam_tensor_f32* tensors, std::size_t count,
                                       std::error_code& ec) noexcept {
    ec = detail::to_code(dp_adam_step_multi_f32(&cfg, step, tensors, count));
    return ec;
}

inline void adam_step_multi(const dp_adam_config& cfg, std::uint64_t step,
                            const dp_adam_tensor_f32* tensors, std::size_t count) {
    detail::throw_if_failed(dp_adam_step_multi_f32(&cfg, step, tensors, count));
}

/// Container of dp_adam_tensor_f32 (e.g. std::vector<dp_adam_tensor_f32>).
template <class T, class = std::enable_if_t<std::is_same_v<detail::value_t<T>, dp_adam_tensor_f32>>>
void adam_step_multi(const dp_adam_config& cfg, std::uint64_t step, const T& tensors) {
    adam_step_multi(cfg, step, tensors.data(), tensors.size());
}

// ---- Mixed precision, compressed state, global norm, two-pass clipped step ----------------

/// How the 16-bit parameter copy is rounded: nearest-even, or stochastic with a seed.
struct rounding {
    bool stochastic = false;
    std::uint64_t seed = 0;
    static rounding nearest_even() noexcept { return {}; }
    static rounding stochastic_with(std::uint64_t seed) noexcept { return {true, seed}; }
};

/// bf16 parameters and gradients (uint16_t bits) with f32 master weights, one pass
/// (dp_adam_step_master_bf16 / _stochastic).
inline std::error_code adam_step_master_bf16(const dp_adam_config& cfg, std::uint64_t step,
                                             float* master, std::uint16_t* param,
                                             const std::uint16_t* grad, float* exp_avg,
                                             float* exp_avg_sq, std::size_t len, rounding r,
                                             std::error_code& ec) noexcept {
    ec = detail::to_code(
        r.stochastic ? dp_adam_step_master_bf16_stochastic(&cfg, step, r.seed, master, param, grad,
                                                           exp_avg, exp_avg_sq, len)
                     : dp_adam_step_master_bf16(&cfg, step, master, param, grad, exp_avg,
                                                exp_avg_sq, len));
    return ec;
}

inline void adam_step_master_bf16(const dp_adam_config& cfg, std::uint64_t step, float* master,
                                  std::uint16_t* param, const std::uint16_t* grad, float* exp_avg,
                                  float* exp_avg_sq, std::size_t len, rounding r = {}) {
    std::error_code ec;
    adam_step_master_bf16(cfg, step, master, param, grad, exp_avg, exp_avg_sq, len, r, ec);
    if (ec) throw error(static_cast<dp_status>(ec.value()), dp_last_error_message());
}

/// IEEE f16 parameters and gradients (dp_adam_step_master_f16 / _stochastic).
inline std::error_code adam_step_master_f16(const dp_adam_config& cfg, std::uint64_t step,
                                            float* master, std::uint16_t* param,
                                            const std::uint16_t* grad, float* exp_avg,
                                            float* exp_avg_sq, std::size_t len, rounding r,
                                            std::error_code& ec) noexcept {
    ec = detail::to_code(
        r.stochastic ? dp_adam_step_master_f16_stochastic(&cfg, step, r.seed, master, param, grad,
                                                          exp_avg, exp_avg_sq, len)
                     : dp_adam_step_master_f16(&cfg, step, master, param, grad, exp_avg,
                                               exp_avg_sq, len));
    return ec;
}

inline void adam_step_master_f16(const dp_adam_config& cfg, std::uint64_t step, float* master,
                                 std::uint16_t* param, const std::uint16_t* grad, float* exp_avg,
                                 float* exp_avg_sq, std::size_t len, rounding r = {}) {
    std::error_code ec;
    adam_step_master_f16(cfg, step, master, param, grad, exp_avg, exp_avg_sq, len, r, ec);
    if (ec) throw error(static_cast<dp_status>(ec.value()), dp_last_error_message());
}

/// Container form of the bf16 master step: every container the same size.
template <class A, class P, class G, class M, class V,
          class = std::enable_if_t<std::is_same_v<detail::value_t<P>, std::uint16_t>>>
void adam_step_master_bf16(const dp_adam_config& cfg, std::uint64_t step, A& master, P& param,
                           const G& grad, M& exp_avg, V& exp_avg_sq, rounding r = {}) {
    const std::size_t n = master.size();
    if (param.size() != n || grad.size() != n || exp_avg.size() != n || exp_avg_sq.size() != n)
        throw error(DP_ERR_LENGTH, "diagprec::adam_step_master_bf16: containers differ in size");
    adam_step_master_bf16(cfg, step, master.data(), param.data(), grad.data(), exp_avg.data(),
                          exp_avg_sq.data(), n, r);
}

/// The global L2 norm of the unscaled gradients and whether any is NaN/Inf.
struct grad_norm_result {
    double norm = 0.0;
    bool found_inf = false;
};

inline grad_norm_result grad_norm(const dp_adam_tensor_f32* tensors, std::size_t count,
                                  double inv_grad_scale, std::error_code& ec) noexcept {
    grad_norm_result r;
    ec = detail::to_code(
        dp_grad_norm_multi_f32(tensors, count, inv_grad_scale, &r.norm, &r.found_inf));
    return r;
}

template <class T, class = std::enable_if_t<std::is_same_v<detail::value_t<T>, dp_adam_tensor_f32>>>
grad_norm_result grad_norm(const T& tensors, double inv_grad_scale = 1.0) {
    std::error_code ec;
    auto r = grad_norm(tensors.data(), tensors.size(), inv_grad_scale, ec);
    if (ec) throw error(static_cast<dp_status>(ec.value()), dp_last_error_message());
    return r;
}

/// The two-pass step (dp_adam_step_clipped_multi_f32); returns the norm before clipping.
/// A non-finite gradient is DP_ERR_NON_FINITE with nothing written.
inline double adam_step_clipped(const dp_adam_config& cfg, std::uint64_t step,
                                const dp_adam_tensor_f32* tensors, std::size_t count,
                                double max_grad_norm, std::error_code& ec) noexcept {
    double norm = 0.0;
    ec = detail::to_code(
        dp_adam_step_clipped_multi_f32(&cfg, step, tensors, count, max_grad_norm, &norm));
    return norm;
}

template <class T, class = std::enable_if_t<std::is_same_v<detail::value_t<T>, dp_adam_tensor_f32>>>
double adam_step_clipped(const dp_adam_config& cfg, std::uint64_t step, const T& tensors,
                         double max_grad_norm) {
    std::error_code ec;
    double norm = adam_step_clipped(cfg, step, tensors.data(), tensors.size(), max_grad_norm, ec);
    if (ec) throw error(static_cast<dp_status>(ec.value()), dp_last_error_message());
    return norm;
}

/// Owned 8-bit Adam state for `len` parameters (layout: DP_ADAM_8BIT_BLOCK in diagprec.h).
/// The four public arrays are the checkpoint: save and restore them as they are.
struct adam_8bit_state {
    std::vector<std::uint8_t> exp_avg_codes, exp_avg_sq_codes;
    std::vector<float> exp_avg_scales, exp_avg_sq_scales;
    explicit adam_8bit_state(std::size_t len)
        : exp_avg_codes(len), exp_avg_sq_codes(len),
          exp_avg_scales(dp_adam_8bit_scales_len(len)),
          exp_avg_sq_scales(dp_adam_8bit_scales_len(len)) {}
    std::size_t size() const noexcept { return exp_avg_codes.size(); }

    /// One step on param / grad (containers of `size()` floats).
    template <class P, class G>
    void step(const dp_adam_config& cfg, std::uint64_t t, P& param, const G& grad) {
        if (param.size() != size() || grad.size() != size())
            throw error(DP_ERR_LENGTH, "diagprec::adam_8bit_state: size mismatch");
        detail::throw_if_failed(dp_adam_step_8bit_state(
            &cfg, t, param.data(), grad.data(), exp_avg_codes.data(), exp_avg_scales.data(),
            exp_avg_sq_codes.data(), exp_avg_sq_scales.data(), size()));
    }
};

/// bf16 optimizer state with stochastic rounding (dp_adam_step_bf16_state).
inline std::error_code adam_step_bf16_state(const dp_adam_config& cfg, std::uint64_t step,
                                            std::uint64_t seed, float* param, const float* grad,
                                            std::uint16_t* exp_avg, std::uint16_t* exp_avg_sq,
                                            std::size_t len, std::error_code& ec) noexcept {
    ec = detail::to_code(
        dp_adam_step_bf16_state(&cfg, step, seed, param, grad, exp_avg, exp_avg_sq, len));
    return ec;
}

inline void adam_step_bf16_state(const dp_adam_config& cfg, std::uint64_t step,
                                 std::uint64_t seed, float* param, const float* grad,
                                 std::uint16_t* exp_avg, std::uint16_t* exp_avg_sq,
                                 std::size_t len) {
    detail::throw_if_failed(
        dp_adam_step_bf16_state(&cfg, step, seed, param, grad, exp_avg, exp_avg_sq, len));
}

}  // namespace diagprec

// dp_status converts to std::error_code (found by argument-dependent lookup).
inline std::error_code make_error_code(dp_status status) noexcept {
    return diagprec::make_error_code(status);
}
namespace std {
template <>
struct is_error_code_enum<dp_status> : true_type {};
}  // namespace std

#endif  // DIAGPREC_HPP
