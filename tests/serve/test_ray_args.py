"""The args every `gt serve --ray` replica rebuilds its ServeConfig from: every server option reaches the replicas
(--ice-server included), and the relay switch is one of them (no Ray needed)."""
from pathlib import Path

import pytest

from gt_serve import ServeConfig
from gt_serve.ray_serve import RayOptions, app_args, config_from_args, write_config


def test_ice_servers_reach_replicas():
    ice = ["stun:stun.example.org:3478", "turn:user:pass@turn.example.org"]
    cfg = ServeConfig(ice_servers=ice, jpeg_quality=70, max_sessions=3)
    args = app_args(cfg, RayOptions())
    assert args["ice_servers"] == ice and "relay" not in args
    back = config_from_args(args)
    assert back.ice_servers == ice and back.jpeg_quality == 70 and back.max_sessions == 3


def test_relay_switch_and_config_file(tmp_path: Path):
    pytest.importorskip("yaml")
    args = app_args(ServeConfig(ice_servers=["stun:stun.example.org"]), RayOptions(relay=False))
    assert args["relay"] is False
    config_from_args(args)   # accepted by the replica's parser
    conf = write_config(tmp_path / "gt.yaml", ServeConfig(ice_servers=["stun:stun.example.org"]), RayOptions())
    assert conf["applications"][0]["args"]["ice_servers"] == ["stun:stun.example.org"]


def test_autoscaling_on_sessions_reaches_the_deployment_and_config_file(tmp_path: Path):
    """--autoscale MIN:MAX: Ray Serve scales on ongoing requests, one per session (a WebSocket's whole life)."""
    from gt_serve.ray_serve import deployment_options

    cfg = ServeConfig(max_sessions=8)
    opts = deployment_options(cfg, RayOptions(autoscale=(1, 4), num_cpus=2, num_gpus=0.25).check())
    assert opts["max_ongoing_requests"] == 8 and "num_replicas" not in opts
    assert opts["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 6.0}
    assert opts["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 0.25}
    assert deployment_options(cfg, RayOptions(replicas=3))["num_replicas"] == 3
    pytest.importorskip("yaml")
    import yaml

    write_config(tmp_path / "gt.yaml", cfg, RayOptions(autoscale=(0, 2), target_sessions=3))
    dep = yaml.safe_load((tmp_path / "gt.yaml").read_text())["applications"][0]["deployments"][0]
    assert dep["autoscaling_config"] == {"min_replicas": 0, "max_replicas": 2, "target_ongoing_requests": 3}


@pytest.mark.parametrize("bad", [(2, 1), (0, 0), (-1, 2)])
def test_bad_autoscale_is_one_line_error(bad):
    from gt_runtime.errors import InputError

    with pytest.raises(InputError, match="--autoscale") as e:
        RayOptions(autoscale=bad).check()
    assert "\n" not in str(e.value)
