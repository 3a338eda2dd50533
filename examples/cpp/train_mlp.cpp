// A two-layer MLP trained end to end in plain C++ with diagprec's C API: forward, backward and
// loss are written here; the optimizer is chosen on the command line:
//   train_mlp adamw   AdamW on every tensor (dp_adam_step_multi_f32)
//   train_mlp soap    SOAP: Adam in the Kronecker eigenbasis of each weight matrix's gradient
//                     statistics (dp_basis_kron_factors_update_f32, dp_basis_create_from_factors_f32,
//                     dp_basis_refresh_f32, dp_adam_rotated_step_f32); Adam on the biases
//   train_mlp gn      GN^-1/2: theta -= lr m / (h + damping)^(1/2), with the Gauss-Newton
//                     diagonal h of each layer from dp_gn_diag_linear_f32
// Task: regress y = sin(2 a.x) + 0.5 (b.x)^2 from x in R^8 (synthetic, fixed seed), mean
// squared error, full batch. Prints the loss per epoch; exits 1 unless the final loss is below
// a quarter of the first (and 2 on a library error).
#include <diagprec.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

void check(dp_status s, const char *what) {
    if (s != DP_OK) {
        throw std::runtime_error(std::string(what) + ": " + dp_status_str(s) + ": " +
                                 dp_last_error_message());
    }
}

// A deterministic value in [-0.5, 0.5).
float unit(uint64_t i) {
    uint64_t x = i * 0x9e3779b97f4a7c15ULL ^ 0xd1b54a32d192ed03ULL;
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 29;
    return static_cast<float>(x >> 40) / 16777216.0f - 0.5f;
}

using Vec = std::vector<float>;

// A dense layer z = W x + b, W: out x in, row-major.
struct Layer {
    size_t in, out;
    Vec w, b, gw, gb;
    Layer(size_t in_, size_t out_, uint64_t seed)
        : in(in_), out(out_), w(in_ * out_), b(out_, 0.0f), gw(in_ * out_), gb(out_) {
        float scale = 2.0f / std::sqrt(static_cast<float>(in));
        for (size_t i = 0; i < w.size(); i++) w[i] = scale * unit(seed << 32 | i);
    }
    // z[n][o] for x[n][i].
    void forward(const Vec &x, size_t n, Vec &z) const {
        z.assign(n * out, 0.0f);
        for (size_t s = 0; s < n; s++)
            for (size_t o = 0; o < out; o++) {
                float acc = b[o];
                for (size_t i = 0; i < in; i++) acc += w[o * in + i] * x[s * in + i];
                z[s * out + o] = acc;
            }
    }
    // Gradients from dz (n x out); dx (n x in) when non-null.
    void backward(const Vec &x, const Vec &dz, size_t n, Vec *dx) {
        std::fill(gw.begin(), gw.end(), 0.0f);
        std::fill(gb.begin(), gb.end(), 0.0f);
        if (dx) dx->assign(n * in, 0.0f);
        for (size_t s = 0; s < n; s++)
            for (size_t o = 0; o < out; o++) {
                float g = dz[s * out + o];
                gb[o] += g;
                for (size_t i = 0; i < in; i++) {
                    gw[o * in + i] += g * x[s * in + i];
                    if (dx) (*dx)[s * in + i] += g * w[o * in + i];
                }
            }
    }
};

struct Data {
    size_t n, d;
    Vec x, y;
};

Data make_data(size_t n, size_t d) {
    Data data{n, d, Vec(n * d), Vec(n)};
    for (size_t i = 0; i < n * d; i++) data.x[i] = 2.0f * unit(i);
    for (size_t s = 0; s < n; s++) {
        float ax = 0, bx = 0;
        for (size_t i = 0; i < d; i++) {
            ax += unit(1000 + i) * data.x[s * d + i];
            bx += unit(2000 + i) * data.x[s * d + i];
        }
        data.y[s] = std::sin(2.0f * ax) + 0.5f * bx * bx;
    }
    return data;
}

// Owns a dp_basis handle.
struct BasisHandle {
    dp_basis *h = nullptr;
    BasisHandle() = default;
    BasisHandle(const BasisHandle &) = delete;
    BasisHandle &operator=(const BasisHandle &) = delete;
    BasisHandle(BasisHandle &&o) noexcept : h(o.h) { o.h = nullptr; }
    BasisHandle &operator=(BasisHandle &&) = delete;
    ~BasisHandle() { dp_basis_free(h); }
};

