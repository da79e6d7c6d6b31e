"""Procedural street scenes in two styles: flat "game" (source) and photo-like "real" (target).

``render_scene`` draws one scene with its Cityscapes train-id labels;
``datasets/prepare_synthetic.py`` writes a whole benchmark with it. Pure numpy + OpenCV.

A scene is made in two independent steps:

1. ``render_layout(seed)`` builds the geometry from the seed alone: a pinhole camera looking
   down a street with road, sidewalks, facades, trees, poles carrying signs and traffic
   lights, cars and persons, painted far to near. It yields a label map (Cityscapes train ids),
   an instance map and a *part* map (lane marks, windows, wheels, clothing ...): parts keep the
   class of their object but let each style give them their own look.
2. A style paints that layout. ``"source"`` uses a flat saturated palette with per-instance
   colour jitter, like a video game. ``"target"`` adds textures, a colour shift, lighting, lens
   blur and sensor noise, all scaled by ``strength``; at ``strength=0`` it is close to the
   source style, so the size of the domain gap can be dialled.

Each step draws from its own ``np.random.default_rng`` seeded from the arguments, so a scene is
fully determined by ``(seed, style, height, width, strength)`` and both styles of one seed share
the exact same label map.

For panoptic segmentation, ``render_panoptic_scene`` also returns the instance ids of the thing
classes (``THING_CLASSES``: persons and cars), read off the layout's instance map without any
random draw, so images and labels are the same as ``render_scene``'s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = ["STYLES", "SYNTHETIC_CLASSES", "THING_CLASSES", "Camera", "Instance", "Layout",
           "render_layout", "render_scene", "render_panoptic_scene", "thing_instance_ids"]

# Cityscapes train ids drawn by the generator. Every pixel gets one of them: the ignore
# label 255 never occurs.
ROAD, SIDEWALK, BUILDING, POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN = 0, 1, 2, 5, 6, 7
VEGETATION, TERRAIN, SKY, PERSON, CAR = 8, 9, 10, 11, 13

SYNTHETIC_CLASSES: Tuple[int, ...] = (ROAD, SIDEWALK, BUILDING, POLE, TRAFFIC_LIGHT,
                                      TRAFFIC_SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR)
# The countable ("thing") classes among them: each person and car is one panoptic instance.
THING_CLASSES: Tuple[int, ...] = (PERSON, CAR)
STYLES: Tuple[str, ...] = ("source", "target")

# Parts: regions inside an object that keep its class but get their own look.
NO_PART, LANE_MARK, WINDOW, CAR_WINDOW, WHEEL, TAIL_LIGHT = 0, 1, 2, 3, 4, 5
SKIN, SHIRT, PANTS, TRUNK, LAMP, SYMBOL = 6, 7, 8, 9, 10, 11
NUM_PARTS = 12

# Tags that keep the layout stream and each style's stream apart for the same seed.
_LAYOUT_STREAM = 0x1A7
_STYLE_STREAM = {"source": 0x50C, "target": 0x7A6}

_SHIFT = 4  # fractional bits of the vertices handed to OpenCV: sub-pixel accurate polygons
_Z_NEAR, _Z_FAR = 0.8, 3000.0  # depth range of the ground planes (metres)


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Camera:
    """Pinhole camera ``height_m`` above a flat street, looking along +z; pixels are square."""

    horizon: float  # image row of the horizon
    vp_x: float  # image column of the vanishing point
    focal: float  # focal length in pixels
    height_m: float  # camera height above the ground in metres

    def project(self, x, y, z) -> np.ndarray:
        """Image points (N, 2) of world points: x right, y up from the ground, z ahead (m)."""
        scale = self.focal / np.asarray(z, np.float64)
        u = self.vp_x + np.asarray(x, np.float64) * scale
        v = self.horizon + (self.height_m - np.asarray(y, np.float64)) * scale
        out = np.empty(np.broadcast_shapes(u.shape, v.shape) + (2,))
        out[..., 0], out[..., 1] = u, v
        return out.reshape(-1, 2)

    def ground_coords(self, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
        """World (x, z) of the ground seen at every pixel centre; z is 1e6 above the horizon."""
        dv = np.arange(height, dtype=np.float32)[:, None] + 0.5 - self.horizon
        z = np.where(dv > 0.0, self.focal * self.height_m / np.maximum(dv, 1e-3), 1e6)
        z = np.broadcast_to(z, (height, width)).astype(np.float32)
        du = np.arange(width, dtype=np.float32)[None, :] + 0.5 - self.vp_x
        return du * z / self.focal, z


@dataclass
class Instance:
    """One drawn object: its train id, what kind of thing it is and a small integer attribute
    (sign shape, lit lamp ...) that the styles may use."""

    cls: int
    kind: str
    attr: int = 0


@dataclass
class Layout:
    """Everything a style needs to paint a scene: per-pixel maps, the objects and the camera."""

    label: np.ndarray  # (H, W) uint8 Cityscapes train ids
    instance: np.ndarray  # (H, W) int32 index into ``instances``
    part: np.ndarray  # (H, W) uint8 part id (NO_PART, WINDOW, ...)
    instances: List[Instance]
    camera: Camera
    _part_pixels: Optional[List[np.ndarray]] = field(default=None, repr=False, compare=False)

    def part_pixels(self, part: int) -> np.ndarray:
        """Flat indices of the pixels of ``part`` (all parts are indexed in one pass)."""
        if self._part_pixels is None:
            flat = self.part.ravel()
            order = np.argsort(flat, kind="stable")
            ends = np.cumsum(np.bincount(flat, minlength=NUM_PARTS))
            self._part_pixels = np.split(order, ends[:-1])
        return self._part_pixels[part]


def _rect(u0: float, v0: float, u1: float, v1: float) -> np.ndarray:
    """Corners of an axis-aligned image rectangle."""
    return np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]], np.float64)


def _fixed_point(points: np.ndarray) -> np.ndarray:
    """Image points (continuous, pixel i spans [i, i+1)) as OpenCV fixed-point vertices."""
    return np.rint((np.asarray(points, np.float64) - 0.5) * (1 << _SHIFT)).astype(np.int32)


class _Canvas:
    """Label, instance and part maps painted together; later shapes cover earlier ones."""

    def __init__(self, height: int, width: int, camera: Camera):
        self.height, self.width, self.camera = height, width, camera
        self.label = np.full((height, width), SKY, np.uint8)
        self.instance = np.zeros((height, width), np.int32)
        self.part = np.zeros((height, width), np.uint8)
        self.instances: List[Instance] = [Instance(SKY, "sky")]

    def add_instance(self, cls: int, kind: str, attr: int = 0) -> int:
        self.instances.append(Instance(cls, kind, attr))
        return len(self.instances) - 1

    def polygon(self, points: np.ndarray, inst: int, part: int = NO_PART) -> None:
        """Fill a convex polygon (N, 2 image points) with one instance."""
        pts = _fixed_point(points)
        cv2.fillConvexPoly(self.label, pts, self.instances[inst].cls, shift=_SHIFT)
        cv2.fillConvexPoly(self.instance, pts, inst, shift=_SHIFT)
        cv2.fillConvexPoly(self.part, pts, part, shift=_SHIFT)

    def part_polygon(self, points: np.ndarray, part: int) -> None:
        """Mark a convex polygon as a part of whatever object lies under it."""
        cv2.fillConvexPoly(self.part, _fixed_point(points), part, shift=_SHIFT)

    def part_polygons(self, polygons: np.ndarray, part: int) -> None:
        """Mark many disjoint convex polygons (M, N, 2) at once as ``part``."""
        if len(polygons):
            cv2.fillPoly(self.part, list(_fixed_point(polygons)), part, shift=_SHIFT)

    def ellipse(self, center: Sequence[float], axes: Sequence[float], inst: int,
                part: int = NO_PART) -> None:
        """Fill an axis-aligned ellipse (centre and half axes in pixels) with one instance."""
        c = tuple(int(v) for v in _fixed_point(np.asarray(center)[None])[0])
        a = tuple(max(int(round(v * (1 << _SHIFT))), 1 << (_SHIFT - 1)) for v in axes)
        for image, value in ((self.label, self.instances[inst].cls), (self.instance, inst),
                             (self.part, part)):
            cv2.ellipse(image, c, a, 0, 0, 360, value, thickness=-1, shift=_SHIFT)

    def to_layout(self) -> Layout:
        return Layout(self.label, self.instance, self.part, self.instances, self.camera)


@dataclass(frozen=True)
class _Street:
    """Cross-section of the street in metres; the camera is at x = 0, side -1 left, +1 right."""

    kerbs: Tuple[float, float]  # x of the left (negative) and right kerb
    walks: Tuple[float, float]  # sidewalk widths
    verges: Tuple[float, float]  # grass strips between sidewalk and facade (0: none)

    def kerb(self, side: int) -> float:
        return self.kerbs[side > 0]

    def walk_outer(self, side: int) -> float:
        return self.kerb(side) + side * self.walks[side > 0]

    def facade(self, side: int) -> float:
        return self.walk_outer(side) + side * self.verges[side > 0]


def _sample_camera(rng: np.random.Generator, height: int, width: int) -> Camera:
    return Camera(horizon=rng.uniform(0.36, 0.5) * height,
                  vp_x=width * (0.5 + rng.uniform(-0.12, 0.12)),
                  focal=width * rng.uniform(0.9, 1.1),
                  height_m=rng.uniform(1.9, 2.4))


def _sample_street(rng: np.random.Generator) -> _Street:
    kerbs = (-rng.uniform(2.2, 4.2), rng.uniform(2.2, 4.2))
    walks = (rng.uniform(3.2, 6.0), rng.uniform(3.2, 6.0))
    verges = tuple(0.0 if rng.random() < 0.6 else rng.uniform(0.8, 3.0) for _ in range(2))
    return _Street(kerbs, walks, verges)


# --------------------------------------------------------------------------------------------
# Static layout: ground, lane marks, buildings
# --------------------------------------------------------------------------------------------
def _ground_quad(cam: Camera, x0: float, x1: float, z0: float = _Z_NEAR,
                 z1: float = _Z_FAR) -> np.ndarray:
    """Image corners of the ground rectangle x in [x0, x1], z in [z0, z1]."""
    return cam.project([x0, x1, x1, x0], 0.0, [z0, z0, z1, z1])


def _draw_ground(canvas: _Canvas, street: _Street) -> None:
    """Grass verge everywhere below the horizon, then sidewalks and the road on top."""
    cam = canvas.camera
    verge = canvas.add_instance(TERRAIN, "verge")
    canvas.polygon(_rect(-1, cam.horizon, canvas.width + 1, canvas.height + 1), verge)
    for side in (-1, 1):
        walk = canvas.add_instance(SIDEWALK, "sidewalk")
        x0, x1 = sorted((street.kerb(side), street.walk_outer(side)))
        canvas.polygon(_ground_quad(cam, x0, x1), walk)
    road = canvas.add_instance(ROAD, "road")
    canvas.polygon(_ground_quad(cam, *street.kerbs), road)


def _draw_lane_marks(canvas: _Canvas, street: _Street, rng: np.random.Generator) -> None:
    """Dashed centre line and optional solid edge lines; they stay road class."""
    cam = canvas.camera
    centre = 0.5 * sum(street.kerbs) + rng.uniform(-0.5, 0.5)
    period, dash = rng.uniform(7.0, 11.0), rng.uniform(2.5, 4.0)
    z0 = np.arange(_Z_NEAR + rng.uniform(0.0, period), 90.0, period)[:, None]
    dashes = cam.project(centre + np.array([-0.08, 0.08, 0.08, -0.08]), 0.0,
                         z0 + np.array([0.0, 0.0, dash, dash]))
    canvas.part_polygons(dashes.reshape(-1, 4, 2), LANE_MARK)
    for side in (-1, 1):
        if rng.random() < 0.5:
            x = street.kerb(side) - side * 0.35
            canvas.part_polygon(_ground_quad(cam, x - 0.06, x + 0.06, _Z_NEAR, 150.0),
                                LANE_MARK)


def _draw_buildings(canvas: _Canvas, street: _Street, rng: np.random.Generator) -> None:
    """A row of blocks closing the street far away, then each side's facades far to near."""
    far = rng.uniform(80.0, 180.0)
    _draw_backdrop(canvas, street, rng, far)
    for side in (-1, 1):
        blocks = []
        z = _Z_NEAR
        while z < far:
            if rng.random() < 0.4:
                z += rng.uniform(4.0, 15.0)  # gap between blocks: sky and verge show through
            length = rng.uniform(6.0, 30.0)
            blocks.append((z, min(z + length, far), rng.uniform(3.5, 12.0)))
            z += length
        for z0, z1, height in reversed(blocks):
            _draw_block(canvas, rng, side, street.facade(side), z0, z1, height)


