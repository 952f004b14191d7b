"""End-to-end training on the synthetic identity (CPU, `test-tiny`): it learns, the mouth follows the audio,
checkpoints resume exactly, and Ctrl-C saves a checkpoint."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gt_runtime._raster_cpu", reason="the C++ rasterizer is not built (python setup.py build_ext --inplace)")

from gt_train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, load_model  # noqa: E402
from gt_train.config import TrainConfig  # noqa: E402
from gt_train.trainer import Trainer, train  # noqa: E402

# test-tiny, shortened so that the whole file stays around two minutes on 2 cores
ITERS = (150, 250)


@pytest.fixture(scope="module")
def synth(speech_identity):
    return speech_identity


@pytest.fixture(scope="module")
def trained(synth, tmp_path_factory):
    """(trainer after training, val PSNR of the initial model)."""
    cfg = TrainConfig.from_preset("test-tiny", data=synth, out=tmp_path_factory.mktemp("e2e") / "run",
                                  iterations_canonical=ITERS[0], iterations_deform=ITERS[1])
    tr = Trainer(cfg)
    psnr0 = float(np.mean([_psnr(tr.render_val(t, canonical_only=True), tr.data.frame(t).image) for t in tr.data.val_idx]))
    diff0 = _loud_silent_diff(tr)
    tr.run()
    return tr, psnr0, diff0


def _psnr(a, b):
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def _loud_silent_frames(tr):
    """-> (t_loud, t_silent): training frames with the widest and the closed ground-truth mouth."""
    mo = np.asarray(tr.data.ds.ground_truth["mouth_open"])
    idx = np.asarray(tr.data.train_idx)
    return int(idx[np.argmax(mo[idx])]), int(idx[np.argmin(mo[idx])])


def _loud_silent_diff(tr):
    """Mean |render(loud window) - render(silent window)| in the lip box of one val frame (same pose, blink)."""
    t_loud, t_silent = _loud_silent_frames(tr)
    t = tr.data.val_idx[len(tr.data.val_idx) // 2]
    a = tr.render_val(t, audio=tr.data.audio_window(t_loud))
    b = tr.render_val(t, audio=tr.data.audio_window(t_silent))
    x0, y0, x1, y1 = tr.data.lip_boxes[t]
    return float((a - b)[y0:y1, x0:x1].abs().mean())


@pytest.mark.slow
def test_val_psnr_rises_and_outputs_exist(trained):
    tr, psnr0, _ = trained
    run = tr.run_dir
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["full"]["psnr"] >= psnr0 + 5.0, (psnr0, metrics)
    assert metrics["canonical"]["psnr"] >= psnr0 + 5.0, (psnr0, metrics)
    assert metrics["num_gaussians"] <= tr.cfg.max_gaussians
    assert (run / "config.json").is_file() and (run / "curves.png").stat().st_size > 1000
    assert sorted(p.name for p in (run / "val").glob("*.png"))
    saved = json.loads((run / "config.json").read_text())
    assert saved["iterations_canonical"] == ITERS[0] and saved["model"]["sh_degree"] == tr.cfg.model.sh_degree
    ck = latest_checkpoint(run)
    assert ck.name == f"it_{sum(ITERS):07d}.pt"


@pytest.mark.slow
def test_mouth_follows_audio(trained):
    """The lip box differs between a loud and a silent audio window (same frame, pose and blink).

    Threshold: 6 % of the ground-truth change of the lip box between the widest-open and the closed training
    frames (mean abs over the box: 0.089 on this dataset). Measured with this schedule over seeds 0-3: 16 %,
    33 %, 50 %, 43 % of it, so the weakest seed has a 2.6x margin (training is chaotic: another CPU's float
    rounding moves the result like another seed). A model that ignores the audio gives ~0.1 %, and the untrained
    model (deformation heads start near zero) ~0.01 %: the second bound asks for 5x that.
    """
    tr, _, diff0 = trained
    diff = _loud_silent_diff(tr)
    t_loud, t_silent = _loud_silent_frames(tr)
    fl, fs = tr.data.frame(t_loud), tr.data.frame(t_silent)
    x0, y0, x1, y1 = fl.lip_box
    gt_diff = float((fl.image - fs.image)[y0:y1, x0:x1].abs().mean())
    assert diff > 0.06 * gt_diff, (diff, gt_diff, diff0)
    assert diff > 5 * diff0, (diff, diff0)


@pytest.mark.slow
def test_export_pieces(trained):
    tr, _, _ = trained
    model, cfg = load_model(tr.run_dir)
    arrays = model.export_arrays()
    N, K = model.num_gaussians, (cfg.model.sh_degree + 1) ** 2
    assert arrays["sh"].shape == (N, K, 3) and arrays["queries"].shape == (N, 64)
    t = tr.data.val_idx[0]
    with torch.no_grad():
        tokens = model.forward_tokens(tr.data.audio_window(t)[None], tr.data.blink[t][None], tr.data.c2w[t][None])
        offs = model.deform(tokens, torch.from_numpy(arrays["queries"]))
        full = model(tr.data.audio_window(t)[None], tr.data.blink[t][None], tr.data.c2w[t][None])
    assert tokens.shape == (1, 4, 64) and offs[3].shape == (1, N, 3 * K)
    assert torch.allclose(full["means"][0], torch.from_numpy(arrays["means"]) + offs[0][0], atol=1e-6)
    assert torch.allclose(full["sh"][0], torch.from_numpy(arrays["sh"]) + offs[3][0].view(N, K, 3), atol=1e-6)


def _tiny(data, out, **kw):
    kw = {"iterations_canonical": 8, "iterations_deform": 4, "resolution": 32, **kw}
    return TrainConfig.from_preset("test-tiny", data=data, out=out, max_init_points=400,
                                   checkpoint_every=5, val_every=6, **kw)


def test_interrupt_saves_and_resume_matches_uninterrupted_run(synth, tmp_path, monkeypatch):
    monkeypatch.setenv("GT_QUIET", "1")
    ref = train(_tiny(synth, tmp_path / "ref"))
    ref_state = load_checkpoint(latest_checkpoint(ref))

    def stop_at_10(info):
        if info["iteration"] == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_tiny(synth, tmp_path / "run"), callback=stop_at_10)
    names = [p.name for p in list_checkpoints(tmp_path / "run")]
    assert names == ["it_0000005.pt", "it_0000010.pt"], names  # periodic + the one Ctrl-C saved
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "it_0000010.pt")["iteration"] == 10

    seen = []
    train(_tiny(synth, tmp_path / "run", resume=True), callback=lambda info: seen.append(info["iteration"]))
    assert seen == [11, 12]
    got = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert got["iteration"] == ref_state["iteration"] == 12
    for k, v in ref_state["model"].items():
        assert torch.equal(v, got["model"][k]), k  # deterministic: the resumed run is the uninterrupted run


def test_same_seed_same_parameters(synth, tmp_path, monkeypatch):
    """Bit-identical through train() and through Trainer.run() (which sets the thread count itself): at 64 px
    the rasterizer's backward spans several tiles, so a second OpenMP thread would change the sums."""
    monkeypatch.setenv("GT_QUIET", "1")
    cfg = lambda out: _tiny(synth, out, resolution=64, iterations_canonical=24, iterations_deform=6)
    a = load_checkpoint(latest_checkpoint(train(cfg(tmp_path / "a"))))
    b = load_checkpoint(latest_checkpoint(Trainer(cfg(tmp_path / "b")).run()))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
