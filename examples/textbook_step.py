"""One RMSprop step by hand and by the library: the textbook example.

E[g²] = ρ·E[g²] + (1 - ρ)·g²
θ     = θ - η·g / sqrt(E[g²] + ε)        with η = 0.01, ρ = 0.9, ε = 1e-8
"""

import numpy as np

import rmsprop
import rmsprop.numpy as rnp

config = rmsprop.Config(lr=0.01, decay=0.9, eps=1e-8, eps_in_sqrt=True)
theta = np.array([0.2, 0.4, 0.6])
grad = np.array([-0.5, 0.3, 0.24])

state = rnp.init(theta, config)
theta, state = rnp.update(theta, grad, state, config)
print("theta after one step:", theta)  # [0.23162277 0.36837724 0.56837725]

# The same first step in each flavor: the rules differ, and so do the numbers.
for name in rmsprop.FLAVORS:
    cfg = rmsprop.flavor(name, lr=0.01)
    first, _ = rnp.update(np.array([0.2, 0.4, 0.6]), grad, rnp.init(theta, cfg), cfg)
    print(f"{name:>10}: {first}")