def _draw_backdrop(canvas: _Canvas, street: _Street, rng: np.random.Generator,
                   far: float) -> None:
    """Buildings across the far end of the street, seen face on."""
    x = street.facade(-1) - 40.0
    while x < street.facade(1) + 40.0:
        width, height = rng.uniform(8.0, 25.0), rng.uniform(4.0, 18.0)
        inst = canvas.add_instance(BUILDING, "backdrop")
        canvas.polygon(canvas.camera.project([x, x + width, x + width, x],
                                             [0, 0, height, height], far), inst)
        x += width


def _draw_block(canvas: _Canvas, rng: np.random.Generator, side: int, x: float, z0: float,
                z1: float, height: float) -> None:
    """One building: its face towards the camera (seen through gaps), facade and windows."""
    cam = canvas.camera
    inst = canvas.add_instance(BUILDING, "facade")
    depth = side * 15.0
    canvas.polygon(cam.project([x, x + depth, x + depth, x], [0, 0, height, height], z0), inst)
    canvas.polygon(cam.project(x, [0, 0, height, height], [z0, z1, z1, z0]), inst)
    _draw_windows(canvas, rng, x, z0, z1, height)


def _draw_windows(canvas: _Canvas, rng: np.random.Generator, x: float, z0: float, z1: float,
                  height: float) -> None:
    """A grid of windows on the facade plane at ``x``; they stay building class."""
    floor, bay = rng.uniform(2.8, 3.6), rng.uniform(2.0, 3.4)
    win_h, win_w = floor * rng.uniform(0.4, 0.6), bay * rng.uniform(0.35, 0.65)
    sill = rng.uniform(0.5, 1.2)
    if rng.random() < 0.15:  # blank wall
        return
    ys = np.arange(sill, height - win_h - 0.3, floor)
    zs = np.arange(z0 + 0.5 * (bay - win_w), z1 - win_w, bay)
    if ys.size == 0 or zs.size == 0:
        return
    y, z = (a.reshape(-1, 1) for a in np.meshgrid(ys, zs, indexing="ij"))
    quads = canvas.camera.project(x, y + [0, 0, win_h, win_h],
                                  z + [0, win_w, win_w, 0]).reshape(-1, 4, 2)
    lo, hi = quads.min(axis=1), quads.max(axis=1)
    keep = ((hi - lo >= [1.0, 1.5]).all(axis=1) & (hi >= 0).all(axis=1)
            & (lo <= [canvas.width, canvas.height]).all(axis=1))
    canvas.part_polygons(quads[keep], WINDOW)


