"""The fused kernels, framework-free: each computes `rmsprop.Config`'s rule in one pass over memory.

- `rmsprop.kernels.numba_cpu`: the CPU kernel (Numba), one loop for every
  variant over float32/float64 memory, 16-bit memory converted chunk by chunk;
  `rmsprop.numpy` launches it on arrays, `rmsprop.torch` on CPU tensors.
- `rmsprop.kernels.triton`: the GPU kernel (Triton), compiled per variant, one
  launch per step for a whole group of tensors; `rmsprop.torch` launches it.

They import NumPy, Numba or triton only (never a framework), and take the rule
as `rmsprop._lowering` lowers it. Which kernel serves which tensors is decided
by each backend's registry (`rmsprop.torch._fused` for torch).
"""
