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
#include <utility>
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
        c.decoupled_weight_decay = 1;
        return c;
    }
    adam_config& with_lr(double v) noexcept { lr = v; return *this; }
    adam_config& with_betas(double b1, double b2) noexcept { beta1 = b1; beta2 = b2; return *this; }
    adam_config& with_eps(double v) noexcept { eps = v; return *this; }
    adam_config& with_weight_decay(double v) noexcept { weight_decay = v; return *this; }
    adam_config& with_decoupled_weight_decay(bool v = true) noexcept {
        decoupled_weight_decay = v ? 1u : 0u;
        return *this;
    }
    adam_config& with_amsgrad(bool v = true) noexcept { amsgrad = v ? 1u : 0u; return *this; }
    adam_config& with_maximize(bool v = true) noexcept { maximize = v ? 1u : 0u; return *this; }
    adam_config& with_check_finite(bool v = true) noexcept {
        check_finite = v ? 1u : 0u;
        return *this;
    }
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

/// An owned dp_basis handle (move-only; freed by the destructor). Matrices are row-major.
class basis {
public:
    basis() noexcept = default;
    explicit basis(dp_basis* handle) noexcept : handle_(handle) {}
    basis(basis&& other) noexcept : handle_(other.handle_) { other.handle_ = nullptr; }
    basis& operator=(basis&& other) noexcept {
        if (this != &other) {
            dp_basis_free(handle_);
            handle_ = other.handle_;
            other.handle_ = nullptr;
        }
        return *this;
    }
    basis(const basis&) = delete;
    basis& operator=(const basis&) = delete;
    ~basis() { dp_basis_free(handle_); }

    dp_basis* get() const noexcept { return handle_; }
    explicit operator bool() const noexcept { return handle_ != nullptr; }

    static basis identity(std::size_t len) {
        dp_basis* out = nullptr;
        detail::throw_if_failed(dp_basis_create_identity(len, &out));
        return basis(out);
    }
    /// From an orthonormal dim x dim matrix (u.size() must be dim * dim).
    template <class U>
    static basis dense(const U& u, std::size_t dim) {
        dp_basis* out = nullptr;
        detail::throw_if_failed(dp_basis_create_dense_f32(u.data(), u.size(), dim, &out));
        return basis(out);
    }
    template <class L, class R>
    static basis kronecker(const L& q_left, std::size_t rows, const R& q_right, std::size_t cols) {
        dp_basis* out = nullptr;
        detail::throw_if_failed(dp_basis_create_kronecker_f32(
            q_left.data(), q_left.size(), rows, q_right.data(), q_right.size(), cols, &out));
        return basis(out);
    }
    /// The eigenbasis of a symmetric matrix (a.size() == dim * dim); the eigenvalues
    /// (descending), computed here as the Rayleigh quotients u_j^T A u_j in double, go to
    /// *eigenvalues when it is not nullptr.
    template <class A>
    static basis from_symmetric(const A& a, std::size_t dim,
                                std::vector<float>* eigenvalues = nullptr) {
        dp_basis* out = nullptr;
        detail::throw_if_failed(dp_basis_create_from_symmetric_f32(a.data(), a.size(), dim, &out));
        basis b(out);
        if (eigenvalues) {
            std::vector<float> u = b.matrix();
            std::vector<float> s(dim);
            for (std::size_t j = 0; j < dim; j++) {
                double q = 0.0;
                for (std::size_t i = 0; i < dim; i++) {
                    double au = 0.0;
                    for (std::size_t k = 0; k < dim; k++)
                        au += static_cast<double>(a.data()[i * dim + k]) * u[k * dim + j];
                    q += static_cast<double>(u[i * dim + j]) * au;
                }
                s[j] = static_cast<float>(q);
            }
            *eigenvalues = std::move(s);
        }
        return b;
    }
    template <class L, class R>
    static basis from_factors(const L& left, std::size_t rows, const R& right, std::size_t cols) {
        dp_basis* out = nullptr;
        detail::throw_if_failed(dp_basis_create_from_factors_f32(
            left.data(), left.size(), rows, right.data(), right.size(), cols, &out));
        return basis(out);
    }
    /// The basis at t on the geodesic from u0 to u1 (|t| <= DP_BASIS_MAX_INTERPOLATION_T).
    static basis interpolate(const basis& u0, const basis& u1, double t) {
        dp_basis* out = nullptr;
        detail::throw_if_failed(dp_basis_interpolate_f32(u0.get(), u1.get(), t, &out));
        return basis(out);
    }

