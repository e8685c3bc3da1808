"""Typed transition batches shared by the replay buffers, SAC and the model rollouts."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mbpo_arm.agent.dataset import FIELDS


@dataclass(frozen=True)
class TransitionBatch:
    """A batch of ``B`` transitions on one device.

    ``terminated`` and ``truncated`` are kept apart: the critic target bootstraps through a
    time-limit end (truncated) but not through a true terminal state (terminated). Mixing them
    gives wrong value targets on time-limited tasks (SB3 ``ReplayBufferSamples``; cleanrl's
    ``final_observation`` fix).

    Attributes:
        obs: ``[B, obs_dim]`` float32.
        action: ``[B, act_dim]`` float32, the executed, normalized action in ``[-1, 1]``.
        reward: ``[B]`` float32.
        next_obs: ``[B, obs_dim]`` float32.
        terminated: ``[B]`` float32, 1.0 where the episode truly ended.
        truncated: ``[B]`` float32, 1.0 where a time limit cut the episode.
    """

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor

    def __len__(self) -> int:
        return self.obs.shape[0]

    @staticmethod
    def cat(batches: list[TransitionBatch]) -> TransitionBatch:
        """Concatenate batches along the batch dimension (e.g. real and model data)."""
        return TransitionBatch(*(torch.cat([getattr(b, f) for b in batches]) for f in FIELDS))


