"""Procedural cartoon faces: identities, head pose, mouth shape, exact keypoints, and the renderer.

Geometry lives in *face coordinates*: x to the right of the image, y down, one unit = the head scale ``s`` in
pixels. A head pose ``(cx, cy, s, roll)`` maps a face point ``p`` to the image point ``c + s * R(roll) p``. The
V-Kps points are the eye centres and the nose tip of the face template, so they are exact for every frame.

The mouth is an ellipse whose interior has one distinctive colour (:data:`MOUTH_INTERIOR`, a saturated blue that
no skin, lip or hair colour comes close to), so its opening and width can be measured back from any frame, also
a blurred or noisy generated one (:mod:`vexpress.synthetic.measure`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

# ---- face template (face units) ------------------------------------------------------------------------------
EYE_X, EYE_Y = 0.36, -0.10
NOSE_Y = 0.24
MOUTH_Y = 0.56
#: Template V-Kps points [left-in-image eye, right-in-image eye, nose tip].
KPS_TEMPLATE = np.array([[-EYE_X, EYE_Y], [EYE_X, EYE_Y], [0.0, NOSE_Y]], dtype=np.float64)
MOUTH_CENTER = np.array([0.0, MOUTH_Y], dtype=np.float64)
#: Mouth interior semi-axes: ``ax = MOUTH_AX0 + MOUTH_AX1 * width``, ``ay = MOUTH_AY1 * opening``.
MOUTH_AX0, MOUTH_AX1, MOUTH_AY1 = 0.20, 0.16, 0.26
#: Lip thickness around the interior (face units).
LIP_X, LIP_Y = 0.06, 0.075
#: The mouth interior colour (RGB).
MOUTH_INTERIOR = (30, 50, 215)
#: Head scale as a fraction of the frame side, and the head centre (fractions of the frame) for the neutral pose.
BASE_SCALE = 0.33
BASE_CENTER = (0.5, 0.50)

SKIN_TONES = np.array([[250, 214, 186], [236, 190, 150], [214, 160, 120], [190, 130, 90], [150, 100, 66],
                       [112, 72, 46], [246, 200, 170], [200, 150, 110]], dtype=np.float64)
HAIR_COLORS = np.array([[25, 20, 18], [70, 45, 30], [120, 80, 45], [200, 160, 90], [165, 60, 30], [150, 150, 150],
                        [235, 225, 200], [55, 35, 50]], dtype=np.float64)
LIP_COLORS = np.array([[170, 60, 70], [150, 50, 55], [200, 90, 100], [120, 40, 45], [185, 75, 80]], dtype=np.float64)
EYE_COLORS = np.array([[70, 45, 25], [40, 90, 60], [40, 30, 25], [100, 80, 40], [60, 80, 90]], dtype=np.float64)
SHIRT_COLORS = np.array([[200, 40, 40], [40, 140, 60], [230, 200, 60], [90, 90, 90], [240, 240, 240],
                         [150, 70, 160], [220, 120, 40], [30, 30, 30]], dtype=np.float64)
BACKGROUNDS = np.array([[200, 220, 200], [230, 210, 170], [170, 170, 170], [240, 240, 230], [120, 150, 110],
                        [200, 170, 200], [150, 120, 100], [90, 100, 80], [230, 180, 150], [180, 210, 230]],
                       dtype=np.float64)


@dataclass
class Identity:
    """Appearance of one synthetic person (everything that is constant over their clips)."""

    id: str
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    lips: tuple[float, float, float]
    iris: tuple[float, float, float]
    shirt: tuple[float, float, float]
    bg_top: tuple[float, float, float]
    bg_bottom: tuple[float, float, float]
    hair_style: int  # 0 short, 1 long, 2 bun, 3 side part
    face_w: float  # face ellipse width factor
    face_h: float  # face ellipse height factor
    eye_size: float
    f0: float  # voice pitch (Hz)
    formant_scale: float  # vocal tract length factor

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Identity":
        d = dict(d)
        for k in ("skin", "hair", "lips", "iris", "shirt", "bg_top", "bg_bottom"):
            d[k] = tuple(float(v) for v in d[k])
        return cls(**d)


def _jitter(rng: np.random.Generator, color: np.ndarray, amount: float) -> tuple[float, float, float]:
    c = np.clip(color + rng.normal(0, amount, 3), 0, 255)
    return tuple(float(round(v, 1)) for v in c)


def sample_identity(rng: np.random.Generator, identity_id: str) -> Identity:
    """Draw an identity: colours from palettes with jitter, face shape, hair style, voice."""
    skin = _jitter(rng, SKIN_TONES[rng.integers(len(SKIN_TONES))], 8)
    hair = _jitter(rng, HAIR_COLORS[rng.integers(len(HAIR_COLORS))], 8)
    bg_i = rng.choice(len(BACKGROUNDS), 2, replace=False)
    return Identity(
        id=identity_id, skin=skin, hair=hair,
        lips=_jitter(rng, LIP_COLORS[rng.integers(len(LIP_COLORS))], 6),
        iris=_jitter(rng, EYE_COLORS[rng.integers(len(EYE_COLORS))], 6),
        shirt=_jitter(rng, SHIRT_COLORS[rng.integers(len(SHIRT_COLORS))], 10),
        bg_top=_jitter(rng, BACKGROUNDS[bg_i[0]], 10), bg_bottom=_jitter(rng, BACKGROUNDS[bg_i[1]], 10),
        hair_style=int(rng.integers(4)), face_w=float(round(rng.uniform(0.86, 1.06), 3)),
        face_h=float(round(rng.uniform(0.95, 1.08), 3)), eye_size=float(round(rng.uniform(0.9, 1.15), 3)),
        f0=float(round(rng.uniform(95, 230), 1)), formant_scale=float(round(rng.uniform(0.92, 1.12), 3)),
    )


# ---- pose ----------------------------------------------------------------------------------------------------

def neutral_pose(size: int) -> np.ndarray:
    return np.array([BASE_CENTER[0] * size, BASE_CENTER[1] * size, BASE_SCALE * size, 0.0], dtype=np.float64)


def pose_trajectory(rng: np.random.Generator, num_frames: int, fps: float, size: int, translate: float = 0.05,
                    scale_range: float = 0.07, roll: float = 0.14) -> np.ndarray:
    """(T, 4) smooth head pose [cx, cy, s, roll]: sums of slow sinusoids (0.1-0.8 Hz), independent of the audio.

    ``translate`` is the amplitude as a fraction of the frame, ``scale_range`` relative, ``roll`` in radians.
    """
    t = np.arange(num_frames) / fps
    base = neutral_pose(size)

    def smooth(amp: float) -> np.ndarray:
        out = np.zeros(num_frames)
        for _ in range(3):
            f = rng.uniform(0.1, 0.8)
            out += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
        out /= 2.0
        return amp * np.clip(out, -1.0, 1.0)

    pose = np.empty((num_frames, 4))
    pose[:, 0] = base[0] + smooth(translate * size)
    pose[:, 1] = base[1] + smooth(translate * size * 0.7)
    pose[:, 2] = base[2] * (1.0 + smooth(scale_range))
    pose[:, 3] = smooth(roll)
    return pose


def face_to_image(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Map face-unit points (..., 2) with pose(s) (4,) or (T, 4) to image pixels; (T, ..., 2) when T poses."""
    pose = np.asarray(pose, dtype=np.float64)
    pts = np.asarray(points, dtype=np.float64)
    if pose.ndim == 1:
        c, s = math.cos(pose[3]), math.sin(pose[3])
        rot = np.array([[c, -s], [s, c]])
        return pose[:2] + pose[2] * pts @ rot.T
    c, s = np.cos(pose[:, 3]), np.sin(pose[:, 3])
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (T, 2, 2)
    flat = pts.reshape(-1, 2)
    out = pose[:, None, :2] + pose[:, 2, None, None] * np.einsum("tij,nj->tni", rot, flat)
    return out.reshape(pose.shape[0], *pts.shape)