    dp_basis_info info() const {
        dp_basis_info i{};
        i.struct_size = sizeof(dp_basis_info);
        detail::throw_if_failed(dp_basis_get_info(handle_, &i));
        return i;
    }
    std::size_t size() const { return info().len; }
    /// U (DP_FACTOR_LEFT, dense), Q_L (DP_FACTOR_LEFT) or Q_R (DP_FACTOR_RIGHT), row-major.
    std::vector<float> matrix(std::uint32_t which = DP_FACTOR_LEFT) const {
        dp_basis_info i = info();
        std::size_t d = which == DP_FACTOR_RIGHT ? i.cols : i.rows;
        std::vector<float> m(d * d);
        detail::throw_if_failed(dp_basis_get_matrix_f32(handle_, which, m.data(), m.size()));
        return m;
    }

    /// out = U^T g (len floats each); work holds info().rotate_workspace_len floats (nullptr
    /// when 0).
    std::error_code rotate_into(const float* g, float* out, std::size_t len, std::error_code& ec,
                                float* work = nullptr, std::size_t work_len = 0) const noexcept {
        ec = detail::to_code(
            dp_basis_rotate_f32(handle_, DP_ROTATE_INTO, g, len, out, len, work, work_len));
        return ec;
    }
    std::error_code rotate_out(const float* g_rot, float* out, std::size_t len,
                               std::error_code& ec, float* work = nullptr,
                               std::size_t work_len = 0) const noexcept {
        ec = detail::to_code(
            dp_basis_rotate_f32(handle_, DP_ROTATE_OUT, g_rot, len, out, len, work, work_len));
        return ec;
    }
    /// Container forms (they allocate the Kronecker workspace per call; use the pointer forms
    /// with your own workspace in a loop).
    template <class G, class O>
    void rotate_into(const G& g, O& out) const {
        rotate(g, out, true);
    }
    template <class G, class O>
    void rotate_out(const G& g_rot, O& out) const {
        rotate(g_rot, out, false);
    }

private:
    template <class G, class O>
    void rotate(const G& g, O& out, bool into) const {
        std::vector<float> work(info().rotate_workspace_len);
        float* w = work.empty() ? nullptr : work.data();
        detail::throw_if_failed(dp_basis_rotate_f32(handle_, into ? DP_ROTATE_INTO : DP_ROTATE_OUT,
                                                    g.data(), g.size(), out.data(), out.size(), w,
                                                    work.size()));
    }
    dp_basis* handle_ = nullptr;
};

/// One GN^p step in basis b (dp_gn_rotated_step_f32): h = diag(U^T H U) and exp_avg (may be
/// nullptr) in rotated coordinates; workspace holds b.info().step_workspace_len floats.
inline std::error_code rotated_gn_step(const dp_gn_config& cfg, std::uint64_t step, const basis& b,
                                       float* param, const float* grad, float* exp_avg,
                                       const float* h, std::size_t len, float* workspace,
                                       std::size_t workspace_len, std::error_code& ec) noexcept {
    ec = detail::to_code(dp_gn_rotated_step_f32(&cfg, step, b.get(), param, grad, exp_avg, h, len,
                                                workspace, workspace_len));
    return ec;
}

inline void rotated_gn_step(const dp_gn_config& cfg, std::uint64_t step, const basis& b,
                            float* param, const float* grad, float* exp_avg, const float* h,
                            std::size_t len, float* workspace, std::size_t workspace_len) {
    detail::throw_if_failed(dp_gn_rotated_step_f32(&cfg, step, b.get(), param, grad, exp_avg, h,
                                                   len, workspace, workspace_len));
}

/// Kronecker factor statistics L (rows x rows), R (cols x cols), row-major.
struct kron_factors {
    std::size_t rows, cols;
    std::vector<float> left, right;
    kron_factors(std::size_t r, std::size_t c) : rows(r), cols(c), left(r * r), right(c * c) {}
    template <class G>
    void update(const G& grad, double beta) {
        detail::throw_if_failed(dp_basis_kron_factors_update_f32(left.data(), left.size(), rows,
                                                                 right.data(), right.size(), cols,
                                                                 grad.data(), grad.size(), beta));
    }
};

