"""A3C on CartPole: Hogwild workers training one shared model with one shared RMSprop.

Usage:
    python examples/a3c_cartpole.py [--workers 2] [--seed 0] [--max-seconds 600] [--plot curve.png]

Each worker process (``spawn``) plays its own CartPole-v1 (gymnasium's, no download),
computes an n-step advantage actor-critic loss on its own rollouts, and steps the shared
optimizer: RMSprop in DeepMind's A3C flavor (decay 0.99, ε = 0.1 inside the root), its
statistics shared by all workers through ``opt.share_memory()``, lock-free (Hogwild), as
in the A3C paper. Training stops when the last 100 episodes (over all workers) average a
return of at least 475 (CartPole-v1 is "solved" there; 500 is the most an episode can
score), then the greedy policy plays 100 more episodes, which are reported too.

Needs: pip install 'rmsprop[torch]' gymnasium (matplotlib for --plot).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from collections import deque
from typing import Any

import torch
from torch import nn

from rmsprop.torch import RMSprop

GAMMA = 0.99
ROLLOUT = 20  # steps per update (n-step returns)
ENTROPY = 0.01
GRAD_CLIP = 40.0  # as the A3C authors clip
TARGET = 475.0


class ActorCritic(nn.Module):
    def __init__(self, observations: int = 4, actions: int = 2, hidden: int = 128) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(observations, hidden), nn.Tanh())
        self.policy = nn.Linear(hidden, actions)
        self.value = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.policy(h), self.value(h).squeeze(-1)


def worker(
    rank: int, model: ActorCritic, optimizer: RMSprop, seed: int, stop: Any, returns: Any
) -> None:
    import gymnasium as gym

    torch.set_num_threads(1)  # one thread per worker: workers x threads = cores
    torch.manual_seed(seed + rank)
    env = gym.make("CartPole-v1")
    observation, _ = env.reset(seed=seed + rank)
    episode_return = 0.0
    while not stop.is_set():
        log_probs, values, rewards, entropies, done = [], [], [], [], False
        for _ in range(ROLLOUT):
            logits, value = model(torch.as_tensor(observation, dtype=torch.float32))
            dist = torch.distributions.Categorical(logits=logits)
            action = dist.sample()
            observation, reward, terminated, truncated, _ = env.step(int(action))
            episode_return += float(reward)
            log_probs.append(dist.log_prob(action))
            entropies.append(dist.entropy())
            values.append(value)
            rewards.append(float(reward))
            done = terminated or truncated
            if done:
                returns.put(episode_return)
                episode_return = 0.0
                observation, _ = env.reset()
                break
        with torch.no_grad():
            bootstrap = 0.0
            if not (done and terminated):  # cut off, not failed: the value goes on
                bootstrap = float(model(torch.as_tensor(observation, dtype=torch.float32))[1])
        target, targets = bootstrap, []
        for reward in reversed(rewards):
            target = reward + GAMMA * target
            targets.append(target)
        targets_t = torch.tensor(targets[::-1])
        values_t = torch.stack(values)
        advantages = targets_t - values_t
        loss = (
            -(torch.stack(log_probs) * advantages.detach()).sum()
            + 0.5 * advantages.pow(2).sum()
            - ENTROPY * torch.stack(entropies).sum()
        )
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()  # the shared statistics, and the shared parameters, lock-free


def evaluate(model: ActorCritic, episodes: int, seed: int) -> float:
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    total = 0.0
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed + 10_000 + episode)
        done = False
        while not done:
            with torch.no_grad():
                logits, _ = model(torch.as_tensor(observation, dtype=torch.float32))
            observation, reward, terminated, truncated, _ = env.step(int(logits.argmax()))
            total += float(reward)
            done = terminated or truncated
    return total / episodes


def train(workers: int, seed: int, lr: float, max_seconds: float = 600) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = ActorCritic().share_memory()
    optimizer = RMSprop(model.parameters(), flavor="a3c", lr=lr).share_memory()
    context = mp.get_context("spawn")
    stop, returns = context.Event(), context.Queue()
    processes = [
        context.Process(target=worker, args=(rank, model, optimizer, seed, stop, returns))
        for rank in range(workers)
    ]
    for process in processes:
        process.start()
    start, curve, last = time.perf_counter(), [], deque(maxlen=100)
    try:
        while time.perf_counter() - start < max_seconds:
            episode_return = returns.get(timeout=120)
            last.append(episode_return)
            average = sum(last) / len(last)
            curve.append((time.perf_counter() - start, episode_return, average))
            if len(last) == 100 and average >= TARGET:
                break
    finally:
        stop.set()
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "episodes": len(curve),
        "average of the last 100": sum(last) / max(1, len(last)),
        "greedy average over 100": evaluate(model, 100, seed),
        "steps": float(optimizer.state[model.policy.weight]["step"]),
        "curve": curve,
    }


def plot(curve: list[tuple[float, float, float]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = [c[0] for c in curve]
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=120)
    ax.plot(seconds, [c[1] for c in curve], ".", ms=2, alpha=0.4, label="episode return")
    ax.plot(seconds, [c[2] for c in curve], lw=2, label="average of the last 100")
    ax.axhline(TARGET, color="gray", ls="--", lw=1, label=f"target {TARGET:g}")
    ax.set_xlabel("seconds of training")
    ax.set_ylabel("return")
    ax.set_title("A3C on CartPole-v1: Hogwild workers, one shared RMSprop (flavor a3c)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-seconds", type=float, default=600, help="stop training by then")
    parser.add_argument("--plot", help="save the learning curve to this PNG")
    args = parser.parse_args()
    result = train(args.workers, args.seed, args.lr, args.max_seconds)
    print(
        f"{result['episodes']} episodes, {result['steps']:.0f} shared steps in "
        f"{result['seconds']:.0f} s with {args.workers} workers: the last 100 episodes "
        f"averaged {result['average of the last 100']:.1f}; the greedy policy then averaged "
        f"{result['greedy average over 100']:.1f} over 100 episodes"
    )
    if args.plot:
        plot(result["curve"], args.plot)


if __name__ == "__main__":
    main()