# --------------------------------------------------------------------------------------------
# Street objects, drawn far to near
# --------------------------------------------------------------------------------------------
@dataclass
class _Tree:
    """Trunk and a crown of overlapping ellipses, all vegetation."""

    x: float
    z: float
    trunk_height: float
    crown_radius: float
    lobes: np.ndarray  # (k, 3): x offset, y offset, radius scale (in crown radii)

    def draw(self, canvas: _Canvas) -> None:
        cam = canvas.camera
        ppm = cam.focal / self.z  # pixels per metre at this depth
        inst = canvas.add_instance(VEGETATION, "tree")
        (u, v0), (_, v1) = cam.project(self.x, [0.0, self.trunk_height + 0.5], self.z)
        half = max(1.0, 0.15 * ppm)
        canvas.polygon(_rect(u - half, v1, u + half, v0), inst, TRUNK)
        for dx, dy, scale in self.lobes:
            centre = cam.project(self.x + dx * self.crown_radius,
                                 self.trunk_height + (0.7 + dy) * self.crown_radius, self.z)[0]
            r = scale * self.crown_radius * ppm
            canvas.ellipse(centre, (r, 0.9 * r), inst)


@dataclass
class _Pole:
    """Pole on the kerb, optionally with a sign and a traffic light (maybe on a mast arm)."""

    x: float
    z: float
    side: int
    height: float
    sign: Optional[Tuple[int, float, float]]  # shape id, mount height, size (m)
    light: Optional[Tuple[int, float]]  # lit lamp (0 red, 1 amber, 2 green), arm length (m)

    def draw(self, canvas: _Canvas) -> None:
        cam = canvas.camera
        ppm = cam.focal / self.z
        inst = canvas.add_instance(POLE, "pole")
        (u, v0), (_, v1) = cam.project(self.x, [0.0, self.height], self.z)
        half = max(1.5, 0.08 * ppm)  # at least 3 px wide: thinner poles vanish under blur
        canvas.polygon(_rect(u - half, v1, u + half, v0), inst)
        if self.light is not None:
            self._draw_light(canvas, u, v1, half, ppm, inst)
        if self.sign is not None:
            self._draw_sign(canvas, u, ppm)

    def _draw_light(self, canvas: _Canvas, u: float, v_top: float, half: float, ppm: float,
                    pole: int) -> None:
        lit, arm = self.light
        if arm > 0:  # mast arm over the road, light hanging from its end
            end = canvas.camera.project(self.x - self.side * arm, self.height, self.z)[0]
            thick = max(1.0, 0.06 * ppm)
            canvas.polygon(_rect(min(u, end[0]), v_top, max(u, end[0]), v_top + 2 * thick),
                           pole)
            u = end[0]
        w, h = max(5.0, 0.35 * ppm), max(9.0, 0.95 * ppm)
        inst = canvas.add_instance(TRAFFIC_LIGHT, "light", attr=lit)
        top = v_top + (0.0 if arm > 0 else 0.2 * h)
        canvas.polygon(_rect(u - w / 2, top, u + w / 2, top + h), inst)
        r = max(1.0, 0.3 * w)
        canvas.ellipse((u, top + (lit + 0.5) * h / 3), (r, r), inst, LAMP)

    def _draw_sign(self, canvas: _Canvas, u: float, ppm: float) -> None:
        shape, mount, size = self.sign
        inst = canvas.add_instance(TRAFFIC_SIGN, "sign", attr=shape)
        s = max(5.0, size * ppm)  # at least ~5 px: tiny signs are never learnt
        v = canvas.camera.project(self.x, mount, self.z)[0, 1]
        u = u - self.side * 0.25 * s  # mounted on the road side of the pole
        canvas.polygon(_sign_outline(shape, u, v, s), inst)
        if s >= 9.0:
            canvas.part_polygon(_sign_outline(shape, u, v + 0.05 * s, 0.45 * s), SYMBOL)