/// Adam in a basis, owning its rotated moments and workspace (the basis is passed per call, so
/// one optimizer follows a basis that is refreshed).
class rotated_adam {
public:
    rotated_adam(const dp_adam_config& cfg, std::size_t len)
        : cfg_(cfg), m_(len), v_(len), vmax_(cfg.amsgrad ? len : 0), work_(2 * len) {}
    template <class P, class G>
    void step(const basis& b, P& param, const G& grad) {
        const std::size_t n = m_.size();
        if (param.size() != n || grad.size() != n)
            throw error(DP_ERR_LENGTH, "diagprec::rotated_adam::step: sizes differ");
        detail::throw_if_failed(dp_adam_rotated_step_f32(
            &cfg_, steps_ + 1, b.get(), param.data(), grad.data(), m_.data(), v_.data(),
            vmax_.empty() ? nullptr : vmax_.data(), n, work_.data(), work_.size()));
        steps_++;
    }
    /// Refreshes b from its statistics (Kronecker: both factors) and carries this optimizer's
    /// state; method is a DP_REFRESH_* value, transfer a DP_TRANSFER_* value.
    template <class L, class R>
    void refresh(basis& b, const L& stat_left, const R& stat_right, std::uint32_t method,
                 std::uint32_t transfer) {
        detail::throw_if_failed(dp_basis_refresh_f32(
            b.get(), stat_left.data(), stat_left.size(), stat_right.data(), stat_right.size(),
            method, transfer, m_.data(), v_.data(), vmax_.empty() ? nullptr : vmax_.data(),
            m_.size()));
    }
    /// Refreshes a dense basis b from its d x d statistic.
    template <class A>
    void refresh(basis& b, const A& stat, std::uint32_t method, std::uint32_t transfer) {
        detail::throw_if_failed(dp_basis_refresh_f32(
            b.get(), stat.data(), stat.size(), nullptr, 0, method, transfer, m_.data(), v_.data(),
            vmax_.empty() ? nullptr : vmax_.data(), m_.size()));
    }
    std::uint64_t steps_taken() const noexcept { return steps_; }
    const std::vector<float>& exp_avg() const noexcept { return m_; }
    const std::vector<float>& exp_avg_sq() const noexcept { return v_; }

private:
    dp_adam_config cfg_;
    std::vector<float> m_, v_, vmax_, work_;
    std::uint64_t steps_ = 0;
};
// ---- Gauss-Newton -------------------------------------------------------------------------

/// The softmax outputs of gn_diag_softmax (DP_GN_SOFTMAX_EXACT, DP_GN_SOFTMAX_SAMPLED).
enum class gn_estimator : std::uint32_t {
    exact = DP_GN_SOFTMAX_EXACT,
    sampled = DP_GN_SOFTMAX_SAMPLED
};

/// dp_gn_config with dp_gn_config_default()'s values and chainable setters.
struct gn_config : dp_gn_config {
    gn_config() noexcept : dp_gn_config(dp_gn_config_default()) {}
    /// Sophia's clipped step clip(m / max(gamma h, eps), -1, 1) with momentum beta1.
    static gn_config sophia_step(double lr, double gamma = 0.01, double beta1 = 0.96,
                                 double eps = 1e-15) noexcept {
        gn_config c;
        c.lr = lr;
        c.sophia = 1;
        c.sophia_gamma = gamma;
        c.sophia_eps = eps;
        c.beta1 = beta1;
        return c;
    }
    gn_config& with_lr(double v) noexcept { lr = v; return *this; }
    gn_config& with_power(double v) noexcept { power = v; return *this; }
    gn_config& with_damping(double v) noexcept { damping = v; return *this; }
    gn_config& with_beta1(double v) noexcept { beta1 = v; return *this; }
    gn_config& with_bias_correction(bool v = true) noexcept {
        bias_correction = v ? 1u : 0u;
        return *this;
    }
    gn_config& with_weight_decay(double v) noexcept { weight_decay = v; return *this; }
    gn_config& with_check_finite(bool v = true) noexcept {
        check_finite = v ? 1u : 0u;
        return *this;
    }
};

namespace detail {
/// Floats of a strided n_samples x dim matrix (0 when empty; the library checks overflow).
inline std::size_t strided_len(std::size_t n_samples, std::size_t dim,
                               std::size_t row_stride) noexcept {
    return n_samples == 0 || dim == 0 ? 0 : (n_samples - 1) * row_stride + dim;
}
}  // namespace detail

