"""FP16 mixed precision and INT8 dynamic quantisation of an exported deform graph."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxconverter_common")


@pytest.fixture(scope="module")
def graph():
    """(model, deform ModelProto) of a small random GaussianTalker (2 layers, SH degree 1)."""
    from gt_export.onnx_export import export_deform
    from gt_train.config import ModelConfig
    from gt_train.model import GaussianTalker

    torch.manual_seed(0)
    pts = np.random.default_rng(0).normal(0, 0.05, (600, 3)).astype(np.float32)
    model = GaussianTalker(ModelConfig(sh_degree=1), pts).eval()
    with torch.no_grad():
        for h in model.deform.heads.values():
            h.fc2.weight.mul_(3.0)
    return model, export_deform(model)[0]


def _run(m, feeds):
    data = m if isinstance(m, bytes) else m.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)


def _feeds(model, bsz=3):
    q = model.export_arrays()["queries"]
    return {"tokens": np.random.default_rng(1).standard_normal((bsz, 4, 64)).astype(np.float32), "queries": q}


def test_fp16_mixed_precision_structure(graph):
    from gt_export.precision import fp16_block_list, to_fp16

    _, m32 = graph
    m16 = to_fp16(m32)
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert all(v.type.tensor_type.elem_type == f32 for v in (*m16.graph.input, *m16.graph.output))
    # GEMM weights are FP16; LayerNorm / Softmax / residual adds stay FP32 (their inputs are cast back)
    assert any(i.data_type == f16 for i in m16.graph.initializer)
    types = {}
    for vi in (*m16.graph.value_info, *m16.graph.input, *m16.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    ln = [n for n in m16.graph.node if n.op_type == "LayerNormalization"]
    sm = [n for n in m16.graph.node if n.op_type == "Softmax"]
    assert len(ln) == 4 and len(sm) == 2
    init = {i.name: i.data_type for i in m16.graph.initializer}
    for n in ln:
        assert init.get(n.input[1], f32) == f32  # gamma FP32
    blocked = set(fp16_block_list(m32))
    assert len(blocked) == 4  # 2 residual adds per layer
    assert any(n.op_type == "Cast" for n in m16.graph.node)


def test_fp16_close_to_fp32(graph):
    from gt_export.precision import to_fp16

    model, m32 = graph
    feeds = _feeds(model)
    ref = _run(m32, feeds)
    got = _run(to_fp16(m32), feeds)
    for r, g in zip(ref, got):
        assert g.dtype == np.float32 and g.shape == r.shape
        assert np.abs(g - r).max() <= 5e-3 * max(1.0, np.abs(r).max())


def test_int8_dynamic(graph):
    from gt_export.precision import to_int8

    model, m32 = graph
    q8 = to_int8(m32)
    ops = {n.op_type for n in onnx.load_from_string(q8).graph.node}
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
    feeds = _feeds(model, 2)
    ref = _run(m32, feeds)
    got = _run(q8, feeds)
    for r, g in zip(ref, got):
        assert g.shape == r.shape
        err = np.abs(g - r)
        assert err.mean() <= 0.02 * max(1.0, np.abs(r).max()), err.mean()
    assert len(q8) < len(m32.SerializeToString())
