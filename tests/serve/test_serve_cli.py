"""`gt serve` options of the Ray deployment are refused without --ray (they were silently ignored).

(Test names avoid the word "ray": `-k 'not ray'` deselects the Ray Serve tests, not these.)"""
import pytest

from gt_cli.app import main


def _gt(capsys, *argv) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize("args", [("--replicas", "2"), ("--autoscale", "1:4"), ("--num-cpus", "2"), ("--num-gpus", "0.5"),
                                  ("--address", "ray://head:10001"), ("--max-avatars", "2"), ("--write-config", "gt.yaml")],
                         ids=lambda a: a[0].lstrip("-"))
def test_deployment_option_alone_is_one_line_exit_2(capsys, tmp_path, args):
    code, err = _gt(capsys, "serve", *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2
    assert len(lines) == 1 and f"{args[0]}: the option needs --ray" in lines[0], err
    assert not (tmp_path / "gt.yaml").exists()


def test_deployment_option_at_its_default_value_is_still_refused(capsys):
    """Given on the command line is what counts, even when the value equals the default."""
    code, err = _gt(capsys, "serve", "--replicas", "1")
    assert code == 2 and "--replicas: the option needs --ray" in err


def test_plain_options_reach_the_plain_server_checks(capsys):
    """Without Ray options the plain server's own checks run (a bad port: its one line, not the --ray one)."""
    code, err = _gt(capsys, "serve", "--port", "70000")
    assert code == 2 and "--port 70000" in err and "--ray" not in err