/// h <- beta h + (1 - beta) (1/N) sum_n w_n x_n^2 (dp_gn_diag_dense_f32 in the identity basis);
/// x holds n_samples rows of dim floats, row_stride apart; weights (n_samples floats) may be
/// nullptr (all ones); h has dim floats.
inline std::error_code gn_diag_weighted(const float* x, std::size_t n_samples, std::size_t dim,
                                        std::size_t row_stride, const float* weights, double beta,
                                        float* h, std::error_code& ec) noexcept {
    ec = detail::to_code(dp_gn_diag_dense_f32(
        x, detail::strided_len(n_samples, dim, row_stride), n_samples, dim, row_stride,
        DP_GN_WEIGHTS_GIVEN, weights, weights ? n_samples : 0, nullptr, 0, dim, beta, h, dim));
    return ec;
}

inline void gn_diag_weighted(const float* x, std::size_t n_samples, std::size_t dim,
                             std::size_t row_stride, const float* weights, double beta, float* h) {
    std::error_code ec;
    gn_diag_weighted(x, n_samples, dim, row_stride, weights, beta, h, ec);
    if (ec) throw error(static_cast<dp_status>(ec.value()), dp_last_error_message());
}

/// Container form: x holds n_samples contiguous rows of h.size() floats (no weights).
template <class X, class H, class = std::enable_if_t<std::is_same_v<detail::value_t<H>, float>>>
void gn_diag_weighted(const X& x, std::size_t n_samples, double beta, H& h) {
    const std::size_t dim = h.size();
    detail::throw_if_failed(dp_gn_diag_dense_f32(x.data(), x.size(), n_samples, dim, dim,
                                                 DP_GN_WEIGHTS_GIVEN, nullptr, 0, nullptr, 0, dim,
                                                 beta, h.data(), dim));
}

/// Logistic-regression weights s(1 - s) from logits (n_samples floats).
inline void gn_diag_logistic(const float* x, std::size_t n_samples, std::size_t dim,
                             std::size_t row_stride, const float* logits, double beta, float* h) {
    detail::throw_if_failed(dp_gn_diag_dense_f32(
        x, detail::strided_len(n_samples, dim, row_stride), n_samples, dim, row_stride,
        DP_GN_WEIGHTS_LOGISTIC, logits, n_samples, nullptr, 0, dim, beta, h, dim));
}

/// h <- beta h + (1 - beta) S^T (X o X) / N (dp_gn_diag_linear_f32 with DP_GN_OUTPUT_FACTORS);
/// x is n_samples x d_in, s n_samples x c_out, h c_out x d_in; h_bias (c_out) may be nullptr.
inline std::error_code gn_diag_linear(const float* x, std::size_t n_samples, std::size_t d_in,
                                      const float* s, std::size_t c_out, double beta, float* h,
                                      float* h_bias, std::error_code& ec) noexcept {
    ec = detail::to_code(dp_gn_diag_linear_f32(
        x, n_samples * d_in, n_samples, d_in, DP_GN_OUTPUT_FACTORS, s, n_samples * c_out, c_out,
        0, nullptr, 0, nullptr, 0, beta, h, c_out * d_in, h_bias, h_bias ? c_out : 0));
    return ec;
}

inline void gn_diag_linear(const float* x, std::size_t n_samples, std::size_t d_in,
                           const float* s, std::size_t c_out, double beta, float* h,
                           float* h_bias = nullptr) {
    std::error_code ec;
    gn_diag_linear(x, n_samples, d_in, s, c_out, beta, h, h_bias, ec);
    if (ec) throw error(static_cast<dp_status>(ec.value()), dp_last_error_message());
}

/// Softmax layer (dp_gn_diag_linear_f32 with the softmax outputs); logits n_samples x classes;
/// h_bias may be nullptr.
inline std::error_code gn_diag_softmax(const float* x, const float* logits, std::size_t n_samples,
                                       std::size_t d_in, std::size_t classes,
                                       gn_estimator estimator, std::uint64_t seed, double beta,
                                       float* h, float* h_bias, std::error_code& ec) noexcept {
    ec = detail::to_code(dp_gn_diag_linear_f32(
        x, n_samples * d_in, n_samples, d_in, static_cast<std::uint32_t>(estimator), logits,
        n_samples * classes, classes, seed, nullptr, 0, nullptr, 0, beta, h, classes * d_in,
        h_bias, h_bias ? classes : 0));
    return ec;
}

