"""Every op of the exported graphs is native to TensorRT's ONNX parser; anything else is named in one line."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from gt_export.graph_check import TRT_NATIVE_OPS, GraphCheckError, check_graph, unsupported_ops  # noqa: E402


@pytest.fixture(scope="module")
def graphs():
    torch = pytest.importorskip("torch")
    from gt_export.onnx_export import export_audio, export_deform
    from gt_export.precision import to_fp16
    from gt_train.config import ModelConfig
    from gt_train.model import GaussianTalker

    torch.manual_seed(0)
    model = GaussianTalker(ModelConfig(sh_degree=2, num_layers=1), np.random.default_rng(0).normal(0, 0.05, (200, 3)))
    d = export_deform(model.eval())[0]
    return {"deform.onnx": d, "deform.fp16.onnx": to_fp16(d), "audio_encoder.onnx": export_audio(model)[0]}


def test_exported_graphs_pass(graphs):
    for name, m in graphs.items():
        ops = check_graph(m, name)
        assert ops <= TRT_NATIVE_OPS and ops & {"MatMul", "Gemm"}
    assert check_graph(graphs["deform.onnx"].SerializeToString(), "bytes")  # bytes work too


def _graph(op_type, domain="", opset=18, **attrs):
    h = onnx.helper
    x = h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])
    y = h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])
    node = h.make_node(op_type, ["x"], ["y"], domain=domain, **attrs)
    imports = [h.make_opsetid("", opset)] + ([h.make_opsetid(domain, 1)] if domain else [])
    return h.make_model(h.make_graph([h.make_node("Relu", ["x"], ["r"]), node], "g", [x], [y]), opset_imports=imports)


@pytest.mark.parametrize("op,domain", [("Unique", ""), ("DynamicQuantizeLinear", ""), ("FusedMatMul", "com.microsoft")])
def test_unsupported_op_is_named(op, domain):
    m = _graph(op, domain)
    with pytest.raises(GraphCheckError) as ei:
        check_graph(m, "bad.onnx")
    msg = str(ei.value)
    assert "\n" not in msg and "bad.onnx" in msg and op in msg and "|" in msg
    assert unsupported_ops(m) == [f"{domain}::{op}" if domain else op]


def test_ops_inside_subgraphs_are_checked():
    h = onnx.helper
    then = h.make_graph([h.make_node("Unique", ["x"], ["t"])], "then", [], [h.make_tensor_value_info("t", onnx.TensorProto.FLOAT, [2])])
    other = h.make_graph([h.make_node("Identity", ["x"], ["e"])], "else", [], [h.make_tensor_value_info("e", onnx.TensorProto.FLOAT, [2])])
    c = h.make_tensor_value_info("c", onnx.TensorProto.BOOL, [])
    x = h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])
    y = h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])
    g = h.make_graph([h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)], "g", [c, x], [y])
    assert unsupported_ops(h.make_model(g, opset_imports=[h.make_opsetid("", 18)])) == ["Unique"]


def test_old_opset_refused():
    with pytest.raises(GraphCheckError, match="opset 17"):
        check_graph(_graph("Relu", opset=17), "old.onnx")