// SOAP state of one weight matrix (rows x cols).
struct SoapMatrix {
    size_t rows, cols;
    Vec left, right, m, v, work;
    BasisHandle basis;
    SoapMatrix(size_t r, size_t c)
        : rows(r), cols(c), left(r * r, 0.0f), right(c * c, 0.0f), m(r * c, 0.0f),
          v(r * c, 0.0f) {}
};

struct Moments {
    Vec m, v;
    explicit Moments(size_t n) : m(n, 0.0f), v(n, 0.0f) {}
};

}  // namespace

int main(int argc, char **argv) {
    const std::string opt = argc > 1 ? argv[1] : "adamw";
    if (opt != "adamw" && opt != "soap" && opt != "gn") {
        std::fprintf(stderr, "usage: %s adamw|soap|gn [epochs]\n", argv[0]);
        return 2;
    }
    const int epochs = argc > 2 ? std::atoi(argv[2]) : 150;
    if (dp_abi_version() != DP_ABI_VERSION) {
        std::fprintf(stderr, "diagprec C ABI %u loaded, %d expected\n", dp_abi_version(),
                     DP_ABI_VERSION);
        return 2;
    }
    try {
        const size_t d = 8, hidden = 32, n = 512;
        const Data data = make_data(n, d);
        Layer l1(d, hidden, 1), l2(hidden, 1, 2);
        Layer *layers[2] = {&l1, &l2};

        dp_adam_config adam = dp_adam_config_default();
        adam.lr = 1e-2;
        adam.weight_decay = 1e-4;
        adam.decoupled_weight_decay = 1;
        dp_gn_config gn = dp_gn_config_default();
        gn.lr = 3e-3;
        gn.power = -0.5;
        gn.damping = 1e-8;
        gn.beta1 = 0.9;
        gn.bias_correction = 1;

        std::vector<Moments> moments;  // per tensor: W1, b1, W2, b2
        for (Layer *l : layers) {
            moments.emplace_back(l->w.size());
            moments.emplace_back(l->b.size());
        }
        std::vector<SoapMatrix> soap;
        for (Layer *l : layers) soap.emplace_back(l->out, l->in);
        std::vector<Vec> h_w, h_b;  // GN diagonals
        for (Layer *l : layers) {
            h_w.emplace_back(l->w.size(), 0.0f);
            h_b.emplace_back(l->b.size(), 0.0f);
        }

        Vec z1, a1, z2, dz2, da1, dz1, s1, s2(n, 1.0f);
        double first = 0, loss = 0;
        for (int epoch = 0; epoch < epochs; epoch++) {
            // Forward: tanh hidden layer, linear output; MSE.
            l1.forward(data.x, n, z1);
            a1.resize(z1.size());
            for (size_t i = 0; i < z1.size(); i++) a1[i] = std::tanh(z1[i]);
            l2.forward(a1, n, z2);
            loss = 0;
            dz2.resize(n);
            for (size_t s = 0; s < n; s++) {
                float err = z2[s] - data.y[s];
                loss += static_cast<double>(err) * err / n;
                dz2[s] = 2.0f * err / n;
            }
            if (epoch == 0) first = loss;
            std::printf("%s epoch %3d: loss %.6f\n", opt.c_str(), epoch, loss);
            // Backward.
            l2.backward(a1, dz2, n, &da1);
            dz1.resize(da1.size());
            for (size_t i = 0; i < da1.size(); i++) dz1[i] = da1[i] * (1.0f - a1[i] * a1[i]);
            l1.backward(data.x, dz1, n, nullptr);

            const uint64_t step = static_cast<uint64_t>(epoch) + 1;
            if (opt == "adamw") {
                std::vector<dp_adam_tensor_f32> list;
                size_t k = 0;
                for (Layer *l : layers) {
                    list.push_back({l->w.data(), l->gw.data(), moments[k].m.data(),
                                    moments[k].v.data(), nullptr, l->w.size()});
                    k++;
                    list.push_back({l->b.data(), l->gb.data(), moments[k].m.data(),
                                    moments[k].v.data(), nullptr, l->b.size()});
                    k++;
                }
                check(dp_adam_step_multi_f32(&adam, step, list.data(), list.size()),
                      "dp_adam_step_multi_f32");
            } else if (opt == "soap") {
                dp_adam_config cfg = adam;
                cfg.beta1 = 0.95;
                cfg.beta2 = 0.95;
                for (size_t j = 0; j < 2; j++) {
                    Layer *l = layers[j];
                    SoapMatrix &q = soap[j];
                    check(dp_basis_kron_factors_update_f32(
                              q.left.data(), q.left.size(), q.rows, q.right.data(),
                              q.right.size(), q.cols, l->gw.data(), l->gw.size(), 0.95),
                          "dp_basis_kron_factors_update_f32");
                    if (!q.basis.h) {
                        check(dp_basis_create_from_factors_f32(q.left.data(), q.left.size(),
                                                               q.rows, q.right.data(),
                                                               q.right.size(), q.cols,
                                                               &q.basis.h),
                              "dp_basis_create_from_factors_f32");
                        dp_basis_info info;
                        std::memset(&info, 0, sizeof info);
                        info.struct_size = sizeof info;
                        check(dp_basis_get_info(q.basis.h, &info), "dp_basis_get_info");
                        q.work.assign(info.step_workspace_len, 0.0f);
                    } else if (step % 10 == 0) {
                        check(dp_basis_refresh_f32(q.basis.h, q.left.data(), q.left.size(),
                                                   q.right.data(), q.right.size(),
                                                   DP_REFRESH_POWER_QR, DP_TRANSFER_PERMUTE,
                                                   q.m.data(), q.v.data(), nullptr, q.m.size()),
                              "dp_basis_refresh_f32");
                    }
                    check(dp_adam_rotated_step_f32(&cfg, step, q.basis.h, l->w.data(),
                                                   l->gw.data(), q.m.data(), q.v.data(),
                                                   nullptr, l->w.size(), q.work.data(),
                                                   q.work.size()),
                          "dp_adam_rotated_step_f32");
                    Moments &mb = moments[2 * j + 1];
                    check(dp_adam_step_f32(&cfg, step, l->b.data(), l->gb.data(), mb.m.data(),
                                           mb.v.data(), nullptr, l->b.size()),
                          "dp_adam_step_f32");
                }
            } else {
                // The GN diagonal of the MSE for each layer: h[o][i] = mean_n s[n][o] x[n][i]^2,
                // s = 1 at the output; for the hidden layer s[n][j] = tanh'(z)^2 sum_o W2[o][j]^2.
                // An EMA (beta 0.9) refreshed every 5 steps.
                if (epoch % 5 == 0) {
                    const double beta = epoch == 0 ? 0.0 : 0.9;
                    s1.resize(n * hidden);
                    for (size_t s = 0; s < n; s++)
                        for (size_t j = 0; j < hidden; j++) {
                            float dt = 1.0f - a1[s * hidden + j] * a1[s * hidden + j];
                            s1[s * hidden + j] = dt * dt * l2.w[j] * l2.w[j];
                        }
                    const Vec *xs[2] = {&data.x, &a1};
                    const Vec *ss[2] = {&s1, &s2};
                    for (size_t j = 0; j < 2; j++) {
                        Layer *l = layers[j];
                        check(dp_gn_diag_linear_f32(xs[j]->data(), xs[j]->size(), n, l->in,
                                                    DP_GN_OUTPUT_FACTORS, ss[j]->data(),
                                                    ss[j]->size(), l->out, 0, nullptr, 0,
                                                    nullptr, 0, beta, h_w[j].data(),
                                                    h_w[j].size(), h_b[j].data(),
                                                    h_b[j].size()),
                              "dp_gn_diag_linear_f32");
                    }
                }
                for (size_t j = 0; j < 2; j++) {
                    Layer *l = layers[j];
                    check(dp_gn_step_f32(&gn, step, l->w.data(), l->gw.data(),
                                         moments[2 * j].m.data(), h_w[j].data(), l->w.size()),
                          "dp_gn_step_f32");
                    check(dp_gn_step_f32(&gn, step, l->b.data(), l->gb.data(),
                                         moments[2 * j + 1].m.data(), h_b[j].data(),
                                         l->b.size()),
                          "dp_gn_step_f32");
                }
            }
        }
        const bool fell = std::isfinite(loss) && loss < 0.25 * first;
        std::printf("%s: loss %.6f -> %.6f after %d epochs: %s\n", opt.c_str(), first, loss,
                    epochs, fell ? "falls" : "DOES NOT FALL ENOUGH");
        return fell ? 0 : 1;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 2;
    }
}