def kps_from_pose(pose: np.ndarray) -> np.ndarray:
    """Exact V-Kps points (T, 3, 2) (or (3, 2)) for pose(s)."""
    return face_to_image(KPS_TEMPLATE, pose).astype(np.float32)


def pose_from_kps(kps: np.ndarray) -> np.ndarray:
    """Invert :func:`kps_from_pose` (least-squares similarity fit): (..., 3, 2) -> (..., 4) [cx, cy, s, roll]."""
    k = np.asarray(kps, dtype=np.float64)
    flat = k.reshape(-1, 3, 2)
    tmpl = KPS_TEMPLATE - KPS_TEMPLATE.mean(0)
    out = np.empty((flat.shape[0], 4))
    for i, pts in enumerate(flat):
        mu = pts.mean(0)
        q = pts - mu
        a = (tmpl[:, 0] * q[:, 0] + tmpl[:, 1] * q[:, 1]).sum()
        b = (tmpl[:, 0] * q[:, 1] - tmpl[:, 1] * q[:, 0]).sum()
        denom = (tmpl ** 2).sum()
        s = math.hypot(a, b) / denom
        theta = math.atan2(b, a)
        c0 = mu - s * np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]]) \
            @ KPS_TEMPLATE.mean(0)
        out[i] = (c0[0], c0[1], s, theta)
    return out.reshape(*k.shape[:-2], 4)


