#!/usr/bin/env python3
"""Generates models/testcam-shapes.onnx: a tiny ONNX model in the YOLOv8 detect output
format ([1, 4 + nc, anchors]: cx, cy, w, h in input pixels, then one score per class) that
really finds the shapes the built-in test camera draws, without any training:

- input `images` [1, 3, 640, 640], RGB 0..1, letterboxed (pad 114), as Ultralytics exports;
- a 1x1 convolution + sigmoid turns colour into one mask per class (red circle, green
  square, yellow bar; see gateway/src/testcam/scene.rs);
- average pooling (160 px windows, stride 16) of mask, x*mask, y*mask, x^2*mask, y^2*mask
  gives each window's mass, centroid and spread (done as 16x16 blocks, then 10x10 blocks of
  those: the same windows, ~60x less work than one 160x160 pool); a solid shape of width w has an x variance
  of w^2/12, so w = sqrt(12 var);
- score = (mass / the shape's full area, capped at 1)^4: the window holding the whole shape
  scores ~1 and wins NMS; windows that cut it score far lower;
- anchors = 3 classes x 31 x 31 windows; each anchor scores only its own class.

Class names go into the metadata as Ultralytics writes them (`names`), with `imgsz`.
Run: python3 scripts/make_test_model.py [OUT]   (needs `pip install onnx numpy`)
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZE = 640
KERNEL, STRIDE = 160, 16
CELLS = (SIZE - KERNEL) // STRIDE + 1  # 31
NAMES = ["circle", "square", "bar"]
# Full areas in the 640 letterbox of a 1280x720 picture (scale 0.5): circle r=30, square
# 60x60, bar 120x60 (scene.rs: unit = min(w, h) / 6 = 120 px at 720p).
AREAS = np.array([np.pi * 30 * 30, 60 * 60, 120 * 60], dtype=np.float32)
SHARPNESS = 20.0


def const(name, array):
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def build():
    nodes, inits = [], []

    def node(op, inputs, output, **attrs):
        nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    # Colour -> mask logits per class (rows: R, G, B weights), sharpened.
    w = np.array([
        [1.0, -1.0, -1.0],    # red: R - G - B > 0.3
        [-1.0, 1.0, 0.0],     # green: G - R > 0.4
        [0.5, 0.5, -1.0],     # yellow: (R + G) / 2 - B > 0.55
    ], dtype=np.float32) * SHARPNESS
    b = np.array([-0.3, -0.4, -0.55], dtype=np.float32) * SHARPNESS
    inits += [const("mask_w", w.reshape(3, 3, 1, 1)), const("mask_b", b)]
    logits = node("Conv", ["images", "mask_w", "mask_b"], "logits")
    mask = node("Sigmoid", [logits], "mask")

    # Pixel-centre coordinates, broadcast over rows / columns.
    coords = np.arange(SIZE, dtype=np.float32) + 0.5
    inits += [const("xs", coords.reshape(1, 1, 1, SIZE)), const("ys", coords.reshape(1, 1, SIZE, 1))]
    mx = node("Mul", [mask, "xs"], "mx")
    my = node("Mul", [mask, "ys"], "my")
    mxx = node("Mul", [mx, "xs"], "mxx")
    myy = node("Mul", [my, "ys"], "myy")
    stack = node("Concat", [mask, mx, my, mxx, myy], "stack", axis=1)  # [1, 15, 640, 640]
    blocks = node("AveragePool", [stack], "blocks", kernel_shape=[STRIDE, STRIDE], strides=[STRIDE, STRIDE])  # 40x40
    pooled = node("AveragePool", [blocks], "pooled", kernel_shape=[KERNEL // STRIDE] * 2, strides=[1, 1])  # 31x31
    inits.append(numpy_helper.from_array(np.array([3, 3, 3, 3, 3], dtype=np.int64), "split5"))
    nodes.append(helper.make_node("Split", ["pooled", "split5"], ["m", "sx", "sy", "sxx", "syy"], axis=1))

    inits += [const("eps", 1e-6), const("twelve", 12.0), const("area", (KERNEL * KERNEL) / AREAS.reshape(1, 3, 1, 1)),
              const("one", 1.0)]
    denom = node("Add", ["m", "eps"], "denom")
    cx = node("Div", ["sx", denom], "cx")
    cy = node("Div", ["sy", denom], "cy")

    def spread(s2, c, tag):
        ex2 = node("Div", [s2, denom], f"e{tag}2")
        c2 = node("Mul", [c, c], f"{tag}c2")
        var = node("Relu", [node("Sub", [ex2, c2], f"var{tag}_raw")], f"var{tag}")
        return node("Sqrt", [node("Mul", [var, "twelve"], f"v12{tag}")], f"size{tag}")

    bw = spread("sxx", cx, "x")
    bh = spread("syy", cy, "y")
    fill = node("Min", [node("Mul", ["m", "area"], "fill_raw"), "one"], "fill")
    # fill^4: a window holding the whole shape scores ~1, one cutting it far less.
    fill2 = node("Mul", [fill, fill], "fill2")
    score = node("Mul", [fill2, fill2], "score")  # [1, 3, 31, 31]

    # Flatten to anchors: class-major, then cells. Boxes -> [1, 1, 3*C*C] each.
    n = 3 * CELLS * CELLS
    inits.append(numpy_helper.from_array(np.array([1, 1, n], dtype=np.int64), "row_shape"))
    rows = [node("Reshape", [t, "row_shape"], f"{t}_row") for t in (cx, cy, bw, bh)]
    boxes = node("Concat", rows, "boxes", axis=1)  # [1, 4, n]
    # Class rows: anchor (c, i) scores only class c: score[c, i] * eye[j, c].
    inits.append(numpy_helper.from_array(np.array([1, 1, 3, CELLS * CELLS], dtype=np.int64), "score_shape"))
    inits.append(const("eye", np.eye(3, dtype=np.float32).reshape(1, 3, 3, 1)))
    inits.append(numpy_helper.from_array(np.array([1, 3, n], dtype=np.int64), "cls_shape"))
    s4 = node("Reshape", [score, "score_shape"], "score4")
    cls4 = node("Mul", [s4, "eye"], "cls4")
    cls = node("Reshape", [cls4, "cls_shape"], "classes")
    node("Concat", [boxes, cls], "output0", axis=1)  # [1, 7, n]

    graph = helper.make_graph(
        nodes,
        "sightline-testcam-shapes",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + len(NAMES), n])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="sightline")
    model.ir_version = 8
    names = "{" + ", ".join(f"{i}: '{name}'" for i, name in enumerate(NAMES)) + "}"
    for key, value in {"names": names, "imgsz": f"[{SIZE}, {SIZE}]", "task": "detect",
                       "description": "Sightline test camera shape detector (generated, not trained)"}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "models/testcam-shapes.onnx"
    onnx.save(build(), out)
    print(f"wrote {out}")
