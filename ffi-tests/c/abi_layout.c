/* The C ABI 1.0's struct layouts, pinned at compile time: a change to any field's type, order or
 * the struct's size fails this file's compilation (LP64 targets: 8-byte size_t and pointers).
 * The run checks that the *_default() functions fill struct_size and flags as documented. */
#include <stddef.h>
#include <stdint.h>

#include "dp_test.h"

#if UINTPTR_MAX == 0xffffffffffffffffu
#define AT(type, field, offset) _Static_assert(offsetof(type, field) == (offset), #type "." #field)
#define SIZE(type, size) _Static_assert(sizeof(type) == (size), "sizeof " #type)

SIZE(dp_adam_config, 72);
AT(dp_adam_config, struct_size, 0);
AT(dp_adam_config, lr, 8);
AT(dp_adam_config, beta1, 16);
AT(dp_adam_config, beta2, 24);
AT(dp_adam_config, eps, 32);
AT(dp_adam_config, weight_decay, 40);
AT(dp_adam_config, inv_grad_scale, 48);
AT(dp_adam_config, decoupled_weight_decay, 56);
AT(dp_adam_config, amsgrad, 60);
AT(dp_adam_config, maximize, 64);
AT(dp_adam_config, check_finite, 68);

SIZE(dp_gn_config, 80);
AT(dp_gn_config, struct_size, 0);
AT(dp_gn_config, lr, 8);
AT(dp_gn_config, power, 16);
AT(dp_gn_config, damping, 24);
AT(dp_gn_config, beta1, 32);
AT(dp_gn_config, weight_decay, 40);
AT(dp_gn_config, sophia_gamma, 48);
AT(dp_gn_config, sophia_eps, 56);
AT(dp_gn_config, bias_correction, 64);
AT(dp_gn_config, sophia, 68);
AT(dp_gn_config, check_finite, 72);

SIZE(dp_adam_tensor_f32, 48);
AT(dp_adam_tensor_f32, param, 0);
AT(dp_adam_tensor_f32, grad, 8);
AT(dp_adam_tensor_f32, exp_avg, 16);
AT(dp_adam_tensor_f32, exp_avg_sq, 24);
AT(dp_adam_tensor_f32, max_exp_avg_sq, 32);
AT(dp_adam_tensor_f32, len, 40);

SIZE(dp_adam_master_tensor, 48);
AT(dp_adam_master_tensor, master, 0);
AT(dp_adam_master_tensor, param, 8);
AT(dp_adam_master_tensor, grad, 16);
AT(dp_adam_master_tensor, exp_avg, 24);
AT(dp_adam_master_tensor, exp_avg_sq, 32);
AT(dp_adam_master_tensor, len, 40);

SIZE(dp_adam_bf16_state_tensor, 40);
AT(dp_adam_bf16_state_tensor, param, 0);
AT(dp_adam_bf16_state_tensor, grad, 8);
AT(dp_adam_bf16_state_tensor, exp_avg_bf16, 16);
AT(dp_adam_bf16_state_tensor, exp_avg_sq_bf16, 24);
AT(dp_adam_bf16_state_tensor, len, 32);

SIZE(dp_adam_8bit_tensor, 64);
AT(dp_adam_8bit_tensor, param, 0);
AT(dp_adam_8bit_tensor, grad, 8);
AT(dp_adam_8bit_tensor, exp_avg_codes, 16);
AT(dp_adam_8bit_tensor, exp_avg_scales, 24);
AT(dp_adam_8bit_tensor, exp_avg_sq_codes, 32);
AT(dp_adam_8bit_tensor, exp_avg_sq_scales, 40);
AT(dp_adam_8bit_tensor, len, 48);
AT(dp_adam_8bit_tensor, scales_len, 56);

SIZE(dp_basis_info, 56);
AT(dp_basis_info, struct_size, 0);
AT(dp_basis_info, kind, 8);
AT(dp_basis_info, len, 16);
AT(dp_basis_info, rows, 24);
AT(dp_basis_info, cols, 32);
AT(dp_basis_info, rotate_workspace_len, 40);
AT(dp_basis_info, step_workspace_len, 48);
#endif

int main(void) {
    dp_adam_config a = dp_adam_config_default();
    CHECK(a.struct_size == sizeof(dp_adam_config));
    CHECK(a.amsgrad == 0 && a.maximize == 0 && a.check_finite == 0);
    CHECK(a.decoupled_weight_decay == 0);
    dp_gn_config g = dp_gn_config_default();
    CHECK(g.struct_size == sizeof(dp_gn_config));
    CHECK(g.bias_correction == 1 && g.sophia == 0 && g.check_finite == 0);
    CHECK(DP_ABI_VERSION == 1 && dp_abi_version() == DP_ABI_VERSION);
    return dp_test_finish("abi_layout");
}
