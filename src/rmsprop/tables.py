"""The flavors as Markdown, generated from the presets: what docs/flavors.md embeds.

`flavor_table` (every flavor's settings, from `rmsprop.flavors`),
`translation_table` (which framework optimizers compute each flavor) and
`flavor_details` (each flavor in full); a test fails when the docs differ
from what these return.
"""

from __future__ import annotations

from rmsprop._config import FIELD_NAMES, Config
from rmsprop.flavors import FLAVORS, flavor_table
from rmsprop.translation import TARGETS, Target, inexpressible_fields

__all__ = ["flavor_details", "flavor_table", "translation_table"]


# Short names of the differences, for the table.
_SHORT = {
    "eps_in_sqrt": "ε placement",
    "initial_square_avg": "v₀",
    "lr_in_momentum": "lr vs buffer",
    "decoupled_weight_decay": "decay form",
    "weight_decay": "weight decay",
    "nesterov": "Nesterov",
    "bias_correction": "bias correction",
    "maximize": "maximize",
}


def _cell(config: Config, target: Target) -> str:
    fields = inexpressible_fields(config, target)
    if fields:
        return "no: " + ", ".join(_SHORT[f] for f in fields)
    breaks = [
        label
        for label, field, value in (
            ("momentum", "momentum", 0.9),
            ("weight decay", "weight_decay", 1e-4),
        )
        if getattr(config, field) == 0
        and inexpressible_fields(config.replace(**{field: value}), target)
    ]
    return "yes, but not with " + " or ".join(breaks) if breaks else "yes"


def translation_table() -> str:
    """Which framework optimizers compute each flavor, as a Markdown table.

    A cell says ``yes`` when `translate` gives that framework's arguments for
    the flavor as it is, ``yes, but not with momentum`` (or weight decay) when
    setting that breaks it, and otherwise which differences it cannot express.

    Example:
        >>> tensorflow_row = translation_table().splitlines()[3]
        >>> for cell in tensorflow_row.strip("| ").split(" | "):
        ...     print(cell)
        `tensorflow`
        no: ε placement, v₀
        yes, but not with weight decay
        no: v₀
        yes, but not with weight decay
        yes
        yes, but not with momentum
        no: v₀
    """
    header = "| flavor | " + " | ".join(f"{t.optimizer}" for t in TARGETS.values()) + " |"
    rows = [header, "|---|" + "---|" * len(TARGETS)]
    for preset in FLAVORS.values():
        cells = [_cell(preset.config, target) for target in TARGETS.values()]
        rows.append(f"| `{preset.name}` | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _rule_lines(c: Config) -> list[str]:
    root = "√(s + ε)" if c.eps_in_sqrt else "√s + ε"
    s = "max(v - m², 0), with m ← ρ·m + (1 - ρ)·g" if c.centered else "v"
    if c.lr_in_momentum:
        momentum = "b ← μ·b + η·g/d, θ ← θ - b (lr inside the buffer)"
    else:
        momentum = "b ← μ·b + g/d, θ ← θ - η·b (lr outside the buffer)"
    if c.decoupled_weight_decay:
        decay = "decoupled, θ ← θ - η·λ·θ before the step"
    else:
        decay = "L2, g ← g + λ·θ"
    return [
        f"- average of squares: v ← ρ·v + (1 - ρ)·g², starting at v₀ = {c.initial_square_avg:g}",
        f"- step: θ ← θ - η·g/d with d = {root} and s = {s}",
        f"- ε = {c.eps:g}, {'inside' if c.eps_in_sqrt else 'outside'} the root",
        f"- with momentum μ > 0: {momentum}",
        f"- with weight decay λ > 0: {decay}",
    ]


def flavor_details() -> str:
    """Every flavor in full, as Markdown: its rule, defaults, source and translations.

    Generated from the presets, so documentation that embeds it cannot drift
    from them.

    Example:
        >>> print(flavor_details().splitlines()[0])
        ### `pytorch`: PyTorch torch.optim.RMSprop
    """
    sections = []
    for preset in FLAVORS.values():
        c = preset.config
        defaults = ", ".join(f"{f}={getattr(c, f)!r}" for f in FIELD_NAMES)
        lines = [f"### `{preset.name}`: {preset.title}", ""]
        lines += _rule_lines(c)
        lines += [
            "",
            f"`rmsprop.flavor({preset.name!r})` is `Config({defaults})`.",
            "",
            f"Source: {preset.source}.",
        ]
        if preset.notes:
            lines += ["", preset.notes]
        same = []
        for target in TARGETS.values():
            if not inexpressible_fields(c, target):
                arguments = ", ".join(f"{k}={v!r}" for k, v in target.arguments(c).items())
                same.append(f"- `{target.optimizer}({arguments})`")
        lines += [""]
        if same:
            lines += ["The same rule in other frameworks' own optimizers (`translate`):", ""]
            lines += same
        else:
            lines += ["No other framework's own optimizer computes this rule (`translate`)."]
        sections.append("\n".join(lines))
    return "\n\n".join(sections)
