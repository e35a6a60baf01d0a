"""Checks the CLI makes before anything runs, so that no run ends with exit 0 and a wrong result.

* :func:`resolve_fit_checkpoint`: a fit resumes only when asked (``--ckpt_path FILE``, or ``last`` for the newest
  resumable checkpoint of the run); a fresh fit refuses fixed checkpoint folders that already hold checkpoints,
  which it would overwrite.
* :func:`check_against_checkpoint`: the networks of a checkpoint must be the config's; a resumed fit must also keep
  its training settings (lr, eta, ...), which a resume would otherwise silently take from the checkpoint.
* :func:`check_training_length`: the cosine schedule needs a finite length, and a fit must train.
* :func:`check_data_against_checkpoint`: a checkpoint is evaluated on the data it was trained for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from pkkd_lightning.run_dirs import checkpoints_in, newest, resumable_checkpoints

#: Module arguments that decide the networks' structure: a checkpoint and the config must agree on them.
STRUCTURAL_KEYS = (
    "arch", "mode", "teacher_training", "distill_points", "linear_transform", "transform_input", "keep",
)  # fmt: skip
#: Module arguments a resumed fit may change: how the layers are computed and how often a diagnostic is logged.
FREE_ON_RESUME = ("num_classes", "adder_backend", "grad_share_every_n_steps")
#: Callback sections whose ``dirpath`` is a checkpoint folder.
CHECKPOINT_SECTIONS = ("checkpoint", "last_checkpoint", "preemption")
#: Data-module arguments that change what the network sees; a checkpoint is tested only on the same.
DATA_FORMAT_KEYS = ("image_size", "channels")


def fixed_checkpoint_folders(config: Mapping[str, Any]) -> list[str]:
    """The checkpoint folders the config fixes (``<section>.dirpath``), in section order, without repeats."""
    folders = [(config.get(section) or {}).get("dirpath") for section in CHECKPOINT_SECTIONS]
    return list(dict.fromkeys(f for f in folders if f))


def resolve_fit_checkpoint(ckpt_path: str | None, fixed_folders: Sequence[str], root_dir: str) -> str | None:
    """The checkpoint a ``fit`` resumes from: ``ckpt_path`` itself, the newest resumable one for ``last``, or none.

    Raises:
        ValueError: a fresh fit (no ``ckpt_path``) would write into a fixed checkpoint folder that already holds
            checkpoints (another run's, or this run's before a requeue).
    """
    if ckpt_path == "last":
        found = newest(resumable_checkpoints(fixed_folders, root_dir))
        places = ", ".join(fixed_folders) or f"{root_dir}/version_*/checkpoints"
        if found is None:
            rank_zero_info(f"ckpt_path=last: no last.ckpt or preempted.ckpt in {places}; starting a new run")
            return None
        rank_zero_info(f"ckpt_path=last: resuming the newest checkpoint in {places}: {found}")
        return str(found)
    if ckpt_path is None:
        for folder in fixed_folders:
            if occupied := checkpoints_in(folder):
                names = ", ".join(p.name for p in occupied[:3])
                raise ValueError(
                    f"checkpoint folder {folder} already holds checkpoints ({names}); a fit without --ckpt_path starts "
                    "a new run and would overwrite them. To continue that run pass --ckpt_path last (or a file); to "
                    "start a new one choose an empty folder"
                )
    return ckpt_path


def check_same_networks(ckpt_path: str, given: dict[str, Any], saved: dict[str, Any]) -> None:
    """Refuse a model config (``given``) whose networks differ from the checkpoint's (``saved`` hyper-parameters)."""
    conflicts = [k for k in STRUCTURAL_KEYS if k in saved and given.get(k) != saved[k]]
    if conflicts:
        listed = ", ".join(f"model.{k}={saved[k]!r}" for k in conflicts)
        asked = ", ".join(f"model.{k}={given.get(k)!r}" for k in conflicts)
        raise ValueError(
            f"ckpt_path {ckpt_path} holds a model with {listed}, but the config asks for {asked}; use the config "
            "(and overrides) the checkpoint was trained with"
        )


