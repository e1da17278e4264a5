"""Every shipped training config composes; every experiment instantiates and runs one step (house style §4.4)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.training import cli_helpers as ch
from vexpress.utils.paths import CONF_DIR

#: Config groups of the training app (the data group belongs to the data module's owner and is tested there, but
#: its options are composed here too).
GROUPS = ["paths", "data", "model", "model/vae", "noise_scheduler", "dropout", "stage", "curriculum", "trainer",
          "logger", "callbacks", "experiment", "debug", "hydra", "launcher"]
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def _has_submitit() -> bool:
    try:
        return importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None
    except ModuleNotFoundError:
        return False


HAS_SUBMITIT = _has_submitit()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


CASES = [(g, o) for g in GROUPS for o in options(g)]


@pytest.mark.parametrize("group,option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_every_option_composes_and_resolves(group, option, tmp_path):
    """Every option composes, and the first stage's config (as the curriculum loop builds it) resolves."""
    from vexpress.training.runner import CurriculumRunner

    if group == "launcher" and option == "slurm" and not HAS_SUBMITIT:
        pytest.skip(reason="hydra-submitit-launcher is not installed (pip install -e '.[slurm]')")
    ov = ch.overrides(tmp_path, [f"{group}={option}"] if group != "hydra" else [], small_data=group != "data")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        from hydra import compose

        cfg = compose(config_name="train", overrides=ov, return_hydra_config=group in ("hydra", "launcher"))
        if group in ("hydra", "launcher"):
            assert cfg.hydra.run.dir
            cfg = compose(config_name="train", overrides=ov)
        container = OmegaConf.to_container(CurriculumRunner(cfg, ov).stage_config(0), resolve=True)
    assert container["stage"]["name"] and int(container["trainer"]["max_steps"]) >= 1
    assert container["data"]["num_frames"] == container["stage"]["num_frames"]


def test_stage_folders_come_from_the_curriculum_layout(tmp_path):
    """No config spells a run folder: the trainer, checkpoint and export callbacks and the loggers of a stage
    interpolate the keys the curriculum loop sets from ``Curriculum.stage_paths``."""
    from vexpress.training.runner import CurriculumRunner

    ov = ch.overrides(tmp_path, ["curriculum=vexpress", "logger=many"])
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        from hydra import compose

        runner = CurriculumRunner(compose(config_name="train", overrides=ov), ov)
        c = OmegaConf.to_container(runner.stage_config(0), resolve=True)
    curriculum = runner.curriculum
    assert c["stage_id"] == "0_image" and c["stage_dir"] == str(curriculum.stage_dir(tmp_path, 0))
    assert c["callbacks"]["model_checkpoint"]["dirpath"] == str(curriculum.checkpoint_dir(tmp_path, 0))
    assert c["callbacks"]["stage_export"]["directory"] == str(curriculum.export_dir(tmp_path, 0))
    assert c["trainer"]["default_root_dir"] == c["stage_dir"]
    assert c["logger"]["csv"]["version"] == "0_image" and c["logger"]["wandb"]["name"].endswith("/0_image")
    assert runner.summary_path == tmp_path / "train_summary.json"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_stages_instantiate(experiment, tmp_path):
    """The curriculum, each stage spec and the dropout rates of every experiment are valid objects."""
    from vexpress.training.dropout import DropSchedule
    from vexpress.training.runner import check_stage_names, compose_stage_config, with_stage_overrides

    ov = ch.overrides(tmp_path, [f"experiment={experiment}"])
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        from hydra import compose

        cfg = compose(config_name="train", overrides=ov)
        curriculum = instantiate(cfg.curriculum, _convert_="all")
        check_stage_names(list(curriculum.stages) + list(curriculum.stage_overrides))
        for name in curriculum.stages:
            scfg = compose_stage_config(ov, name)
            spec = instantiate(with_stage_overrides(scfg.stage, curriculum.stage_overrides.get(name)))
            assert spec.name == name
            DropSchedule.from_config(OmegaConf.to_container(scfg.dropout.rates, resolve=True))


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_fast_dev_run(experiment, tmp_path, synthetic_cache):
    """Every experiment runs one step of every stage with the tiny model on the synthetic data."""
    ov = ch.overrides(tmp_path, [f"experiment={experiment}", *ch.TINY, "debug=fdr"], cache=synthetic_cache)
    results = ch.run(ov)
    assert results and all(r.get("global_step") == 1 for r in results)
    assert all(Path(r["export"], "DONE").is_file() for r in results)


@pytest.fixture(scope="module")
def synthetic_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_demo_ablations_have_no_conditional_dropout(tmp_path):
    """The demo ablations inherit the demo's training numbers but none of the recipe's dropout."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        from hydra import compose

        def rates(experiment: str, stage: str) -> dict:
            cfg = compose(config_name="train", overrides=ch.overrides(tmp_path, [f"experiment={experiment}",
                                                                                 f"stage={stage}"]))
            return OmegaConf.to_container(cfg.dropout.rates, resolve=True)

        for stage in ("image", "audio_motion", "joint"):
            for ablation in ("demo_progressive_no_dropout", "demo_joint_only"):
                r = rates(ablation, stage)
                assert r["reference"] == 0 and r["kps"] == 0 and r["uncond"] == 0.1
        joint = rates("demo_recipe", "joint")
        assert joint["reference"] > 0 and joint["kps"] > 0
        assert rates("demo_recipe", "audio_motion")["reference"] == 0


def test_demo_joint_only_ablation_has_the_recipe_budget(tmp_path):
    """The joint-only ablation sees as many training frames as the recipe's three stages together."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        from hydra import compose

        def frames(experiment: str) -> int:
            cfg = compose(config_name="train", overrides=ch.overrides(tmp_path, [f"experiment={experiment}"]))
            total = 0
            for name in cfg.curriculum.stages:
                st = compose(config_name="train", overrides=ch.overrides(
                    tmp_path, [f"experiment={experiment}", f"stage={name}"]))
                o = {**OmegaConf.to_container(st.stage, resolve=True),
                     **OmegaConf.to_container(cfg.curriculum.stage_overrides.get(name, {}), resolve=True)}
                total += int(o["max_steps"]) * int(o["batch_size"]) * int(o["num_frames"])
            return total

        assert frames("demo_joint_only") == frames("demo_recipe") == frames("demo_progressive_no_dropout")