def _sign_outline(shape: int, u: float, v: float, size: float) -> np.ndarray:
    """Square, disc, triangle or diamond of width ``size`` centred at (u, v)."""
    r = size / 2
    if shape == 0:
        return _rect(u - r, v - r, u + r, v + r)
    if shape == 1:
        a = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        return np.stack([u + r * np.cos(a), v + r * np.sin(a)], axis=1)
    if shape == 2:
        return np.array([[u - r, v - 0.8 * r], [u + r, v - 0.8 * r], [u, v + r]])
    return np.array([[u, v - r], [u + r, v], [u, v + r], [u - r, v]])


@dataclass
class _Person:
    """Pedestrian seen from the front or back: legs, torso and head."""

    x: float
    z: float
    height: float
    width: float

    def draw(self, canvas: _Canvas) -> None:
        cam = canvas.camera
        ppm = cam.focal / self.z
        inst = canvas.add_instance(PERSON, "person")
        u, v = cam.project(self.x, 0.0, self.z)[0]
        h, w = self.height * ppm, max(2.0, self.width * ppm)
        hip, shoulder = v - 0.48 * h, v - 0.82 * h
        if w >= 5.0:
            for du in (-0.25 * w, 0.25 * w):
                canvas.polygon(_rect(u + du - 0.21 * w, hip, u + du + 0.21 * w, v), inst, PANTS)
        else:
            canvas.polygon(_rect(u - 0.4 * w, hip, u + 0.4 * w, v), inst, PANTS)
        canvas.polygon(_rect(u - w / 2, shoulder, u + w / 2, hip + 1), inst, SHIRT)
        r = max(1.0, 0.07 * h)
        canvas.ellipse((u, shoulder - 0.9 * r), (0.85 * r, r), inst, SKIN)