inline void gn_diag_softmax(const float* x, const float* logits, std::size_t n_samples,
                            std::size_t d_in, std::size_t classes, gn_estimator estimator,
                            std::uint64_t seed, double beta, float* h, float* h_bias = nullptr) {
    std::error_code ec;
    gn_diag_softmax(x, logits, n_samples, d_in, classes, estimator, seed, beta, h, h_bias, ec);
    if (ec) throw error(static_cast<dp_status>(ec.value()), dp_last_error_message());
}

/// In a dense basis U (dim x k, row-major): dp_gn_diag_dense_f32 with u; h has k floats.
inline void gn_diag_weighted_in_basis(const float* x, std::size_t n_samples, std::size_t dim,
                                      std::size_t row_stride, const float* weights,
                                      const float* u, std::size_t k, double beta, float* h) {
    detail::throw_if_failed(dp_gn_diag_dense_f32(
        x, detail::strided_len(n_samples, dim, row_stride), n_samples, dim, row_stride,
        DP_GN_WEIGHTS_GIVEN, weights, weights ? n_samples : 0, u, dim * k, k, beta, h, k));
}

/// Softmax layer in the Kronecker basis (Q_C classes x classes, Q_X d_in x d_in, both
/// row-major): dp_gn_diag_linear_f32 with q_c and q_x.
inline void gn_diag_softmax_in_kronecker(const float* x, const float* logits,
                                         std::size_t n_samples, std::size_t d_in,
                                         std::size_t classes, gn_estimator estimator,
                                         std::uint64_t seed, const float* q_c, const float* q_x,
                                         double beta, float* h, float* h_bias = nullptr) {
    detail::throw_if_failed(dp_gn_diag_linear_f32(
        x, n_samples * d_in, n_samples, d_in, static_cast<std::uint32_t>(estimator), logits,
        n_samples * classes, classes, seed, q_c, classes * classes, q_x, d_in * d_in, beta, h,
        classes * d_in, h_bias, h_bias ? classes : 0));
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

// ---- Mixed precision, compressed state, global norm, two-pass clipped step ----------------

/// The 16-bit format of master-weight parameters and gradients (DP_FORMAT_*).
enum class half_format : std::uint32_t { bf16 = DP_FORMAT_BF16, f16 = DP_FORMAT_F16 };

/// How the 16-bit parameter copy is rounded: nearest-even, or stochastic with a seed.
struct rounding {
    bool stochastic = false;
    std::uint64_t seed = 0;
    static rounding nearest_even() noexcept { return {}; }
    static rounding stochastic_with(std::uint64_t seed) noexcept { return {true, seed}; }
    /// DP_ROUND_NEAREST or DP_ROUND_STOCHASTIC.
    std::uint32_t mode() const noexcept {
        return stochastic ? DP_ROUND_STOCHASTIC : DP_ROUND_NEAREST;
    }
};

/// The master-weight step over a tensor list (dp_adam_master_step_multi).
inline std::error_code adam_master_step_multi(const dp_adam_config& cfg, std::uint64_t step,
                                              half_format format,
                                              const dp_adam_master_tensor* tensors,
                                              std::size_t count, rounding r,
                                              std::error_code& ec) noexcept {
    ec = detail::to_code(dp_adam_master_step_multi(&cfg, step,
                                                   static_cast<std::uint32_t>(format), r.mode(),
                                                   r.seed, tensors, count));
    return ec;
}

inline void adam_master_step_multi(const dp_adam_config& cfg, std::uint64_t step,
                                   half_format format, const dp_adam_master_tensor* tensors,
                                   std::size_t count, rounding r = {}) {
    std::error_code ec;
    adam_master_step_multi(cfg, step, format, tensors, count, r, ec);
    if (ec) throw error(static_cast<dp_status>(ec.value()), dp_last_error_message());
}

/// bf16 parameters and gradients (uint16_t bits) with f32 master weights, one pass: one
/// tensor as a list of one (dp_adam_master_step_multi with DP_FORMAT_BF16).
inline std::error_code adam_step_master_bf16(const dp_adam_config& cfg, std::uint64_t step,
                                             float* master, std::uint16_t* param,
                                             const std::uint16_t* grad, float* exp_avg,
                                             float* exp_avg_sq, std::size_t len, rounding r,
                                             std::error_code& ec) noexcept {
    const dp_adam_master_tensor t = {master, param, grad, exp_avg, exp_avg_sq, len};
    return adam_master_step_multi(cfg, step, half_format::bf16, &t, 1, r, ec);
}

inline void adam_step_master_bf16(const dp_adam_config& cfg, std::uint64_t step, float* master,
                                  std::uint16_t* param, const std::uint16_t* grad, float* exp_avg,
                                  float* exp_avg_sq, std::size_t len, rounding r = {}) {
    std::error_code ec;
    adam_step_master_bf16(cfg, step, master, param, grad, exp_avg, exp_avg_sq, len, r, ec);
    if (ec) throw error(static_cast<dp_status>(ec.value()), dp_last_error_message());
}

/// IEEE f16 parameters and gradients: one tensor as a list of one (DP_FORMAT_F16).
inline std::error_code adam_step_master_f16(const dp_adam_config& cfg, std::uint64_t step,
                                            float* master, std::uint16_t* param,
                                            const std::uint16_t* grad, float* exp_avg,
                                            float* exp_avg_sq, std::size_t len, rounding r,
                                            std::error_code& ec) noexcept {
    const dp_adam_master_tensor t = {master, param, grad, exp_avg, exp_avg_sq, len};
    return adam_master_step_multi(cfg, step, half_format::f16, &t, 1, r, ec);
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

/// The bf16 master step over a tensor list (dp_adam_master_step_multi, DP_FORMAT_BF16).
inline std::error_code adam_step_master_bf16_multi(const dp_adam_config& cfg, std::uint64_t step,
                                                   const dp_adam_master_tensor* tensors,
                                                   std::size_t count, rounding r,
                                                   std::error_code& ec) noexcept {
    return adam_master_step_multi(cfg, step, half_format::bf16, tensors, count, r, ec);
}

/// Container of dp_adam_master_tensor (e.g. std::vector<dp_adam_master_tensor>).
template <class T,
          class = std::enable_if_t<std::is_same_v<detail::value_t<T>, dp_adam_master_tensor>>>
void adam_step_master_bf16_multi(const dp_adam_config& cfg, std::uint64_t step, const T& tensors,
                                 rounding r = {}) {
    adam_master_step_multi(cfg, step, half_format::bf16, tensors.data(), tensors.size(), r);
}

/// The f16 master step over a tensor list (dp_adam_master_step_multi, DP_FORMAT_F16).
inline std::error_code adam_step_master_f16_multi(const dp_adam_config& cfg, std::uint64_t step,
                                                  const dp_adam_master_tensor* tensors,
                                                  std::size_t count, rounding r,
                                                  std::error_code& ec) noexcept {
    return adam_master_step_multi(cfg, step, half_format::f16, tensors, count, r, ec);
}

template <class T,
          class = std::enable_if_t<std::is_same_v<detail::value_t<T>, dp_adam_master_tensor>>>
void adam_step_master_f16_multi(const dp_adam_config& cfg, std::uint64_t step, const T& tensors,
                                rounding r = {}) {
    adam_master_step_multi(cfg, step, half_format::f16, tensors.data(), tensors.size(), r);
}

/// The two-pass master step over a tensor list (dp_adam_master_step_clipped_multi); returns
/// the norm before clipping. `f16`: IEEE binary16 parameters and gradients, else bf16.
inline double adam_step_master_clipped(const dp_adam_config& cfg, std::uint64_t step,
                                       const dp_adam_master_tensor* tensors, std::size_t count,
                                       double max_grad_norm, bool f16, rounding r,
                                       std::error_code& ec) noexcept {
    double norm = 0.0;
    const std::uint32_t format = f16 ? DP_FORMAT_F16 : DP_FORMAT_BF16;
    ec = detail::to_code(dp_adam_master_step_clipped_multi(
        &cfg, step, format, r.mode(), r.seed, tensors, count, max_grad_norm, &norm));
    return norm;
}

template <class T,
          class = std::enable_if_t<std::is_same_v<detail::value_t<T>, dp_adam_master_tensor>>>
double adam_step_master_clipped(const dp_adam_config& cfg, std::uint64_t step, const T& tensors,
                                double max_grad_norm, bool f16 = false, rounding r = {}) {
    std::error_code ec;
    double norm = adam_step_master_clipped(cfg, step, tensors.data(), tensors.size(),
                                           max_grad_norm, f16, r, ec);
    if (ec) throw error(static_cast<dp_status>(ec.value()), dp_last_error_message());
    return norm;
}

/// The global L2 norm of the unscaled gradients and whether any is NaN/Inf.
struct grad_norm_result {
    double norm = 0.0;
    bool found_inf = false;
};

inline grad_norm_result grad_norm(const dp_adam_tensor_f32* tensors, std::size_t count,
                                  double inv_grad_scale, std::error_code& ec) noexcept {
    grad_norm_result r;
    std::uint32_t found = 0;
    ec = detail::to_code(dp_grad_norm_multi_f32(tensors, count, inv_grad_scale, &r.norm, &found));
    r.found_inf = found != 0;
    return r;
}

template <class T, class = std::enable_if_t<std::is_same_v<detail::value_t<T>, dp_adam_tensor_f32>>>
grad_norm_result grad_norm(const T& tensors, double inv_grad_scale = 1.0) {
    std::error_code ec;
    auto r = grad_norm(tensors.data(), tensors.size(), inv_grad_scale, ec);
    if (ec) throw error(static_cast<dp_status>(ec.value()), dp_last_error_message());
    return r;
}

/// The norm of the 16-bit gradients of master-weight tensors (dp_grad_norm_master_multi).
inline grad_norm_result grad_norm(half_format format, const dp_adam_master_tensor* tensors,
                                  std::size_t count, double inv_grad_scale,
                                  std::error_code& ec) noexcept {
    grad_norm_result r;
    std::uint32_t found = 0;
    ec = detail::to_code(dp_grad_norm_master_multi(static_cast<std::uint32_t>(format), tensors,
                                                   count, inv_grad_scale, &r.norm, &found));
    r.found_inf = found != 0;
    return r;
}

template <class T,
          class = std::enable_if_t<std::is_same_v<detail::value_t<T>, dp_adam_master_tensor>>>
grad_norm_result grad_norm(half_format format, const T& tensors, double inv_grad_scale = 1.0) {
    std::error_code ec;
    auto r = grad_norm(format, tensors.data(), tensors.size(), inv_grad_scale, ec);
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

    /// The state of f32 moments (containers of equal size), encoded as the step encodes its
    /// own (dp_adam_8bit_quantize_f32): e.g. to go on from an f32 checkpoint. Throws
    /// DP_ERR_INVALID_ARGUMENT for a non-finite value or a negative exp_avg_sq.
    template <class M, class V>
    static adam_8bit_state from_f32(const M& exp_avg, const V& exp_avg_sq) {
        if (exp_avg.size() != exp_avg_sq.size())
            throw error(DP_ERR_LENGTH, "diagprec::adam_8bit_state::from_f32: size mismatch");
        adam_8bit_state s(exp_avg.size());
        detail::throw_if_failed(dp_adam_8bit_quantize_f32(
            DP_MOMENT_EXP_AVG, exp_avg.data(), exp_avg.size(), s.exp_avg_codes.data(),
            s.exp_avg_codes.size(), s.exp_avg_scales.data(), s.exp_avg_scales.size()));
        detail::throw_if_failed(dp_adam_8bit_quantize_f32(
            DP_MOMENT_EXP_AVG_SQ, exp_avg_sq.data(), exp_avg_sq.size(),
            s.exp_avg_sq_codes.data(), s.exp_avg_sq_codes.size(), s.exp_avg_sq_scales.data(),
            s.exp_avg_sq_scales.size()));
        return s;
    }

    /// The decoded exp_avg (dp_adam_8bit_dequantize_f32): exactly what the step decodes.
    std::vector<float> exp_avg_f32() const {
        return decode(DP_MOMENT_EXP_AVG, exp_avg_codes, exp_avg_scales);
    }
    /// The decoded exp_avg_sq.
    std::vector<float> exp_avg_sq_f32() const {
        return decode(DP_MOMENT_EXP_AVG_SQ, exp_avg_sq_codes, exp_avg_sq_scales);
    }

    /// This state with `param` and `grad` (`size()` floats each) as one tensor of a
    /// dp_adam_8bit_step_multi_f32 list (see adam_step_8bit_state_multi). Both scale arrays
    /// must have the same size (the library checks it against the layout).
    dp_adam_8bit_tensor tensor(float* param, const float* grad) {
        if (exp_avg_scales.size() != exp_avg_sq_scales.size() ||
            exp_avg_codes.size() != exp_avg_sq_codes.size())
            throw error(DP_ERR_LENGTH, "diagprec::adam_8bit_state: the moments differ in size");
        return {param,
                grad,
                exp_avg_codes.data(),
                exp_avg_scales.data(),
                exp_avg_sq_codes.data(),
                exp_avg_sq_scales.data(),
                size(),
                exp_avg_scales.size()};
    }

    /// One step on param / grad (containers of `size()` floats): a list of one.
    template <class P, class G>
    void step(const dp_adam_config& cfg, std::uint64_t t, P& param, const G& grad) {
        if (param.size() != size() || grad.size() != size())
            throw error(DP_ERR_LENGTH, "diagprec::adam_8bit_state: size mismatch");
        const dp_adam_8bit_tensor one = tensor(param.data(), grad.data());
        detail::throw_if_failed(dp_adam_8bit_step_multi_f32(&cfg, t, &one, 1));
    }

private:
    static std::vector<float> decode(std::uint32_t moment, const std::vector<std::uint8_t>& codes,
                                     const std::vector<float>& scales) {
        std::vector<float> out(codes.size());
        detail::throw_if_failed(dp_adam_8bit_dequantize_f32(moment, codes.data(), codes.size(),
                                                            scales.data(), scales.size(),
                                                            out.data(), out.size()));
        return out;
    }
};

/// The 8-bit step over a tensor list (dp_adam_8bit_step_multi_f32).
inline std::error_code adam_step_8bit_state_multi(const dp_adam_config& cfg, std::uint64_t step,
                                                  const dp_adam_8bit_tensor* tensors,
                                                  std::size_t count,
                                                  std::error_code& ec) noexcept {
    ec = detail::to_code(dp_adam_8bit_step_multi_f32(&cfg, step, tensors, count));
    return ec;
}

/// Container of dp_adam_8bit_tensor (see adam_8bit_state::tensor).
template <class T,
          class = std::enable_if_t<std::is_same_v<detail::value_t<T>, dp_adam_8bit_tensor>>>
void adam_step_8bit_state_multi(const dp_adam_config& cfg, std::uint64_t step, const T& tensors) {
    detail::throw_if_failed(
        dp_adam_8bit_step_multi_f32(&cfg, step, tensors.data(), tensors.size()));
}

/// bf16 optimizer state with stochastic rounding: one tensor as a list of one
/// (dp_adam_bf16_state_step_multi_f32).
inline std::error_code adam_step_bf16_state(const dp_adam_config& cfg, std::uint64_t step,
                                            std::uint64_t seed, float* param, const float* grad,
                                            std::uint16_t* exp_avg, std::uint16_t* exp_avg_sq,
                                            std::size_t len, std::error_code& ec) noexcept {
    const dp_adam_bf16_state_tensor t = {param, grad, exp_avg, exp_avg_sq, len};
    ec = detail::to_code(dp_adam_bf16_state_step_multi_f32(&cfg, step, seed, &t, 1));
    return ec;
}

inline void adam_step_bf16_state(const dp_adam_config& cfg, std::uint64_t step,
                                 std::uint64_t seed, float* param, const float* grad,
                                 std::uint16_t* exp_avg, std::uint16_t* exp_avg_sq,
                                 std::size_t len) {
    std::error_code ec;
    adam_step_bf16_state(cfg, step, seed, param, grad, exp_avg, exp_avg_sq, len, ec);
    if (ec) throw error(static_cast<dp_status>(ec.value()), dp_last_error_message());
}

/// The bf16-state step over a tensor list (dp_adam_bf16_state_step_multi_f32).
inline std::error_code adam_step_bf16_state_multi(const dp_adam_config& cfg, std::uint64_t step,
                                                  std::uint64_t seed,
                                                  const dp_adam_bf16_state_tensor* tensors,
                                                  std::size_t count,
                                                  std::error_code& ec) noexcept {
    ec = detail::to_code(dp_adam_bf16_state_step_multi_f32(&cfg, step, seed, tensors, count));
    return ec;
}

/// Container of dp_adam_bf16_state_tensor.
template <class T,
          class = std::enable_if_t<std::is_same_v<detail::value_t<T>, dp_adam_bf16_state_tensor>>>
void adam_step_bf16_state_multi(const dp_adam_config& cfg, std::uint64_t step, std::uint64_t seed,
                                const T& tensors) {
    detail::throw_if_failed(
        dp_adam_bf16_state_step_multi_f32(&cfg, step, seed, tensors.data(), tensors.size()));
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
