"""The settings of the learning side, as typed dataclasses: the only source of their defaults.

Light on purpose (no torch, no gymnasium): the config layer (:mod:`mbpo_arm.configs.schema`)
and ``mbpo-arm --help`` import this module without loading the learning code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The ensemble's hidden-layer activations (mbpo_arm.agent.ensemble maps them to functions).
ACTIVATIONS = ("silu", "relu", "elu", "gelu", "tanh")
# The learner's number formats (the run's ``precision``; mbpo_arm.agent.layers resolves auto).
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class SACConfig:
    """SAC hyperparameters; defaults as cleanrl / SB3 / Haarnoja et al. 2018b."""

    hidden: tuple[int, ...] = (256, 256)  # hidden widths of the actor and of each critic
    critic_layer_norm: bool = False  # LayerNorm after each critic hidden layer (high UTD)
    actor_lr: float = 3e-4  # Adam learning rate of the policy
    critic_lr: float = 3e-4  # Adam learning rate of the twin critic
    alpha_lr: float = 3e-4  # Adam learning rate of log(alpha)
    gamma: float = 0.99  # discount factor, in [0, 1)
    tau: float = 0.005  # polyak rate of the target critic, in (0, 1]
    batch_size: int = 256  # transitions per gradient update
    # Starting temperature. 0.1 as rl-zoo's "auto_0.1": with rewards of ~0.1 per step (the
    # reach task's metres) a start at 1.0 lets the entropy bonus swamp the reward for ~10k
    # updates before autotuning brings it down (measured: 0% vs 10-20% success at 35k steps).
    init_alpha: float = 0.1
    target_entropy: float | None = None  # autotune's entropy target; None: -act_dim (2018b)
    autotune: bool = True  # learn alpha towards target_entropy; False keeps init_alpha
    actor_update_interval: int = 1  # critic updates per actor+alpha update (cleanrl)
    # Standardize observations with a mean/std fitted once on the first real data, clipped to
    # +-10 (as SB3's VecNormalize): a 1 cm offset is ~0.01 raw but ~0.1 standardized, which
    # the reach task's final approach needs.
    normalize_obs: bool = True
    learning_starts: int = 2000  # env steps with uniform random actions before updates start
    utd: int = 1  # gradient updates per env step (update-to-data ratio)

    def __post_init__(self) -> None:
        try:  # Hydra / OmegaConf passes lists where the schema says tuple
            self.hidden = tuple(int(h) for h in self.hidden)
        except (TypeError, ValueError) as err:
            raise ValueError(f"sac.hidden must be a sequence of ints, got {self.hidden!r}") from err
        checks = (
            ("hidden", len(self.hidden) > 0 and min(self.hidden) >= 1,
             "a non-empty sequence of ints >= 1"),
            ("actor_lr", self.actor_lr > 0, "> 0"),
            ("critic_lr", self.critic_lr > 0, "> 0"),
            ("alpha_lr", self.alpha_lr > 0, "> 0"),
            ("gamma", 0 <= self.gamma < 1, "in [0, 1)"),
            ("tau", 0 < self.tau <= 1, "in (0, 1]"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("init_alpha", self.init_alpha > 0, "> 0"),
            ("target_entropy", self.target_entropy is None or math.isfinite(self.target_entropy),
             "None or a finite float"),
            ("actor_update_interval", self.actor_update_interval >= 1, ">= 1"),
            ("learning_starts", self.learning_starts >= 0, ">= 0"),
            ("utd", self.utd >= 1, ">= 1"),
        )
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"sac.{name} must be {allowed}, got {getattr(self, name)!r}")



@dataclass
class EnsembleConfig:
    """The dynamics ensemble and its training (defaults: Janner et al. 2019, MBPO, app. C)."""

    members: int = 7  # ensemble members E trained on bootstraps of the data
    elites: int = 5  # members with the lowest holdout MSE used for prediction
    hidden: int = 200  # width of every hidden layer
    layers: int = 4  # hidden layers; the network has layers + 1 linear layers
    activation: str = "silu"  # one of ACTIVATIONS: silu, relu, elu, gelu, tanh
    lr: float = 1e-3  # Adam learning rate
    # L2 weight decay per linear layer, output layer included (MBPO's BNN decays)
    weight_decay: tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)
    batch_size: int = 256  # minibatch size per member
    holdout_ratio: float = 0.2  # fraction of the data kept out for early stopping and elites
    max_holdout: int = 5000  # cap on the holdout size
    patience: int = 5  # epochs without improvement before stopping
    improvement: float = 0.01  # relative holdout-MSE decrease that counts as improvement
    max_epochs: int | None = None  # epoch cap per training call (early stop still applies)
    max_epochs_per_train: int = 200  # hard epoch cap per call even with max_epochs None
    learn_reward: bool = False  # also predict the reward (tasks without a reward function)
    device: str = "cpu"  # torch device, set by the caller from the run config

    def __post_init__(self) -> None:
        self.weight_decay = tuple(float(w) for w in self.weight_decay)  # Hydra passes lists
        positive = ("members", "elites", "hidden", "layers", "batch_size", "patience",
                    "max_epochs_per_train")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ensemble.{name} must be >= 1, got {getattr(self, name)}")
        if self.elites > self.members:
            raise ValueError(f"ensemble.elites ({self.elites}) must be <= members "
                             f"({self.members})")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"ensemble.activation must be one of {list(ACTIVATIONS)}, "
                             f"got {self.activation!r}")
        if self.lr <= 0:
            raise ValueError(f"ensemble.lr must be > 0, got {self.lr}")
        if len(self.weight_decay) != self.layers + 1 or min(self.weight_decay) < 0:
            raise ValueError(f"ensemble.weight_decay needs layers + 1 = {self.layers + 1} "
                             f"non-negative values, got {list(self.weight_decay)}")
        if not 0.0 <= self.holdout_ratio < 1.0:
            raise ValueError(f"ensemble.holdout_ratio must be in [0, 1), got {self.holdout_ratio}")
        if self.max_holdout < 0:
            raise ValueError(f"ensemble.max_holdout must be >= 0, got {self.max_holdout}")
        if self.improvement < 0:
            raise ValueError(f"ensemble.improvement must be >= 0, got {self.improvement}")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise ValueError(f"ensemble.max_epochs must be >= 1 or None, got {self.max_epochs}")



@dataclass
class TrainerConfig:
    """The schedule of a run, in env steps."""

    total_steps: int = 30_000  # env steps in all
    eval_every: int = 2_500  # env steps between evaluations
    eval_episodes: int = 10  # episodes per evaluation (deterministic policy)
    checkpoint_every: int = 5_000  # env steps between checkpoints
    log_every: int = 1_000  # env steps between progress lines
    replay_capacity: int = 1_000_000  # real transitions kept
    stop_at: float | None = None  # stop early once an evaluation's stop_metric reaches this
    stop_metric: str = "eval_success_rate"  # eval_success_rate or eval_return

    def __post_init__(self) -> None:
        for name in ("total_steps", "eval_every", "eval_episodes", "checkpoint_every",
                     "log_every", "replay_capacity"):
            if getattr(self, name) < 1:
                raise ValueError(f"trainer.{name} must be >= 1, got {getattr(self, name)}")
        if self.stop_metric not in ("eval_success_rate", "eval_return"):
            raise ValueError(f"trainer.stop_metric={self.stop_metric!r} is not allowed; choose "
                             "eval_success_rate or eval_return")



@dataclass
class MBPOConfig:
    """Model-based policy optimization (Janner et al. 2019, algorithm 2 and appendix C)."""

    model_train_every: int = 250  # env steps between model trainings (each followed by a rollout)
    rollout_every: int | None = None  # env steps between rollouts; None: model_train_every
    # real steps collected before the first model training; None: agent.sac.learning_starts
    # (the first policy then acts on a model; AgentConfig resolves it)
    model_learning_starts: int | None = None
    rollout_batch: int = 100_000  # real start states per branched rollout
    # [start_epoch, end_epoch, min_h, max_h]: horizon grows linearly between the epochs
    horizon_schedule: tuple[int, int, int, int] = (20, 100, 1, 15)
    epoch_length: int = 1_000  # env steps per epoch (the schedule's and retention's unit)
    retain_epochs: int = 1  # epochs of model rollouts kept in the model buffer
    real_ratio: float = 0.05  # fraction of real transitions in each SAC batch
    penalty_coef: float = 0.0  # MOPO lambda: reward - lambda * max member std norm
    penalty_anneal_steps: int = 0  # lambda falls linearly to 0 over these env steps; 0: constant
    max_disagreement: float | None = None  # stop a branch beyond this elite discrepancy
    report_horizons: tuple[int, ...] = (1, 5, 10)  # multi-step error horizons in the report
    rollout_chunk: int | None = 4096  # rows per ensemble pass on CPU; null for one pass
    goal_relabel: float = 0.0  # goal tasks: fraction of rollout starts given another goal

    def __post_init__(self) -> None:
        self.horizon_schedule = tuple(int(h) for h in self.horizon_schedule)  # type: ignore
        self.report_horizons = tuple(int(h) for h in self.report_horizons)
        if len(self.horizon_schedule) != 4 or self.horizon_schedule[2] < 1 \
                or self.horizon_schedule[3] < self.horizon_schedule[2]:
            raise ValueError("agent.mbpo.horizon_schedule must be [start_epoch, end_epoch, "
                             f"min_h, max_h] with 1 <= min_h <= max_h, got "
                             f"{list(self.horizon_schedule)}")
        if self.rollout_every is not None and self.rollout_every < 1:
            raise ValueError(f"agent.mbpo.rollout_every must be >= 1 or null, got "
                             f"{self.rollout_every}")
        for name in ("model_train_every", "rollout_batch", "epoch_length", "retain_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"agent.mbpo.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.real_ratio <= 1.0:
            raise ValueError(f"agent.mbpo.real_ratio must be in [0, 1], got {self.real_ratio}")
        if not 0.0 <= self.goal_relabel <= 1.0:
            raise ValueError(f"agent.mbpo.goal_relabel must be in [0, 1], got {self.goal_relabel}")
        if self.penalty_coef < 0:
            raise ValueError(f"agent.mbpo.penalty_coef must be >= 0, got {self.penalty_coef}")
        if self.penalty_anneal_steps < 0:
            raise ValueError("agent.mbpo.penalty_anneal_steps must be >= 0, got "
                             f"{self.penalty_anneal_steps}")

    @property
    def rollout_period(self) -> int:
        """Env steps between model rollouts."""
        return self.rollout_every or self.model_train_every

    def model_buffer_capacity(self, horizon: int) -> int:
        """Retention epochs x rollouts per epoch x rollout batch x horizon (MBPO's sizing)."""
        per_epoch = max(self.epoch_length // self.rollout_period, 1)
        return self.retain_epochs * per_epoch * self.rollout_batch * horizon



@dataclass
class MOPOConfig:
    """Offline pretraining (Yu et al. 2020, appendix: h in 1-5, lambda in 0.5-5 per dataset)."""

    penalty_coef: float = 1.0  # lambda: reward - lambda * max_i ||Sigma_i(s, a)||
    horizon: int = 5  # h: model steps per branch
    rollout_batch: int = 50_000  # dataset start states per rollout
    rollout_every: int = 1_000  # SAC updates between rollouts
    retain_rollouts: int = 5  # rollouts kept in the model buffer
    real_ratio: float = 0.05  # fraction of dataset transitions in each SAC batch
    gradient_steps: int = 100_000  # SAC updates in all
    eval_every: int = 5_000  # SAC updates between evaluations in the twin
    model_max_epochs: int = 1_000  # epoch cap of the (early-stopped) ensemble fit

    def __post_init__(self) -> None:
        for name in ("horizon", "rollout_batch", "rollout_every", "retain_rollouts",
                     "gradient_steps", "eval_every", "model_max_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"agent.mopo.{name} must be >= 1, got {getattr(self, name)}")
        if self.penalty_coef < 0:
            raise ValueError(f"agent.mopo.penalty_coef must be >= 0, got {self.penalty_coef}")
        if not 0.0 <= self.real_ratio <= 1.0:
            raise ValueError(f"agent.mopo.real_ratio must be in [0, 1], got {self.real_ratio}")


@dataclass
class FinetuneConfig:
    """What ``init_from=<run>`` loads and how online training continues from it."""

    load_optimizers: bool = True  # also load SAC's Adam states (else fresh optimizers)
    seed_replay: bool = True  # start the replay with the pretrained run's (offline) data
    penalty_coef: float | None = None  # lambda to start from; None: the pretrained run's
    penalty_anneal_steps: int = 2_000  # env steps over which lambda falls to 0

    def __post_init__(self) -> None:
        if self.penalty_anneal_steps < 0:
            raise ValueError("agent.finetune.penalty_anneal_steps must be >= 0, got "
                             f"{self.penalty_anneal_steps}")
        if self.penalty_coef is not None and self.penalty_coef < 0:
            raise ValueError(f"agent.finetune.penalty_coef must be >= 0, got {self.penalty_coef}")


# ------------------------------------------------------------------------------- pretrain



WANDB_MODES = ("offline", "online", "disabled")



@dataclass
class LoggerConfig:
    """Where metrics go besides ``metrics.jsonl``."""

    wandb: str = "offline"  # offline (sync later with `wandb sync`), online or disabled
    project: str = "mbpo-arm"  # wandb project name
    progress: bool = True  # print progress lines on the terminal

    def __post_init__(self) -> None:
        if self.wandb not in WANDB_MODES:
            raise ValueError(f"logger.wandb={self.wandb!r} is not allowed; "
                             f"choose one of {', '.join(WANDB_MODES)}")


PLANNERS = ("cem",)  # agent.act.planner: null (the policy acts) or cem


@dataclass
class PlannerConfig:
    """How the agent acts (``agent.act``): the policy, or CEM-MPC over the learned ensemble
    (Chua et al. 2018, PETS; Sikchi et al. 2021, LOOP; Hansen et al. 2024, TD-MPC2).
    Defaults are PETS's (population 500, 5 iterations, 10% elites, horizon 15)."""

    planner: str | None = None  # null: the policy acts (MBPO as it was); cem: plan each step
    population: int = 500  # sampled action sequences per CEM iteration (PETS)
    iterations: int = 5  # CEM iterations per plan (PETS)
    elite_fraction: float = 0.1  # share of the population refitting the sampling Gaussian (PETS)
    # model steps per plan; null: 15 without a critic (agent=pets, PETS), 3 with the critic's
    # value at the horizon (agent=mbpo: LOOP and TD-MPC2 plan 3 steps)
    horizon: int | None = None
    particles: int = 1  # particles per sequence on each elite member (PETS: 20 over 5 = 4)
    init_std: float = 0.5  # std of the first CEM Gaussian per plan (PETS: (ub - lb)^2 / 16 var)
    momentum: float = 0.1  # weight of the old mean/std in each refit (PETS's alpha)
    policy_fraction: float = 0.05  # share of sequences from the SAC policy (TD-MPC2: 24 of 512)
    respect_shield: bool = False  # sequences leaving the shield's limits count as infeasible
    budget_ms: float = 50.0  # runtime=async: plan time per tick (<= 80% of it); over: the policy

    def __post_init__(self) -> None:
        if self.planner is not None and self.planner not in PLANNERS:
            raise ValueError(f"agent.act.planner={self.planner!r} is not allowed; choose null "
                             f"or one of {list(PLANNERS)}")
        checks = (
            ("population", self.population >= 2, ">= 2"),
            ("iterations", self.iterations >= 1, ">= 1"),
            ("elite_fraction", 0 < self.elite_fraction <= 1, "in (0, 1]"),
            ("horizon", self.horizon is None or self.horizon >= 1, ">= 1 or null"),
            ("particles", self.particles >= 1, ">= 1"),
            ("init_std", self.init_std > 0, "> 0"),
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("policy_fraction", 0 <= self.policy_fraction < 1, "in [0, 1)"),
            ("budget_ms", self.budget_ms > 0, "> 0"),
        )
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"agent.act.{name} must be {allowed}, "
                                 f"got {getattr(self, name)!r}")

    @property
    def elites(self) -> int:
        """Sequences that refit the Gaussian (at least one)."""
        return max(1, int(round(self.elite_fraction * self.population)))

    def plan_horizon(self, with_value: bool) -> int:
        """``horizon``, or its default: 3 with a value at the end, 15 without."""
        return self.horizon if self.horizon is not None else (3 if with_value else 15)