@dataclass
class _Car:
    """Car driving away from the camera: rear face, roof and boot, and one side if off-centre."""

    x: float  # centre of the rear face
    z: float  # depth of the rear face
    width: float
    length: float
    body: float  # height of the body (top of the boot)
    roof: float

    def draw(self, canvas: _Canvas) -> None:
        cam = canvas.camera
        inst = canvas.add_instance(CAR, "car")
        x0, x1 = self.x - self.width / 2, self.x + self.width / 2
        z0, z1 = self.z, self.z + self.length
        clear, zc0, zc1 = 0.18, z0 + 0.9, z1 - 1.2  # ground clearance, cabin ends
        # the side facing the camera axis, visible when the car is off-centre
        side_x = x0 if x0 > 0.05 else x1 if x1 < -0.05 else None
        if side_x is not None:
            canvas.polygon(cam.project(side_x, [clear, clear, self.body, self.body],
                                       [z0, z1, z1, z0]), inst)
            inset = side_x - np.sign(side_x) * 0.15
            canvas.polygon(cam.project(inset, [self.body, self.body, self.roof, self.roof],
                                       [zc0, zc1, zc1 - 0.6, zc0 + 0.6]), inst, CAR_WINDOW)
            a = np.linspace(0, 2 * np.pi, 12, endpoint=False)
            for zw in (z0 + 0.8, z1 - 0.8):
                canvas.polygon(cam.project(side_x, 0.33 + 0.33 * np.sin(a),
                                           zw + 0.33 * np.cos(a)), inst, WHEEL)
        # top surfaces: the camera is above the roof
        canvas.polygon(cam.project([x0, x1, x1, x0], self.body, [z0, z0, z1, z1]), inst)
        canvas.polygon(cam.project([x0 + 0.3, x1 - 0.3, x1 - 0.3, x0 + 0.3], self.roof,
                                   [zc0 + 0.6, zc0 + 0.6, zc1 - 0.6, zc1 - 0.6]), inst)
        # rear face: wheels under the body, body with tail lights, cabin with the rear window
        for wx in (x0 + 0.1, x1 - 0.4):
            canvas.polygon(cam.project([wx, wx + 0.3, wx + 0.3, wx], [0, 0, 0.4, 0.4], z0),
                           inst, WHEEL)
        canvas.polygon(cam.project([x0, x1, x1, x0], [clear, clear, self.body, self.body], z0),
                       inst)
        for lx in (x0 + 0.05, x1 - 0.35):
            canvas.part_polygon(cam.project([lx, lx + 0.3, lx + 0.3, lx],
                                            [self.body - 0.3, self.body - 0.3, self.body - 0.12,
                                             self.body - 0.12], z0), TAIL_LIGHT)
        slant = [zc0, zc0, zc0 + 0.6, zc0 + 0.6]  # the rear window leans forward to the roof
        canvas.polygon(cam.project([x0 + 0.12, x1 - 0.12, x1 - 0.3, x0 + 0.3],
                                   [self.body, self.body, self.roof, self.roof], slant), inst)
        canvas.part_polygon(cam.project([x0 + 0.25, x1 - 0.25, x1 - 0.38, x0 + 0.38],
                                        [self.body + 0.06, self.body + 0.06, self.roof - 0.07,
                                         self.roof - 0.07], slant), CAR_WINDOW)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _sample_cars(rng: np.random.Generator, street: _Street) -> List[_Car]:
    """Cars anywhere on the road, nearer ones more often; overlapping ones are dropped."""
    cars: List[_Car] = []
    for _ in range(rng.integers(3, 10)):
        width, length = rng.uniform(1.7, 2.0), rng.uniform(3.9, 4.8)
        x = rng.uniform(street.kerbs[0] + width / 2 + 0.2, street.kerbs[1] - width / 2 - 0.2)
        z = _log_uniform(rng, 4.0, 35.0)
        body, roof = rng.uniform(0.85, 1.05), rng.uniform(1.4, 1.65)
        if all(abs(x - c.x) > 2.3 or z > c.z + c.length + 1.5 or c.z > z + length + 1.5
               for c in cars):
            cars.append(_Car(x, z, width, length, body, roof))
    return cars


def _sample_persons(rng: np.random.Generator, street: _Street) -> List[_Person]:
    persons = []
    for _ in range(rng.integers(1, 10)):
        side = 1 if rng.random() < 0.5 else -1
        offset = rng.uniform(0.4, street.walks[side > 0] - 0.3)
        if rng.random() < 0.12:  # crossing the road
            offset = -rng.uniform(0.5, 4.0)
        x, z = street.kerb(side) + side * offset, rng.uniform(3.5, 26.0)
        persons.append(_Person(x, z, rng.uniform(1.55, 1.9), rng.uniform(0.45, 0.6)))
    return persons


def _sample_poles(rng: np.random.Generator, street: _Street) -> List[_Pole]:
    poles = []
    for _ in range(rng.integers(1, 4)):
        side = 1 if rng.random() < 0.5 else -1
        x, z = street.kerb(side) + side * rng.uniform(0.3, 0.6), rng.uniform(7.0, 40.0)
        height = rng.uniform(3.0, 5.0)
        has_sign, has_light = rng.random() < 0.7, rng.random() < 0.45
        sign = (int(rng.integers(0, 4)), rng.uniform(2.0, height - 0.6),
                rng.uniform(0.7, 1.0)) if has_sign else None
        light = (int(rng.integers(0, 3)),
                 rng.uniform(2.0, 4.0) if rng.random() < 0.4 else 0.0) if has_light else None
        poles.append(_Pole(x, z, side, height, sign, light))
    return poles


def _sample_trees(rng: np.random.Generator, street: _Street) -> List[_Tree]:
    trees = []
    for _ in range(rng.integers(0, 7)):
        side = 1 if rng.random() < 0.5 else -1
        if street.verges[side > 0] > 0 and rng.random() < 0.5:
            x = street.walk_outer(side) + side * 0.5 * street.verges[side > 0]
        else:
            x = street.kerb(side) + side * rng.uniform(0.5, 1.0)
        lobes = np.column_stack([rng.uniform(-0.5, 0.5, 4), rng.uniform(-0.3, 0.5, 4),
                                 rng.uniform(0.55, 0.9, 4)])
        trees.append(_Tree(x, rng.uniform(5.0, 70.0), rng.uniform(1.8, 3.0),
                           rng.uniform(1.3, 2.6), lobes))
    return trees


