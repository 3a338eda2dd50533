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

// ---- Gauss-Newton -------------------------------------------------------------------------

/// The softmax estimators of gn_diag_softmax (DP_GN_EXACT, DP_GN_SAMPLED).
enum class gn_estimator : std::uint32_t { exact = DP_GN_EXACT, sampled = DP_GN_SAMPLED };

/// dp_gn_config with dp_gn_config_default()'s values and chainable setters.
struct gn_config : dp_gn_config {
    gn_config() noexcept : dp_gn_config(dp_gn_config_default()) {}
    /// Sophia's clipped step clip(m / max(gamma h, eps), -1, 1) with momentum beta1.
    static gn_config sophia_step(double lr, double gamma = 0.01, double beta1 = 0.96,
                                 double eps = 1e-15) noexcept {
        gn_config c;
        c.lr = lr;
        c.sophia = true;
        c.sophia_gamma = gamma;
        c.sophia_eps = eps;
        c.beta1 = beta1;
        return c;
    }
    gn_config& with_lr(double v) noexcept { lr = v; return *this; }
    gn_config& with_power(double v) noexcept { power = v; return *this; }
    gn_config& with_damping(double v) noexcept { damping = v; return *this; }
    gn_config& with_beta1(double v) noexcept { beta1 = v; return *this; }
    gn_config& with_bias_correction(bool v = true) noexcept { bias_correction = v; return *this; }
    gn_config& with_weight_decay(double v) noexcept { weight_decay = v; return *this; }
    gn_config& with_check_finite(bool v = true) noexcept { check_finite = v; return *this; }
};

/// h <- beta h + (1 - beta) (1/N) sum_n w_n x_n^2 (dp_gn_diag_weighted_f32); weights may be
/// nullptr (all ones).
inline std::error_code gn_diag_weighted(const float* x, std::size_t n_samples, std::size_t dim,
                                        std::size_t row_stride, const float* weights, float beta,
                                        float* h, std::error_code& ec) noexcept {
    ec = detail::to_code(dp_gn_diag_weighted_f32(x, n_samples, dim, row_stride, weights, beta, h));
    return ec;
}

inline void gn_diag_weighted(const float* x, std::size_t n_samples, std::size_t dim,
                             std::size_t row_stride, const float* weights, float beta, float* h) {
    detail::throw_if_failed(
        dp_gn_diag_weighted_f32(x, n_samples, dim, row_stride, weights, beta, h));
}

/// Container form: x holds n_samples contiguous rows of h.size() floats (no weights).
template <class X, class H, class = std::enable_if_t<std::is_same_v<detail::value_t<H>, float>>>
void gn_diag_weighted(const X& x, std::size_t n_samples, float beta, H& h) {
    const std::size_t dim = h.size();
    if (x.size() != n_samples * dim)
        throw error(DP_ERR_LENGTH, "diagprec::gn_diag_weighted: x.size() != n_samples * h.size()");
    gn_diag_weighted(x.data(), n_samples, dim, dim, nullptr, beta, h.data());
}

/// dp_gn_diag_logistic_f32: weights s(1 - s) from logits.
inline void gn_diag_logistic(const float* x, std::size_t n_samples, std::size_t dim,
                             std::size_t row_stride, const float* logits, float beta, float* h) {
    detail::throw_if_failed(
        dp_gn_diag_logistic_f32(x, n_samples, dim, row_stride, logits, beta, h));
}

/// h <- beta h + (1 - beta) S^T (X o X) / N (dp_gn_diag_linear_f32); h_bias may be nullptr.
inline std::error_code gn_diag_linear(const float* x, std::size_t n_samples, std::size_t d_in,
                                      const float* s, std::size_t c_out, float beta, float* h,
                                      float* h_bias, std::error_code& ec) noexcept {
    ec = detail::to_code(dp_gn_diag_linear_f32(x, n_samples, d_in, s, c_out, beta, h, h_bias));
    return ec;
}

inline void gn_diag_linear(const float* x, std::size_t n_samples, std::size_t d_in,
                           const float* s, std::size_t c_out, float beta, float* h,
                           float* h_bias = nullptr) {
    detail::throw_if_failed(dp_gn_diag_linear_f32(x, n_samples, d_in, s, c_out, beta, h, h_bias));
}

