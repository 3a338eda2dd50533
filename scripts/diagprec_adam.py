"""diagprec's f32 AdamW step through ctypes, shared by the comparison scripts in this folder
(`torch_adam_bench.py`, `deepspeed_adam_compare.py`): loads the library, checks the config's
layout against the C ABI 1.0 (include/diagprec.h) and steps tensors in place."""
import ctypes


class Config(ctypes.Structure):
    """dp_adam_config of the C ABI 1.0; filled by dp_adam_config_default."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("lr", ctypes.c_double),
        ("beta1", ctypes.c_double),
        ("beta2", ctypes.c_double),
        ("eps", ctypes.c_double),
        ("weight_decay", ctypes.c_double),
        ("inv_grad_scale", ctypes.c_double),
        ("decoupled_weight_decay", ctypes.c_uint32),
        ("amsgrad", ctypes.c_uint32),
        ("maximize", ctypes.c_uint32),
        ("check_finite", ctypes.c_uint32),
    ]


def adamw_step(lib_path, threads, tensors, weight_decay=1e-2):
    """`ours()` running one `dp_adam_step_f32` (AdamW, torch's defaults but `weight_decay`) on
    `tensors` = (param, grad, exp_avg, exp_avg_sq), torch tensors of one length, on `threads`
    threads of diagprec's pool."""
    lib = ctypes.CDLL(lib_path)
    lib.dp_adam_config_default.restype = Config
    lib.dp_set_num_threads.argtypes = [ctypes.c_size_t]
    lib.dp_last_error_message.restype = ctypes.c_char_p
    lib.dp_adam_step_f32.argtypes = [ctypes.POINTER(Config), ctypes.c_uint64] + [
        ctypes.c_void_p
    ] * 5 + [ctypes.c_size_t]
    assert lib.dp_set_num_threads(threads) == 0
    cfg = lib.dp_adam_config_default()
    assert cfg.struct_size == ctypes.sizeof(Config)
    cfg.decoupled_weight_decay = 1
    cfg.weight_decay = weight_decay
    pointers = [t.data_ptr() for t in tensors]
    n = tensors[0].numel()

    def ours():
        status = lib.dp_adam_step_f32(ctypes.byref(cfg), 10, *pointers, None, n)
        assert status == 0, lib.dp_last_error_message()

    return ours