def render_layout(seed: int, height: int = 96, width: int = 128) -> Layout:
    """The geometry of scene ``seed``: label, instance and part maps, independent of style."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    rng = np.random.default_rng([seed, _LAYOUT_STREAM])
    cam = _sample_camera(rng, height, width)
    street = _sample_street(rng)
    canvas = _Canvas(height, width, cam)
    _draw_ground(canvas, street)
    _draw_lane_marks(canvas, street, rng)
    _draw_buildings(canvas, street, rng)
    objects = (_sample_trees(rng, street) + _sample_poles(rng, street)
               + _sample_cars(rng, street) + _sample_persons(rng, street))
    for obj in sorted(objects, key=lambda o: -o.z):  # painter's order: far to near
        obj.draw(canvas)
    return canvas.to_layout()


# --------------------------------------------------------------------------------------------
# Appearance shared by both styles: flat "game" colours
# --------------------------------------------------------------------------------------------
_PALETTE: Dict[int, Tuple[int, int, int]] = {
    ROAD: (92, 82, 110), SIDEWALK: (222, 160, 150), BUILDING: (196, 124, 76),
    POLE: (232, 200, 40), TRAFFIC_LIGHT: (44, 44, 52), TRAFFIC_SIGN: (30, 90, 230),
    VEGETATION: (40, 180, 50), TERRAIN: (170, 214, 60), SKY: (80, 165, 255),
    PERSON: (232, 40, 90), CAR: (30, 70, 230),
}
_SIGN_COLOURS = ((30, 90, 230), (220, 30, 30), (220, 30, 30), (250, 200, 20))  # by shape
_LAMP_COLOURS = ((255, 40, 30), (255, 190, 20), (40, 255, 90))
# per-instance colour jitter (std per channel) of the game palette; other classes get 6
_JITTER = {BUILDING: 30.0, CAR: 35.0, PERSON: 24.0}


def _instance_colours(layout: Layout, rng: np.random.Generator) -> np.ndarray:
    """Game colour of every instance (N, 3): class palette plus per-instance jitter."""
    base = np.array([_SIGN_COLOURS[i.attr] if i.cls == TRAFFIC_SIGN else _PALETTE[i.cls]
                     for i in layout.instances], np.float32)
    sigma = np.array([_JITTER.get(i.cls, 6.0) for i in layout.instances], np.float32)
    jitter = rng.standard_normal(base.shape).astype(np.float32) * sigma[:, None]
    return np.clip(base + jitter, 0, 255)


def _blend_part(img: np.ndarray, layout: Layout, part: int, colours: np.ndarray,
                alpha: float = 1.0) -> None:
    """Blend the pixels of ``part`` towards per-instance ``colours`` (N, 3) or one colour."""
    idx = layout.part_pixels(part)
    if alpha <= 0 or idx.size == 0:
        return
    flat = img.reshape(-1, 3)
    colours = np.asarray(colours, np.float32)
    target = colours[layout.instance.ravel()[idx]] if colours.ndim == 2 else colours
    flat[idx] += np.float32(alpha) * (target - flat[idx])


def _lamp_colours(layout: Layout) -> np.ndarray:
    return np.array([_LAMP_COLOURS[i.attr] if i.cls == TRAFFIC_LIGHT else (0, 0, 0)
                     for i in layout.instances], np.float32)


def _paint_flat(layout: Layout, rng: np.random.Generator) -> np.ndarray:
    """The game look: flat instance colours with simple flat-shaded parts (float32 H×W×3)."""
    colours = _instance_colours(layout, rng)
    img = colours[layout.instance]
    glass, dark = np.float32([150, 200, 240]), np.float32([40, 50, 70])
    _blend_part(img, layout, LANE_MARK, (236, 236, 236))
    _blend_part(img, layout, WINDOW, 0.45 * colours + 0.55 * glass)
    _blend_part(img, layout, CAR_WINDOW, 0.5 * colours + 0.5 * dark)
    _blend_part(img, layout, WHEEL, 0.45 * colours)
    _blend_part(img, layout, TAIL_LIGHT, (240, 40, 40))
    _blend_part(img, layout, SKIN, 0.4 * colours + 0.6 * np.float32([250, 205, 170]))
    _blend_part(img, layout, PANTS, 0.7 * colours)
    _blend_part(img, layout, TRUNK, (130, 85, 40))
    _blend_part(img, layout, LAMP, _lamp_colours(layout))
    _blend_part(img, layout, SYMBOL, (245, 245, 245))
    return img


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _paint_source(layout: Layout, rng: np.random.Generator) -> np.ndarray:
    """Source ("game") style: flat saturated colours plus faint pixel noise."""
    img = _paint_flat(layout, rng)
    img += _gauss(rng, img.shape, 3.0)
    return _to_uint8(img)


# --------------------------------------------------------------------------------------------
# Target ("real") style
# --------------------------------------------------------------------------------------------
_SKIN_TONES = ((240, 200, 170), (200, 150, 110), (150, 100, 70), (90, 60, 45))
_CLOTHES = ((40, 40, 45), (200, 200, 195), (60, 70, 110), (120, 35, 35), (90, 90, 85),
            (150, 120, 80), (35, 65, 45), (170, 160, 140))
_TROUSERS = ((35, 35, 40), (50, 60, 90), (90, 80, 70), (110, 110, 110), (25, 30, 50))


def _gauss(rng: np.random.Generator, shape: Tuple[int, ...], sigma: float) -> np.ndarray:
    """Float32 Gaussian noise with standard deviation ``sigma``."""
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)


def _smooth_noise(rng: np.random.Generator, shape: Tuple[int, int], cell: int) -> np.ndarray:
    """Unit-variance noise that varies over about ``cell`` pixels (upsampled random grid)."""
    h, w = shape
    grid = rng.standard_normal((h // cell + 2, w // cell + 2)).astype(np.float32)
    field = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / (field.std() + 1e-6)


def _pick(rng: np.random.Generator, choices: Sequence[Tuple[int, int, int]], n: int) -> np.ndarray:
    return np.asarray(choices, np.float32)[rng.integers(0, len(choices), n)]


def _texture_parts(img: np.ndarray, layout: Layout, rng: np.random.Generator, s: float) -> None:
    """Real-looking parts: worn paint, dark glass, black tyres, clothes and skin."""
    n = len(layout.instances)
    window_tone = np.float32([38, 44, 54]) * rng.uniform(0.7, 1.5, (n, 1)).astype(np.float32)
    _blend_part(img, layout, WINDOW, window_tone, s)
    _blend_part(img, layout, CAR_WINDOW, (28, 32, 40), s)
    _blend_part(img, layout, WHEEL, (20, 20, 22), s)
    _blend_part(img, layout, TAIL_LIGHT, (170, 25, 20), s)
    _blend_part(img, layout, LANE_MARK, (200, 200, 190), s)
    _blend_part(img, layout, SKIN, _pick(rng, _SKIN_TONES, n), s)
    _blend_part(img, layout, SHIRT, _pick(rng, _CLOTHES, n), s)
    _blend_part(img, layout, PANTS, _pick(rng, _TROUSERS, n), s)
    _blend_part(img, layout, TRUNK, (85, 65, 50), s)


def _add_luminance(img: np.ndarray, mask: np.ndarray, delta: np.ndarray) -> None:
    """Add a per-pixel brightness change (H×W array or scalar) inside ``mask``."""
    delta = np.broadcast_to(np.asarray(delta, np.float32), mask.shape)
    img[mask] += delta[mask][:, None]


def _texture_ground(img: np.ndarray, layout: Layout, rng: np.random.Generator,
                    s: float) -> None:
    """Asphalt grain and stains on the road, a paving grid on sidewalks, rough grass."""
    shape = layout.label.shape
    plain = layout.part == NO_PART
    road = (layout.label == ROAD) & plain
    stains = np.clip(_smooth_noise(rng, shape, 6) - 0.6, 0.0, 1.5)
    grain = _gauss(rng, shape, 9.0)
    _add_luminance(img, road, s * (grain - 28.0 * stains + 6.0 * _smooth_noise(rng, shape, 16)))

    walk = (layout.label == SIDEWALK) & plain
    gx, gz = layout.camera.ground_coords(*shape)
    tile = rng.uniform(0.5, 0.9)
    joints = ((gx / tile) % 1.0 < 0.12) | ((gz / tile) % 1.0 < 0.12)
    fade = np.clip(1.0 - gz / 25.0, 0.0, 1.0)
    _add_luminance(img, walk, s * (-30.0 * joints * fade + _gauss(rng, shape, 6.0)))

    terrain = layout.label == TERRAIN
    _add_luminance(img, terrain, s * (_gauss(rng, shape, 12.0)
                                      + 10.0 * _smooth_noise(rng, shape, 5)))


def _texture_objects(img: np.ndarray, layout: Layout, rng: np.random.Generator,
                     s: float) -> None:
    """Weathered facades, leafy trees and slightly grainy car paint."""
    shape = layout.label.shape
    plain = layout.part == NO_PART
    facade = (layout.label == BUILDING) & plain
    _add_luminance(img, facade, s * (_gauss(rng, shape, 6.0)
                                     + 12.0 * _smooth_noise(rng, shape, 10)))
    leaves = (layout.label == VEGETATION) & plain
    h, w = shape
    leaf = cv2.resize(rng.standard_normal(((h + 1) // 2, (w + 1) // 2)).astype(np.float32),
                      (w, h), interpolation=cv2.INTER_NEAREST)
    img[leaves] += (30.0 * s * leaf[leaves])[:, None] * np.float32([0.8, 1.0, 0.6])
    car = (layout.label == CAR) & plain
    _add_luminance(img, car, s * _gauss(rng, shape, 4.0))


def _texture_sky(img: np.ndarray, layout: Layout, rng: np.random.Generator, s: float) -> None:
    """Hazy towards the horizon, with soft clouds."""
    h, w = layout.label.shape
    sky = layout.label == SKY
    rows = np.arange(h, dtype=np.float32)[:, None] + 0.5
    haze = 0.55 * s * np.clip(rows / layout.camera.horizon, 0.0, 1.0) ** 1.5
    cloud = 0.85 * s * np.clip(0.8 * (_smooth_noise(rng, (h, w), 12) - 0.4), 0.0, 1.0)
    for amount, colour in ((np.broadcast_to(haze, (h, w)), (225, 230, 235)),
                           (cloud, (242, 242, 245))):
        a = amount[sky][:, None]
        img[sky] = (1 - a) * img[sky] + a * np.float32(colour)


def _shift_colours(img: np.ndarray, s: float) -> np.ndarray:
    """Hue +40·s degrees, saturation ×(1 - 0.6 s), contrast ×(1 - 0.35 s)."""
    hsv = cv2.cvtColor(np.clip(img, 0, 255) / np.float32(255), cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + 40.0 * s) % 360.0
    hsv[..., 1] *= 1.0 - 0.6 * s
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * np.float32(255)
    mean = rgb.mean()
    return mean + (rgb - mean) * np.float32(1.0 - 0.35 * s)


def _light(img: np.ndarray, rng: np.random.Generator, s: float) -> np.ndarray:
    """Illumination gradient, soft elliptical shadows, colour tint and gamma."""
    h, w = img.shape[:2]
    angle, amplitude = rng.uniform(0, 2 * np.pi), rng.uniform(-0.45, 0.45) * s
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (xs - w / 2) * math.cos(angle) + (ys - h / 2) * math.sin(angle)
    gain = 1.0 + amplitude * ramp / (np.abs(ramp).max() + 1e-6)
    for _ in range(rng.integers(0, 3)):
        mask = np.zeros((h, w), np.float32)
        centre = (int(rng.uniform(0, w)), int(rng.uniform(0.45 * h, h)))
        axes = (int(rng.uniform(0.15, 0.4) * w), int(rng.uniform(0.05, 0.15) * h))
        cv2.ellipse(mask, centre, axes, rng.uniform(-30, 30), 0, 360, 1.0, thickness=-1)
        gain *= 1.0 - rng.uniform(0.3, 0.55) * s * cv2.GaussianBlur(mask, (0, 0), 2.0)
    tint = 1.0 + rng.uniform(-0.12, 0.12, 3).astype(np.float32) * s
    img = np.clip(img * gain[..., None] * tint, 0, 255)
    gamma = 1.0 + rng.uniform(-0.3, 0.3) * s
    return 255.0 * (img / np.float32(255)) ** np.float32(gamma)


def _camera_effects(img: np.ndarray, rng: np.random.Generator, s: float) -> np.ndarray:
    """Lens blur σ = 0.2 + 1.1 s, sensor noise σ = 1.5 + 9 s per channel + 3 s luminance."""
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.2 + 1.1 * s)
    h, w = img.shape[:2]
    img += _gauss(rng, img.shape, 1.5 + 9.0 * s)
    img += _gauss(rng, (h, w, 1), 3.0 * s)
    return img


def _paint_target(layout: Layout, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Target ("real") style: game colours turned photo-like, every effect scaled by strength."""
    s = float(strength)
    img = _paint_flat(layout, rng)
    _texture_parts(img, layout, rng, s)
    _texture_ground(img, layout, rng, s)
    _texture_objects(img, layout, rng, s)
    _texture_sky(img, layout, rng, s)
    img = _shift_colours(img, s)
    img = _light(img, rng, s)
    return _to_uint8(_camera_effects(img, rng, s))