# ---- mouth ---------------------------------------------------------------------------------------------------

def mouth_axes(opening: float, width: float) -> tuple[float, float]:
    """Interior semi-axes (face units) for mouth parameters in [0, 1]."""
    return MOUTH_AX0 + MOUTH_AX1 * float(width), MOUTH_AY1 * float(opening)


def mouth_params_from_axes(ax: float, ay: float) -> tuple[float, float]:
    return ay / MOUTH_AY1, (ax - MOUTH_AX0) / MOUTH_AX1


def mouth_landmarks(gt_mouth: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """(T, 40, 2) lip points in mediapipe ``MOUTH_LANDMARKS`` order: 20 on the outer lip ellipse then 20 on the
    interior ellipse, each starting at the left-in-image corner and going over the upper lip."""
    gt_mouth = np.asarray(gt_mouth, dtype=np.float64).reshape(-1, 2)
    pose = np.asarray(pose, dtype=np.float64).reshape(-1, 4)
    phi = np.pi + 2 * np.pi * np.arange(20) / 20
    out = np.empty((gt_mouth.shape[0], 40, 2))
    for t, (op, wd) in enumerate(gt_mouth):
        ax, ay = mouth_axes(op, wd)
        outer = np.stack([(ax + LIP_X) * np.cos(phi), (ay + LIP_Y) * np.sin(phi)], -1)
        inner = np.stack([ax * np.cos(phi), ay * np.sin(phi)], -1)
        out[t] = face_to_image(np.concatenate([outer, inner]) + MOUTH_CENTER, pose[t])
    return out.astype(np.float32)


def face_bbox(identity: Identity, pose: np.ndarray) -> np.ndarray:
    """(T, 4) xyxy box of the face ellipse (hair excluded) for pose(s) (T, 4)."""
    pose = np.asarray(pose, dtype=np.float64).reshape(-1, 4)
    a, b = 0.78 * identity.face_w, 1.0 * identity.face_h
    c, s = np.cos(pose[:, 3]), np.sin(pose[:, 3])
    hw = pose[:, 2] * np.sqrt((a * c) ** 2 + (b * s) ** 2)
    hh = pose[:, 2] * np.sqrt((a * s) ** 2 + (b * c) ** 2)
    centre = face_to_image(np.array([0.0, 0.05]), pose)
    return np.stack([centre[:, 0] - hw, centre[:, 1] - hh, centre[:, 0] + hw, centre[:, 1] + hh], -1).astype(
        np.float32)


# ---- renderer ------------------------------------------------------------------------------------------------
_SHIFT = 4
_ONE = 1 << _SHIFT


class _Canvas:
    """cv2 drawing in face units on a supersampled canvas (sub-pixel precision via ``shift``)."""

    def __init__(self, img: np.ndarray, pose: np.ndarray, ss: int):
        self.img = img
        self.cx, self.cy, self.s, self.roll = (float(v) for v in pose)
        self.cx, self.cy, self.s = self.cx * ss, self.cy * ss, self.s * ss
        self.cos, self.sin = math.cos(self.roll), math.sin(self.roll)
        self.deg = math.degrees(self.roll)

    def pt(self, x: float, y: float) -> tuple[int, int]:
        px = self.cx + self.s * (self.cos * x - self.sin * y)
        py = self.cy + self.s * (self.sin * x + self.cos * y)
        return int(round((px - 0.5) * _ONE)), int(round((py - 0.5) * _ONE))

    def ellipse(self, x: float, y: float, ax: float, ay: float, color, angle: float = 0.0) -> None:
        import cv2

        if ax <= 0 or ay <= 0:
            return
        axes = (max(1, int(round(self.s * ax * _ONE))), max(1, int(round(self.s * ay * _ONE))))
        cv2.ellipse(self.img, self.pt(x, y), axes, self.deg + angle, 0, 360, _c(color), -1, cv2.LINE_AA, _SHIFT)

    def poly(self, pts, color) -> None:
        import cv2

        arr = np.array([self.pt(x, y) for x, y in pts], dtype=np.int32)
        cv2.fillPoly(self.img, [arr], _c(color), cv2.LINE_AA, _SHIFT)


def _c(color) -> tuple[int, int, int]:
    return tuple(int(round(min(255.0, max(0.0, float(v))))) for v in color)


def render_background(identity: Identity, size: int, ss: int = 1) -> np.ndarray:
    """Vertical two-colour gradient (constant over a clip)."""
    n = size * ss
    a = np.linspace(0.0, 1.0, n)[:, None, None]
    top, bottom = np.array(identity.bg_top), np.array(identity.bg_bottom)
    img = (1 - a) * top + a * bottom
    return np.broadcast_to(img, (n, n, 3)).astype(np.uint8).copy()


def render_frame(identity: Identity, pose: np.ndarray, mouth: tuple[float, float], size: int = 64, ss: int = 4,
                 background: np.ndarray | None = None, draw_mouth: bool = True) -> np.ndarray:
    """One RGB uint8 frame (size, size, 3): background, shoulders, hair, face, eyes, nose, mouth.

    ``mouth`` = (opening, width) in [0, 1]; ``ss`` = supersampling factor (anti-aliasing).
    """
    import cv2

    bg = background if background is not None else render_background(identity, size, ss)
    img = bg.copy()
    cv = _Canvas(img, pose, ss)
    fw, fh = 0.78 * identity.face_w, identity.face_h
    skin = np.array(identity.skin)
    hair = np.array(identity.hair)
    shade = skin * 0.82

    # shoulders and neck
    cv.ellipse(0.0, 2.05, 1.55, 0.85, identity.shirt)
    cv.poly([(-0.26, 0.6), (0.26, 0.6), (0.3, 1.35), (-0.3, 1.35)], shade)
    # hair behind the head
    style = identity.hair_style
    if style == 1:  # long
        cv.poly([(-fw - 0.12, -0.3), (fw + 0.12, -0.3), (fw + 0.2, 1.15), (-fw - 0.2, 1.15)], hair)
    if style == 2:  # bun
        cv.ellipse(0.0, -fh - 0.18, 0.32, 0.26, hair)
    cv.ellipse(0.0, -0.2, fw + 0.09, fh * 0.88 + 0.04, hair)
    # ears and face
    cv.ellipse(-fw, 0.08, 0.13, 0.2, shade)
    cv.ellipse(fw, 0.08, 0.13, 0.2, shade)
    cv.ellipse(0.0, 0.05, fw, fh, skin)
    # fringe: a hair cap over the forehead
    if style == 3:  # side part: asymmetric cap
        cv.ellipse(-0.12, -0.82 * fh, fw * 0.98, 0.36, hair, angle=-12.0)
    else:
        cv.ellipse(0.0, -0.86 * fh, fw * 0.97, 0.34, hair)
    # eyes: white, iris, pupil; brows
    es = identity.eye_size
    for sx in (-1.0, 1.0):
        cv.ellipse(sx * EYE_X, EYE_Y, 0.155 * es, 0.095 * es, (245, 245, 245))
        cv.ellipse(sx * EYE_X, EYE_Y, 0.075 * es, 0.075 * es, identity.iris)
        cv.ellipse(sx * EYE_X, EYE_Y, 0.035 * es, 0.035 * es, (10, 10, 10))
        cv.ellipse(sx * EYE_X, EYE_Y - 0.19, 0.17, 0.04, hair * 0.8, angle=sx * 6.0)
    # nose: a shaded wedge ending at the tip, plus a tip highlight
    cv.poly([(0.0, -0.02), (0.085, NOSE_Y), (-0.085, NOSE_Y)], shade)
    cv.ellipse(0.0, NOSE_Y - 0.01, 0.07, 0.045, skin * 0.9)
    # mouth: lips, then the interior
    if draw_mouth:
        ax, ay = mouth_axes(*mouth)
        cv.ellipse(0.0, MOUTH_Y, ax + LIP_X, ay + LIP_Y, identity.lips)
        if ay > 0:
            cv.ellipse(0.0, MOUTH_Y, ax, ay, MOUTH_INTERIOR)
        else:
            cv.ellipse(0.0, MOUTH_Y, ax, 0.012, np.array(identity.lips) * 0.6)
    if ss > 1:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img
