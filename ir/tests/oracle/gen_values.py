#!/usr/bin/env python3
"""Independent expected values for ir/tests/interp_ops.rs.

Computed with numpy and Python's math module (not with the interpreter),
printed as Rust constants that are pasted into the test. Rerun with
`python3 ir/tests/oracle/gen_values.py` and compare if an op's definition
changes. Floats print with repr(), which round-trips f64 exactly.
"""
import math

import numpy as np


def emit(name, values):
    flat = np.asarray(values, dtype=np.float64).ravel()
    body = ", ".join(repr(float(v)) for v in flat)
    print(f"const {name}: [f64; {flat.size}] = [{body}];")


# Unary functions at these points.
XS = np.array([-10.0, -3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0])
print("// Points for the unary tests.")
emit("XS", XS)
# erf via math.erf (libm); gelu's 1 + erf(z) written as erfc(-z), which is
# the same number mathematically and avoids cancellation at x = -10.
emit("ERF", [math.erf(x) for x in XS])
emit("GELU", [x * 0.5 * math.erfc(-x / math.sqrt(2.0)) for x in XS])
emit("GELU_TANH", 0.5 * XS * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (XS + 0.044715 * XS**3))))
emit("SIGMOID", 1.0 / (1.0 + np.exp(-XS)))
emit("SILU", XS / (1.0 + np.exp(-XS)))
emit("TANH", np.tanh(XS))
emit("SIN", np.sin(XS))
emit("COS", np.cos(XS))
emit("EXP", np.exp(XS))
POS = np.array([0.25, 1.0, 2.0, 9.0])
emit("POS", POS)
emit("LOG", np.log(POS))
emit("SQRT", np.sqrt(POS))
emit("RSQRT", 1.0 / np.sqrt(POS))

# Batched matmul: a[2, 2, 3] @ b[2, 3, 2].
a = np.arange(12, dtype=np.float64).reshape(2, 2, 3) * 0.5 - 2.0
b = np.arange(12, dtype=np.float64).reshape(2, 3, 2) * 0.25 + 1.0
emit("MM_A", a)
emit("MM_B", b)
emit("MM_C", a @ b)

# Softmax / log_softmax of x[2, 3] along each axis.
x = np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 5.0]])
emit("SM_X", x)
for axis in (0, 1):
    m = x.max(axis=axis, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=axis, keepdims=True)
    emit(f"SOFTMAX_{axis}", e / s)
    emit(f"LOG_SOFTMAX_{axis}", x - m - np.log(s))

# layernorm and rmsnorm over the last axis of x[2, 4].
x = np.array([[1.0, 2.0, 4.0, 7.0], [-3.0, 0.5, 0.5, 2.0]])
g = np.array([1.0, 0.5, -1.0, 2.0])
bb = np.array([0.0, 0.1, 0.2, -0.3])
eps = 1e-5
mean = x.mean(axis=-1, keepdims=True)
var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # biased
emit("LN_X", x)
emit("LN_G", g)
emit("LN_B", bb)
emit("LAYERNORM", (x - mean) / np.sqrt(var + eps) * g + bb)
emit("RMSNORM", x / np.sqrt((x**2).mean(axis=-1, keepdims=True) + eps) * g)

# Reductions of x[2, 3, 4] = arange(24) - 7.
x = np.arange(24, dtype=np.float64).reshape(2, 3, 4) - 7.0
emit("RED_SUM_02_KEEP", x.sum(axis=(0, 2), keepdims=True))
emit("RED_MEAN_12", x.mean(axis=(1, 2)))
emit("RED_MAX_1", x.max(axis=1))
emit("RED_MIN_0_KEEP", x.min(axis=0, keepdims=True))

# Transpose x[2, 3, 4] with perm [2, 0, 1]: output axis i is input axis perm[i].
emit("TRANSPOSE_201", np.transpose(x, (2, 0, 1)))

# erf and erfc at more points, from libm (math.erf / math.erfc).
EX = [1e-10, 0.1, 0.3, 0.9, 1.5, 1.99, 2.5, 4.0]
emit("ERF_X", EX)
emit("ERF_AT", [math.erf(v) for v in EX])
CX = [-1.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 26.0]
emit("ERFC_X", CX)
emit("ERFC_AT", [math.erfc(v) for v in CX])
