"""Face analysis with mediapipe 0.10.21 (bundled models, works offline): boxes, V-Kps points, 478-point mesh.

:class:`FaceAnalyzer` runs mediapipe's face detector (boxes, scores, face count) and its 478-point face mesh
(``refine_landmarks=True``: the 468 mesh points plus 10 iris points) on RGB uint8 frames and returns one
:class:`Face` per face found, largest first.

The three V-Kps points ``kps`` follow the insightface 5-point definition used by the official release
(``kps[:3]`` = left-in-image eye centre, right-in-image eye centre, nose tip). Mediapipe has no landmark that is
exactly that point, so each one is a fixed rigid combination of a few mesh landmarks (:data:`KPS_WEIGHTS`, it moves
exactly with the face under translation, rotation and scale) with 2-3 coefficients fitted by least squares against
the official insightface points and checked on clips left out of the fit (see ``docs/data.md`` for the measured
distances and :mod:`vexpress.preprocessing.kps_calibration` for the definitions and the fitting procedure).

Modes: ``mode="image"`` treats every frame independently; ``mode="video"`` lets mediapipe track the face from one
frame to the next (steadier landmarks, faster). Call :meth:`FaceAnalyzer.reset` (or use a new analyzer) before the
frames of another video.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from vexpress.errors import InputError

# --------------------------------------------------------------------------------------------------------------
# Mesh landmark indices (mediapipe face mesh topology, 478 points with refine_landmarks=True).
# "Right"/"left" below are in IMAGE terms for a face looking at the camera: the subject's right eye is on the
# left of the image.

#: Outer lip contour, clockwise from the left-in-image mouth corner (61) over the upper lip.
LIPS_OUTER: tuple[int, ...] = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91,
                               146)
#: Inner lip contour (the mouth opening), from the left-in-image inner corner (78) over the upper lip.
LIPS_INNER: tuple[int, ...] = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88,
                               95)
#: All 40 lip landmarks (the mouth region: lip masks use the box of these points).
MOUTH_LANDMARKS: tuple[int, ...] = LIPS_OUTER + LIPS_INNER
#: Mouth corners on the outer contour, (left-in-image, right-in-image).
MOUTH_CORNERS: tuple[int, int] = (61, 291)
#: Inner mouth corners.
MOUTH_INNER_CORNERS: tuple[int, int] = (78, 308)
#: Middle of the upper and the lower lip on the inner contour; their distance is the mouth opening.
UPPER_LIP_INNER: int = 13
LOWER_LIP_INNER: int = 14
#: Middle of the upper and the lower lip on the outer contour.
UPPER_LIP_OUTER: int = 0
LOWER_LIP_OUTER: int = 17
#: Iris centres (refined mesh): left-in-image, right-in-image.
IRIS_CENTERS: tuple[int, int] = (468, 473)
#: Eye contours (16 points each): left-in-image eye, right-in-image eye.
EYE_LEFT_IN_IMAGE: tuple[int, ...] = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
EYE_RIGHT_IN_IMAGE: tuple[int, ...] = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
#: Outer eye corners (left-in-image, right-in-image): their distance is the face scale used by evaluation.
EYE_OUTER_CORNERS: tuple[int, int] = (33, 263)
#: Nose tip.
NOSE_TIP: int = 1
#: Face oval (36 points, clockwise from the forehead centre).
FACE_OVAL: tuple[int, ...] = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
                              152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
#: Eyebrows (left-in-image then right-in-image).
BROWS: tuple[int, ...] = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46, 300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
#: Nose ridge and base.
NOSE: tuple[int, ...] = (168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 98, 327, 64, 294)

#: The landmark subset stored per frame in preprocessed records (order fixed; see docs/data.md): face oval, brows,
#: eyes, irises, nose, lips. ``RECORD_LANDMARKS.index(i)`` maps a mesh index to its column in the record.
RECORD_LANDMARKS: tuple[int, ...] = (FACE_OVAL + BROWS + EYE_LEFT_IN_IMAGE + EYE_RIGHT_IN_IMAGE + IRIS_CENTERS + NOSE
                                     + MOUTH_LANDMARKS)
NUM_MESH_LANDMARKS = 478

# Insightface's eye centres and nose tip as rigid functions of the mesh (fitted with
# vexpress.preprocessing.kps_calibration: POINT_MODELS, least squares on the four official clips with insightface
# points, frames of 512x512):
#   point = sum_n KPS_WEIGHTS[n] * lm[n] + rot90(sum_n KPS_ROT_WEIGHTS[n] * lm[n]),   rot90(x, y) = (-y, x)
# The weights sum to 1 and the rotated ones to 0, so the point moves exactly with the face under translation,
# rotation and scale. Eyes: the middle of the eye corners, pulled toward the nose bridge (168) and offset along
# the eye line and its normal. Nose: the tip-side landmark 4 moved back along the depth direction (inner eye
# corners' middle minus the nose bridge), so it turns less with the head than mediapipe's tip.
KPS_WEIGHTS: tuple[dict[int, float], ...] = (
    {33: 0.4938, 133: 0.4379, 168: 0.1242, 263: -0.0559},
    {33: -0.0559, 168: 0.1242, 263: 0.4938, 362: 0.4379},
    {4: 0.9742, 133: 0.2393, 168: -0.4528, 362: 0.2393},
)
KPS_ROT_WEIGHTS: tuple[dict[int, float], ...] = (
    {33: 0.0155, 263: -0.0155},
    {33: 0.0155, 263: -0.0155},
    {},
)


def _weight_matrix(weights: Sequence[dict[int, float]] = KPS_WEIGHTS, total: float = 1.0) -> np.ndarray:
    m = np.zeros((len(weights), NUM_MESH_LANDMARKS), dtype=np.float64)
    for row, w in enumerate(weights):
        for idx, val in w.items():
            m[row, idx] = val
        nz = m[row] != 0
        if nz.any():  # exact sums (1 or 0) despite the rounding of the published weights
            m[row, nz] += (total - m[row].sum()) / nz.sum()
    return m


_KPS_MATRIX: tuple[np.ndarray, np.ndarray] | None = None


def kps_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """(..., 478, 2) mesh landmarks -> (..., 3, 2) float32 V-Kps points [left eye, right eye, nose] (image terms)."""
    global _KPS_MATRIX
    if _KPS_MATRIX is None:
        _KPS_MATRIX = (_weight_matrix(KPS_WEIGHTS, 1.0), _weight_matrix(KPS_ROT_WEIGHTS, 0.0))
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape[-2:] != (NUM_MESH_LANDMARKS, 2):
        raise InputError(f"face mesh landmarks must be (..., {NUM_MESH_LANDMARKS}, 2), got {lm.shape}")
    w, v = _KPS_MATRIX
    rot = np.einsum("kn,...nd->...kd", v, lm)
    out = np.einsum("kn,...nd->...kd", w, lm) + np.stack([-rot[..., 1], rot[..., 0]], axis=-1)
    return out.astype(np.float32)


@dataclass
class Face:
    """One face in one frame; all coordinates are ``(x, y)`` pixels of that frame.

    Attributes:
        bbox: (4,) float32 ``x1, y1, x2, y2`` (mediapipe detector box, or the landmarks' box if only the mesh found
            the face).
        kps: (3, 2) float32 V-Kps points [left-in-image eye, right-in-image eye, nose tip].
        landmarks: (478, 2) float32 face-mesh landmarks, or None when only the detector found this face.
        score: detector confidence in [0, 1] (0 when only the mesh found the face).
    """

    bbox: np.ndarray
    kps: np.ndarray
    landmarks: np.ndarray | None
    score: float

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = (float(v) for v in self.bbox)
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    @property
    def size(self) -> float:
        """Side of the face box (geometric mean of its width and height), pixels."""
        return self.area ** 0.5

    @property
    def mouth(self) -> np.ndarray | None:
        """(40, 2) lip landmarks (:data:`MOUTH_LANDMARKS` order) or None."""
        return None if self.landmarks is None else self.landmarks[list(MOUTH_LANDMARKS)]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / ua) if ua > 0 else 0.0


def check_frame(frame: np.ndarray, what: str = "frame") -> np.ndarray:
    """Validate an RGB uint8 (H, W, 3) frame (grey (H, W) is expanded); returns a C-contiguous array."""
    arr = np.asarray(frame)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or arr.shape[0] < 8 or arr.shape[1] < 8:
        raise InputError(f"{what} must be an RGB image (H, W, 3), got shape {arr.shape}; convert it to RGB first")
    if arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


class FaceAnalyzer:
    """mediapipe face detection + 478-point face mesh for RGB uint8 frames.

    Args:
        mode: ``"image"`` (every frame independent) or ``"video"`` (track across consecutive frames of one video).
        max_faces: most faces the mesh looks for (2 is enough to tell "one face" from "several faces").
        min_detection_confidence: detector threshold.
        min_tracking_confidence: mesh tracking threshold (video mode).
        detector_range: ``"full"`` (faces of any size, mediapipe's full-range model) or ``"short"`` (faces within
            ~2 m, large in the frame).

    Calling the analyzer returns the faces of a frame sorted by box area, largest first. It holds native
    mediapipe graphs: use it as a context manager or call :meth:`close`; it is not picklable, so create one per
    worker process.
    """

    def __init__(self, mode: str = "image", max_faces: int = 2, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, detector_range: str = "full"):
        if mode not in ("image", "video"):
            raise InputError(f"FaceAnalyzer mode must be 'image' or 'video', got {mode!r}")
        if detector_range not in ("full", "short"):
            raise InputError(f"FaceAnalyzer detector_range must be 'full' or 'short', got {detector_range!r}")
        self.mode = mode
        self.max_faces = int(max_faces)
        self.min_detection_confidence = float(min_detection_confidence)
        self.min_tracking_confidence = float(min_tracking_confidence)
        self.detector_range = detector_range
        self._mesh = None
        self._det = None
        self._warm = False

    # -- lifecycle -------------------------------------------------------------------------------------------
    def _open(self) -> None:
        import os

        from vexpress.utils.imports import require

        os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's C++ info/warning lines

        from vexpress.utils.native import quiet_native_stderr

        with quiet_native_stderr():
            mp = require("mediapipe", "face analysis")
            solutions = mp.solutions
            self._mesh = solutions.face_mesh.FaceMesh(
                static_image_mode=self.mode == "image", max_num_faces=self.max_faces, refine_landmarks=True,
                min_detection_confidence=self.min_detection_confidence,
                min_tracking_confidence=self.min_tracking_confidence)
            self._det = solutions.face_detection.FaceDetection(
                model_selection=1 if self.detector_range == "full" else 0,
                min_detection_confidence=self.min_detection_confidence)
        self._warm = False

    def close(self) -> None:
        for obj in (self._mesh, self._det):
            if obj is not None:
                obj.close()
        self._mesh = self._det = None

    def reset(self) -> None:
        """Forget the tracked face (video mode): call before the frames of another video."""
        self.close()

    def __enter__(self) -> "FaceAnalyzer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def __getstate__(self):  # picklable by configuration (each process opens its own graphs)
        state = dict(self.__dict__)
        state["_mesh"] = state["_det"] = None
        return state

    # -- analysis --------------------------------------------------------------------------------------------
    def __call__(self, frame: np.ndarray) -> list[Face]:
        return self.analyze(frame)

    def analyze(self, frame: np.ndarray) -> list[Face]:
        """Faces of one RGB frame, largest box first (empty list when there is none)."""
        img = check_frame(frame)
        if self._mesh is None:
            self._open()
        h, w = img.shape[:2]
        scale = np.array([w, h], dtype=np.float64)

        meshes: list[np.ndarray] = []
        if not self._warm:  # the graphs log their start-up chatter on the first frame
            from vexpress.utils.native import quiet_native_stderr

            with quiet_native_stderr():
                res = self._mesh.process(img)
                dres = self._det.process(img)
            self._warm = True
        else:
            res = self._mesh.process(img)
            dres = self._det.process(img)
        for fl in res.multi_face_landmarks or []:
            pts = np.array([(p.x, p.y) for p in fl.landmark], dtype=np.float64) * scale
            if pts.shape[0] == NUM_MESH_LANDMARKS:
                meshes.append(pts)

        dets: list[tuple[np.ndarray, float, np.ndarray]] = []
        for d in dres.detections or []:
            bb = d.location_data.relative_bounding_box
            box = np.array([bb.xmin * w, bb.ymin * h, (bb.xmin + bb.width) * w, (bb.ymin + bb.height) * h])
            kp = np.array([(k.x * w, k.y * h) for k in d.location_data.relative_keypoints], dtype=np.float64)
            dets.append((box, float(d.score[0]) if d.score else 0.0, kp))

        faces: list[Face] = []
        used: set[int] = set()
        for pts in meshes:
            mbox = np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()])
            best, best_iou = -1, 0.3
            for j, (box, _, _) in enumerate(dets):
                if j not in used and _iou(mbox, box) > best_iou:
                    best, best_iou = j, _iou(mbox, box)
            if best >= 0:
                used.add(best)
                box, score = dets[best][0], dets[best][1]
            else:
                box, score = mbox, 0.0
            faces.append(Face(bbox=box.astype(np.float32), kps=kps_from_landmarks(pts),
                              landmarks=pts.astype(np.float32), score=score))
        for j, (box, score, kp) in enumerate(dets):
            if j in used or kp.shape[0] < 3:
                continue
            # detector keypoints: subject's right eye (left in image), left eye, nose tip, mouth, ears
            faces.append(Face(bbox=box.astype(np.float32), kps=kp[:3].astype(np.float32), landmarks=None,
                              score=score))
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces

    def analyze_frames(self, frames: Iterable[np.ndarray]) -> list[list[Face]]:
        """Faces of each frame of a sequence (in video mode the frames must be consecutive frames of one video)."""
        return [self.analyze(f) for f in frames]


def largest_face(faces: Sequence[Face]) -> Face | None:
    return faces[0] if faces else None


def mouth_box(landmarks: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """(4,) xyxy box of the lip landmarks, scaled ``scale`` times around its centre (official lip mask: 2)."""
    lm = np.asarray(landmarks, dtype=np.float32)
    pts = lm[list(MOUTH_LANDMARKS)] if lm.shape[0] == NUM_MESH_LANDMARKS else lm
    x1, y1 = pts.min(0)
    x2, y2 = pts.max(0)
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2 * scale, (y2 - y1) / 2 * scale
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh], dtype=np.float32)