def _paint(layout: Layout, seed: int, style: str, strength: float) -> np.ndarray:
    """The RGB image of ``layout`` in ``style``, from the style's own random stream."""
    if style == "source":
        rng = np.random.default_rng([seed, _STYLE_STREAM[style]])
        return _paint_source(layout, rng)
    rng = np.random.default_rng([seed, _STYLE_STREAM[style], int(round(strength * 1e6))])
    return _paint_target(layout, rng, strength)


def _check_style(style: str, strength: float) -> None:
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")


def thing_instance_ids(layout: Layout) -> np.ndarray:
    """(H, W) int32 instance ids of the thing classes (``THING_CLASSES``): 0 off things, and
    1..n for the thing instances with at least one visible pixel, numbered in drawing order
    (far to near). A person or car partly hidden by a nearer one keeps only its visible pixels,
    possibly in several pieces: it is still one instance.

    Derived from ``layout.instance`` alone: no random draw, so the images and labels of
    ``render_scene`` are the same whether or not this is called.
    """
    is_thing = np.array([i.cls in THING_CLASSES for i in layout.instances])
    visible = np.zeros(len(layout.instances), bool)
    visible[np.unique(layout.instance)] = True
    number = np.zeros(len(layout.instances), np.int32)
    things = is_thing & visible
    number[things] = np.arange(1, int(things.sum()) + 1, dtype=np.int32)
    return number[layout.instance]


def render_scene(seed: int, style: str, height: int = 96, width: int = 128,
                 strength: float = 0.65) -> Tuple[np.ndarray, np.ndarray]:
    """One street scene: an RGB uint8 image (H, W, 3) and its train-id label map (H, W).

    The label map depends on ``seed`` (and the size) only; ``style`` ("source" or "target")
    and ``strength`` (target style only, 0..1) change the appearance.
    """
    _check_style(style, strength)
    layout = render_layout(seed, height, width)
    return _paint(layout, seed, style, strength), layout.label


def render_panoptic_scene(seed: int, style: str, height: int = 96, width: int = 128,
                          strength: float = 0.65) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``render_scene``'s image and label map (the very same arrays) plus the thing instance
    ids (``thing_instance_ids``: (H, W) int32, 0 off persons and cars, 1..n on them)."""
    _check_style(style, strength)
    layout = render_layout(seed, height, width)
    return _paint(layout, seed, style, strength), layout.label, thing_instance_ids(layout)
