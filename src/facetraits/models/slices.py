"""Which attributes a task of a multi-node launch fits. No Lightning here: the launcher's variables must be gone
before Lightning is imported, which reads the process's rank from them once, for good."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence

from facetraits.errors import ConfigError


def task_slot(environ: Mapping[str, str]) -> tuple[int, int]:
    """(rank, world size) of this task under torchrun (RANK, WORLD_SIZE) or SLURM (SLURM_PROCID, SLURM_NTASKS);
    (0, 1) outside either."""
    for rank_key, world_key in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank_key in environ and world_key in environ:
            try:
                rank, world = int(environ[rank_key]), int(environ[world_key])
            except ValueError:
                raise ConfigError(
                    f"${rank_key}={environ[rank_key]!r}, ${world_key}={environ[world_key]!r}: expected whole numbers"
                ) from None
            return rank, world
    return 0, 1


# What makes Lightning take a process for one rank of a DDP job (torchelastic or SLURM detection).
LAUNCHER_VARIABLES = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "TORCHELASTIC_RUN_ID",
    "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID",
)  # fmt: skip


def detach_from_launcher(environ: MutableMapping[str, str]) -> None:
    """A slice's fits are independent single-process fits: left in place, the launcher's rank variables would make
    Lightning wait for the other tasks as if they were ranks of one DDP job."""
    for key in LAUNCHER_VARIABLES:
        environ.pop(key, None)


def checked_slot(rank: int, world: int) -> tuple[int, int]:
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"task rank {rank} of {world} tasks: the rank must be in 0..{world - 1}")
    return rank, world


def attribute_slice(attributes: Sequence[str], rank: int, world: int) -> list[str]:
    """Task `rank` of `world` takes every world-th attribute from its rank: the tasks split the list evenly and no two
    take the same attribute."""
    rank, world = checked_slot(rank, world)
    return list(attributes[rank::world])
