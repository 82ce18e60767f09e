"""Runs a real framework's RMSprop over parity cases, in a process of its own.

Usage: python framework_reference.py {tensorflow|keras} SPEC.json OUT.npz

SPEC.json is a list of cases (see `parity_problems.Case.spec`): the
framework's own optimizer arguments, a dtype, initial parameters, a gradient
per parameter and step, and the learning rate at each step. OUT.npz gets,
for each case name, the parameters after every step, flattened and
concatenated: an array of shape (steps, number of parameter elements).

TensorFlow and Keras are imported only in `main`: pytest imports this file
to look for doctests, and TensorFlow must never load into the test process
(it and Triton each bundle LLVM; a process holding both aborts).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np


def run_tensorflow(cases: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """TF1's ``tf.compat.v1.train.RMSPropOptimizer`` (its ApplyRMSProp kernels), eagerly.

    The learning rate is a callable reading a variable set before each step,
    as TF1 allows in eager mode; the optimizer makes its own slots (``rms``
    starts at 1, ``momentum`` and ``mg`` at 0).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    results = {}
    for case in cases:
        dtype = getattr(tf, case["dtype"])
        variables = [tf.Variable(np.asarray(p), dtype=dtype) for p in case["params"]]
        lr = tf.Variable(0.0, dtype=dtype)
        arguments = dict(case["arguments"], learning_rate=lambda lr=lr: lr)
        optimizer = tf.compat.v1.train.RMSPropOptimizer(**arguments)
        trajectory = []
        for step, grads in enumerate(case["grads"]):
            lr.assign(case["lrs"][step])
            pairs = [(tf.constant(np.asarray(g), dtype=dtype), v) for g, v in zip(grads, variables)]
            optimizer.apply_gradients(pairs)
            trajectory.append(
                np.concatenate([v.numpy().astype(np.float64).ravel() for v in variables])
            )
        results[case["name"]] = np.stack(trajectory)
    return results


def run_keras(cases: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Keras 3's ``keras.optimizers.RMSprop`` on the JAX backend (TensorFlow stays unloaded).

    The learning rate is a `LearningRateSchedule` that looks the step up in
    a table: Keras evaluates it at each step, for the update and for its
    decoupled weight decay alike.
    """
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["JAX_ENABLE_X64"] = "1"  # float64 variables; float32 ones stay float32
    import keras

    class Table(keras.optimizers.schedules.LearningRateSchedule):  # type: ignore[misc]
        def __init__(self, values: np.ndarray) -> None:
            self.values = values

        def __call__(self, step: Any) -> Any:
            return keras.ops.take(keras.ops.convert_to_tensor(self.values), step)

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"Keras picked the {keras.backend.backend()} backend, not jax")
    results = {}
    for case in cases:
        dtype = case["dtype"]
        variables = [
            keras.Variable(np.asarray(p, dtype=dtype), dtype=dtype) for p in case["params"]
        ]
        schedule = Table(np.asarray(case["lrs"], dtype=dtype))
        optimizer = keras.optimizers.RMSprop(**dict(case["arguments"], learning_rate=schedule))
        trajectory = []
        for grads in case["grads"]:
            optimizer.apply([np.asarray(g, dtype=dtype) for g in grads], variables)
            values = [np.asarray(v.numpy(), dtype=np.float64).ravel() for v in variables]
            trajectory.append(np.concatenate(values))
        results[case["name"]] = np.stack(trajectory)
    return results


RUNNERS = {"tensorflow": run_tensorflow, "keras": run_keras}


def main(argv: list[str]) -> None:
    framework, spec_path, out_path = argv
    with open(spec_path) as spec:
        cases = json.load(spec)
    np.savez(out_path, **RUNNERS[framework](cases))


if __name__ == "__main__":
    main(sys.argv[1:])
