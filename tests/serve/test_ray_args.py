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