/// Softmax layer (dp_gn_diag_softmax_f32); h_bias may be nullptr.
inline std::error_code gn_diag_softmax(const float* x, const float* logits, std::size_t n_samples,
                                       std::size_t d_in, std::size_t classes,
                                       gn_estimator estimator, std::uint64_t seed, float beta,
                                       float* h, float* h_bias, std::error_code& ec) noexcept {
    ec = detail::to_code(dp_gn_diag_softmax_f32(x, logits, n_samples, d_in, classes,
                                                static_cast<std::uint32_t>(estimator), seed, beta,
                                                h, h_bias));
    return ec;
}

inline void gn_diag_softmax(const float* x, const float* logits, std::size_t n_samples,
                            std::size_t d_in, std::size_t classes, gn_estimator estimator,
                            std::uint64_t seed, float beta, float* h, float* h_bias = nullptr) {
    detail::throw_if_failed(dp_gn_diag_softmax_f32(x, logits, n_samples, d_in, classes,
                                                   static_cast<std::uint32_t>(estimator), seed,
                                                   beta, h, h_bias));
}

/// In a dense basis U (dim x k, column-major): dp_gn_diag_weighted_in_basis_f32.
inline void gn_diag_weighted_in_basis(const float* x, std::size_t n_samples, std::size_t dim,
                                      std::size_t row_stride, const float* weights,
                                      const float* u, std::size_t k, float beta, float* h) {
    detail::throw_if_failed(dp_gn_diag_weighted_in_basis_f32(x, n_samples, dim, row_stride,
                                                             weights, u, k, beta, h));
}

/// Softmax layer in the Kronecker basis (Q_C, Q_X), both column-major:
/// dp_gn_diag_softmax_in_kronecker_f32.
inline void gn_diag_softmax_in_kronecker(const float* x, const float* logits,
                                         std::size_t n_samples, std::size_t d_in,
                                         std::size_t classes, gn_estimator estimator,
                                         std::uint64_t seed, const float* q_c, const float* q_x,
                                         float beta, float* h, float* h_bias = nullptr) {
    detail::throw_if_failed(dp_gn_diag_softmax_in_kronecker_f32(
        x, logits, n_samples, d_in, classes, static_cast<std::uint32_t>(estimator), seed, q_c,
        q_x, beta, h, h_bias));
}

/// One GN^p step (dp_gn_step_f32); exp_avg may be nullptr (no momentum).
inline std::error_code gn_step(const dp_gn_config& cfg, std::uint64_t step, float* param,
                               const float* grad, float* exp_avg, const float* h, std::size_t len,
                               std::error_code& ec) noexcept {
    ec = detail::to_code(dp_gn_step_f32(&cfg, step, param, grad, exp_avg, h, len));
    return ec;
}

inline void gn_step(const dp_gn_config& cfg, std::uint64_t step, float* param, const float* grad,
                    float* exp_avg, const float* h, std::size_t len) {
    detail::throw_if_failed(dp_gn_step_f32(&cfg, step, param, grad, exp_avg, h, len));
}

/// Container form without momentum: all containers must have the same size.
template <class P, class G, class H,
          class = std::enable_if_t<std::is_same_v<detail::value_t<P>, float>>>
void gn_step(const dp_gn_config& cfg, std::uint64_t step, P& param, const G& grad, const H& h) {
    const std::size_t n = param.size();
    if (grad.size() != n || h.size() != n)
        throw error(DP_ERR_LENGTH, "diagprec::gn_step: containers differ in size");
    gn_step(cfg, step, param.data(), grad.data(), nullptr, h.data(), n);
}

/// Container form with momentum.
template <class P, class G, class M, class H,
          class = std::enable_if_t<std::is_same_v<detail::value_t<P>, float>>>
void gn_step(const dp_gn_config& cfg, std::uint64_t step, P& param, const G& grad, M& exp_avg,
             const H& h) {
    const std::size_t n = param.size();
    if (grad.size() != n || exp_avg.size() != n || h.size() != n)
        throw error(DP_ERR_LENGTH, "diagprec::gn_step: containers differ in size");
    gn_step(cfg, step, param.data(), grad.data(), exp_avg.data(), h.data(), n);
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
