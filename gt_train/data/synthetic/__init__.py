"""The synthetic identity: a textured 3-D head driven by real speech, with exact ground truth.

`make_synthetic_identity(SyntheticConfig(out_dir))` writes an identity dataset
(README: "Identity dataset format", validated by `gt_train.data.format.load_identity`) of a person
whose jaw follows the loudness of a speech clip, whose eyelids blink at random times
and whose head moves slightly in front of a fixed camera. Tests and demos train on
it and check that the model opens the mouth when the speech says so.

The person: scikit-image's astronaut photo (a real face, public domain) projected on
a parametric 3-D head mesh (one elliptical ring per photo row, following the photo's
hair-and-face silhouette, plus relief for the nose, brows, eye sockets, cheeks, lips
and chin), rendered by a vectorised numpy z-buffer. The mouth is cut between the lips
and opens onto teeth and a dark cavity; eyelids are painted per frame. The neck and
shoulders are a static layer cut from the same photo, over a blurred background plate.
numpy, scipy, scikit-image and pillow only, no torch.

Conventions:

- World = the head's canonical frame, in metres: x right, y down, z away from the
  camera (the face looks toward -z, i.e. toward a camera placed at negative z), origin
  about 10 cm behind the face, between the eyes.
- Cameras are OpenCV (x right, y down, z forward). The real camera is fixed and sees
  the head origin at (0, -0.03, 1.0) m at rest; as in GaussianTalker the head stays
  canonical and the camera moves: frame i's transform_matrix (camera-to-world) is
  the inverse of the head motion x_cam = R_i x_head + t_i, i.e. [R_i^T | -R_i^T t_i].
- Intrinsics: fl_x = fl_y = 2.5 * size, cx = cy = size / 2; pixel j covers [j, j + 1).
- Landmarks: iBUG-68, pixel (x, y), exact projections of 3-D points of the model.

Byte-identical output for the same config (zip timestamps in ground_truth.npz are fixed).
"""
from gt_train.data.synthetic.identity import SyntheticConfig, make_synthetic_identity

__all__ = ["SyntheticConfig", "make_synthetic_identity"]