def check_against_checkpoint(ckpt_path: str, given: dict[str, Any], saved: dict[str, Any], resuming: bool) -> None:
    """Refuse a model config whose networks differ from the checkpoint's; for a resumed fit, also one whose
    training settings differ; otherwise warn about the values the checkpoint's replace.

    Args:
        ckpt_path: the checkpoint, named in the messages.
        given: the ``model`` section of the parsed config.
        saved: the checkpoint's ``hyper_parameters`` (which LightningCLI then puts in place of ``given``).
        resuming: the checkpoint is resumed by ``fit`` (rather than evaluated).
    """
    check_same_networks(ckpt_path, given, saved)
    changed = {k: v for k, v in saved.items() if k in given and k != "num_classes" and given[k] != v}
    if resuming and (refused := [k for k in changed if k not in FREE_ON_RESUME]):
        listed = "; ".join(f"model.{k}: checkpoint {saved[k]!r}, config {given[k]!r}" for k in refused)
        raise ValueError(
            f"resuming {ckpt_path} continues that run with its own settings, but the config changes them ({listed}). "
            "Drop the changes to resume, or start a new run from its weights with the new settings: "
            f"--warm_start {ckpt_path} (no --ckpt_path)"
        )
    if changed:
        listed = "; ".join(f"model.{k}: {given[k]!r} -> {v!r}" for k, v in changed.items())
        rank_zero_warn(f"the hyper-parameters saved in {ckpt_path} replace the config's: {listed}")


def check_training_length(trainer: Mapping[str, Any], lr_schedule: str) -> None:
    """Refuse ``max_epochs 0`` and an unbounded run (``max_epochs -1`` without ``max_steps``) under cosine."""
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps", -1)
    if max_epochs == 0 or max_steps == 0:
        key = "trainer.max_epochs" if max_epochs == 0 else "trainer.max_steps"
        raise ValueError(f"{key}=0 trains nothing (and would export an untrained student); set it to 1 or more")
    if max_epochs == -1 and max_steps in (-1, None) and lr_schedule == "cosine":
        raise ValueError(
            "trainer.max_epochs=-1 (no limit) cannot be used with model.lr_schedule=cosine, which decays the learning "
            "rate to zero over the run and needs its length: set trainer.max_epochs or trainer.max_steps, or use "
            "model.lr_schedule=constant"
        )


def check_data_against_checkpoint(
    ckpt_path: str, checkpoint: Mapping[str, Any], data_class: str, data_args: Mapping[str, Any],
    num_classes: int, class_names: Sequence[str] | None,
) -> None:  # fmt: skip
    """Refuse to evaluate or resume a checkpoint on other data than it was trained on.

    Compared, where the checkpoint records them: the data module's class, the number of classes, the class names
    and the input format (:data:`DATA_FORMAT_KEYS`). Paths are not compared: data sets move.

    Raises:
        ValueError: naming both sides and the ``--allow_other_data`` override.
    """
    saved_args = checkpoint.get("datamodule_hyper_parameters") or {}
    saved_classes = checkpoint.get("data_classes")
    differences = []
    if (saved_class := saved_args.get("_class_path")) and saved_class != data_class:
        differences.append(f"data module {saved_class} vs {data_class}")
    saved_num = (checkpoint.get("hyper_parameters") or {}).get("num_classes")
    if saved_num is not None and saved_num != num_classes:
        differences.append(f"{saved_num} vs {num_classes} classes")
    elif saved_classes and class_names and list(saved_classes) != list(class_names):
        differences.append(f"class names {_short(saved_classes)} vs {_short(class_names)}")
    for key in DATA_FORMAT_KEYS:
        if key in saved_args and key in data_args and saved_args[key] != data_args[key]:
            differences.append(f"data.init_args.{key} {saved_args[key]!r} vs {data_args[key]!r}")
    if differences:
        raise ValueError(
            f"ckpt_path {ckpt_path} was trained on other data than the config's ({'; '.join(differences)}; checkpoint "
            "vs config), so its metrics here would mean nothing. Use the data config it was trained with, or pass "
            "--allow_other_data true for a deliberate transfer test"
        )


def _short(names: Sequence[str]) -> str:
    return "[" + ", ".join(map(str, names[:4])) + (", ...]" if len(names) > 4 else "]")
