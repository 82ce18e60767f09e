"""Flavors: each framework's RMSprop, exactly, as a named `Config`.

A flavor is data: a `Config` holding the framework's rule and default
hyperparameters, plus the source it reproduces. Where the original has no
default learning rate (it is a required argument), the flavor uses a common
value and says so in ``notes``; pass ``lr=`` to choose your own.

Example:
    >>> import rmsprop
    >>> cfg = rmsprop.flavor("tensorflow", lr=0.045)
    >>> cfg.eps, cfg.eps_in_sqrt, cfg.initial_square_avg
    (1e-10, True, 1.0)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from rmsprop._config import Config

__all__ = ["FLAVORS", "Flavor", "flavor", "flavor_table"]


@dataclasses.dataclass(frozen=True)
class Flavor:
    """A named preset: the `Config` that reproduces one implementation.

    Attributes:
        name: the name `flavor` takes.
        config: the exact rule and defaults.
        title: the implementation it reproduces, in a few words.
        source: where the rule was read (repository, file, version).
        notes: what the preset had to choose where the original is silent.
    """

    name: str
    config: Config
    title: str
    source: str
    notes: str = ""


# TF-style: lr inside the momentum buffer, ε inside the root.
_TF_STYLE = {"eps_in_sqrt": True, "lr_in_momentum": True}

_FLAVOR_LIST = (
    Flavor(
        "pytorch",
        Config(lr=1e-2, decay=0.99, eps=1e-8),
        "PyTorch torch.optim.RMSprop",
        "pytorch/pytorch torch/optim/rmsprop.py (torch 2.11-2.13)",
    ),
    Flavor(
        "tensorflow",
        Config(lr=1e-3, decay=0.9, eps=1e-10, initial_square_avg=1.0, **_TF_STYLE),
        "TensorFlow 1 tf.compat.v1.train.RMSPropOptimizer (ApplyRMSProp kernels)",
        "tensorflow/tensorflow tensorflow/python/training/rmsprop.py and "
        "tensorflow/core/kernels/training_ops.cc (ApplyRMSProp, ApplyCenteredRMSProp)",
        "learning_rate is required in TF1; 1e-3 here. TF1 has no weight decay option. "
        "TF1 rounds Python-number hyperparameters to float32 before casting them to the "
        "variable's dtype, so float64 variables see float32-rounded decay and epsilon.",
    ),
    Flavor(
        "keras",
        Config(lr=1e-3, decay=0.9, eps=1e-7, decoupled_weight_decay=True, **_TF_STYLE),
        "Keras 3 keras.optimizers.RMSprop",
        "keras-team/keras keras/src/optimizers/rmsprop.py and base_optimizer.py (keras 3.15)",
        "weight_decay is decoupled and applied before the step, as in Keras 3.",
    ),
    Flavor(
        "optax",
        Config(lr=1e-3, decay=0.9, eps=1e-8, **_TF_STYLE),
        "optax.rmsprop",
        "google-deepmind/optax optax/_src/alias.py and transform.py (optax 0.2.8)",
        "learning_rate is required in optax; 1e-3 here. optax has no weight decay "
        "inside rmsprop (chain optax.add_decayed_weights for L2).",
    ),
    Flavor(
        "timm",
        Config(lr=1e-2, decay=0.9, eps=1e-10, initial_square_avg=1.0, **_TF_STYLE),
        "timm timm.optim.RMSpropTF",
        "huggingface/pytorch-image-models timm/optim/rmsprop_tf.py (timm 1.0)",
        "RMSpropTF's lr_in_momentum (default True) and decoupled_decay (default False) "
        "are lr_in_momentum and decoupled_weight_decay here. timm's factory also sets "
        "momentum=0.9.",
    ),
    Flavor(
        "lasagne",
        Config(lr=1.0, decay=0.9, eps=1e-6, eps_in_sqrt=True),
        "Lasagne lasagne.updates.rmsprop",
        "Lasagne/Lasagne lasagne/updates.py",
    ),
    Flavor(
        "caffe",
        Config(lr=1e-2, decay=0.99, eps=1e-8),
        "Caffe RMSPropSolver",
        "BVLC/caffe src/caffe/solvers/rmsprop_solver.cpp, caffe.proto (rms_decay=0.99, delta=1e-8)",
        "base_lr is set in the solver file; 1e-2 here. Caffe forbids momentum; "
        "its weight_decay is L2 on the gradient.",
    ),
    Flavor(
        "chainer",
        Config(lr=1e-2, decay=0.99, eps=1e-8),
        "Chainer chainer.optimizers.RMSprop",
        "chainer/chainer chainer/optimizers/rmsprop.py (v7)",
        "eps_in_sqrt=True matches Chainer's eps_inside_sqrt=True.",
    ),
    Flavor(
        "graves",
        Config(lr=1e-4, decay=0.95, eps=1e-4, centered=True, momentum=0.9, **_TF_STYLE),
        "Graves 2013, 'Generating Sequences With Recurrent Neural Networks', eqs. 38-41",
        "arXiv:1308.0850v5 p. 23; as implemented by Chainer RMSpropGraves",
    ),
    Flavor(
        "dqn",
        Config(lr=2.5e-4, decay=0.95, eps=0.01, eps_in_sqrt=True, centered=True),
        "DeepMind DQN (Mnih et al., Nature 2015), NeuralQLearner.lua",
        "the 2015 DQN release, dqn/NeuralQLearner.lua and run_gpu (lr=0.00025)",
        "The original anneals lr linearly only when lr_end is given; its run script "
        "keeps it constant.",
    ),
    Flavor(
        "dopamine",
        Config(lr=2.5e-4, decay=0.95, eps=1e-5, initial_square_avg=1.0, centered=True, **_TF_STYLE),
        "Dopamine's Nature DQN: TF1 tf.train.RMSPropOptimizer as dqn_nature.gin sets it",
        "google/dopamine dopamine/agents/dqn/configs/dqn_nature.gin (learning_rate 0.00025, "
        "decay 0.95, momentum 0.0, epsilon 0.00001, centered True) on TF1's ApplyCenteredRMSProp",
        "The TF1 rule (the tensorflow flavor: ε inside the root, v starting at 1) with "
        "Dopamine's settings; Dopamine's JAX agents use optax.rmsprop instead, whose v starts "
        "at 0 (flavor('optax', lr=2.5e-4, decay=0.95, eps=1e-5, centered=True)).",
    ),
    Flavor(
        "a3c",
        Config(lr=7e-4, decay=0.99, eps=0.1, eps_in_sqrt=True),
        "DeepMind A3C (Mnih et al., ICML 2016), RMSProp with shared statistics",
        "arXiv:1602.01783 section 4, 'Optimization' (g ← αg + (1-α)Δθ², "
        "θ ← θ - ηΔθ/√(g + ε)); α = 0.99 and ε = 0.1 as its authors gave them "
        "(miyosuda/async_deep_reinforce#1)",
        "The paper samples lr per run (log-uniform in [1e-4, 1e-2]); 7e-4 here, the value "
        "most reimplementations use. Its authors clip gradients to norm 40 before the step. "
        "Share the statistics across workers with RMSprop.share_memory().",
    ),
    Flavor(
        "sb3",
        Config(lr=1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=True, initial_square_avg=1.0),
        "stable-baselines3 RMSpropTFLike (sb2_compat)",
        "DLR-RM/stable-baselines3 stable_baselines3/common/sb2_compat/rmsprop_tf_like.py "
        "(stable-baselines3 2.x)",
        "Its defaults are torch.optim.RMSprop's; A2C passes alpha=0.99, eps=1e-5 (the RL "
        "Zoo's Atari A2C: optimizer_class=RMSpropTFLike, optimizer_kwargs=dict(eps=1e-5)). "
        "lr stays outside the momentum buffer, as in PyTorch; its centered form takes the "
        "root of v - m² unclamped, where this clamps at 0.",
    ),
    Flavor(
        "pfrl",
        Config(lr=1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=True),
        "PFRL pfrl.optimizers.SharedRMSpropEpsInsideSqrt",
        "pfnet/pfrl pfrl/optimizers/rmsprop_eps_inside_sqrt.py (pfrl 0.4)",
        "Its defaults are torch.optim.RMSprop's; PFRL's A3C example passes lr=7e-4, "
        "eps=1e-1, alpha=0.99. Its state is created when the optimizer is: call "
        "RMSprop.share_memory() for the same.",
    ),
    Flavor(
        "hinton",
        Config(lr=1e-3, decay=0.9, eps=0.0),
        "Hinton, Neural Networks for Machine Learning, lecture 6e, slide 29",
        "Coursera lecture slides, lecture 6e (Tieleman & Hinton, 2012)",
        "The slide gives no learning rate (1e-3 here) and no epsilon: with eps=0 a "
        "zero gradient on a zero average divides 0 by 0.",
    ),
    Flavor(
        "textbook",
        Config(lr=1e-2, decay=0.9, eps=1e-8, eps_in_sqrt=True),
        "The textbook rule: theta -= lr * g / sqrt(E[g^2] + eps)",
        "Hinton lecture 6e with eps inside the root, as most textbooks write it",
    ),
    Flavor(
        "sonnet",
        Config(lr=1e-3, decay=0.9, eps=1e-10, **_TF_STYLE),
        "DeepMind Sonnet 2 snt.optimizers.RMSProp (TF1 rule, zero-initialised)",
        "google-deepmind/sonnet sonnet/src/optimizers/rmsprop.py",
        "learning_rate is required in Sonnet; 1e-3 here.",
    ),
    Flavor(
        "paddle",
        Config(lr=1e-3, decay=0.95, eps=1e-6, **_TF_STYLE),
        "PaddlePaddle paddle.optimizer.RMSProp",
        "PaddlePaddle/Paddle python/paddle/optimizer/rmsprop.py and "
        "paddle/phi/kernels/impl/rmsprop_kernel_impl.h",
        "learning_rate is required in Paddle; 1e-3 here. Its momentum is heavy-ball "
        "(its docs say Nesterov); weight_decay is L2 on the gradient.",
    ),
)

FLAVORS: Mapping[str, Flavor] = MappingProxyType({f.name: f for f in _FLAVOR_LIST})
"""Every flavor by name, in a fixed order (PyTorch first)."""


def flavor(name: str, **overrides: Any) -> Config:
    """Returns the `Config` of flavor ``name``, with ``overrides`` applied.

    Args:
        name: a key of `FLAVORS`, e.g. ``"pytorch"``, ``"tensorflow"``,
            ``"keras"``, ``"optax"``, ``"timm"``, ``"dqn"``.
        **overrides: `Config` fields to change, e.g. ``lr=0.1``.

    Raises:
        ValueError: ``name`` is not a known flavor (the message lists them).
        TypeError: an override is not a `Config` field.

    Example:
        >>> import rmsprop
        >>> rmsprop.flavor("pytorch", lr=0.1).lr
        0.1
    """
    try:
        preset = FLAVORS[name]
    except (KeyError, TypeError):
        known = ", ".join(FLAVORS)
        raise ValueError(f"unknown flavor {name!r}; the known flavors are: {known}") from None
    return preset.config.replace(**overrides)


def flavor_table() -> str:
    """The flavors as a Markdown table, generated from the presets.

    Example:
        >>> print(flavor_table().splitlines()[2][:50])
        | `pytorch` | 0.01 | 0.99 | 1e-08 | outside | 0 |
    """
    header = (
        "| flavor | lr | decay ρ | ε | ε vs root | v₀ | centered | momentum "
        "| lr vs momentum buffer | weight decay | reproduces |"
    )
    rows = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for preset in FLAVORS.values():
        c = preset.config
        cells = [
            f"`{preset.name}`",
            f"{c.lr:g}",
            f"{c.decay:g}",
            f"{c.eps:g}",
            "inside" if c.eps_in_sqrt else "outside",
            f"{c.initial_square_avg:g}",
            "yes" if c.centered else "no",
            f"{c.momentum:g}",
            "inside" if c.lr_in_momentum else "outside",
            "decoupled" if c.decoupled_weight_decay else "L2",
            preset.title,
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)
