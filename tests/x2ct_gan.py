"""X2CT-GAN's own test-time preparation (3DGAN/lib/dataset, data_augmentation_1030.CT_XRAY_Data_Test_Multi
with the ranges of experiment/multiview2500/d2_multiview2500.yml), re-implemented step by step so
tests see exported files as its network does, and the projections its model compares."""
import numpy as np
from scipy.ndimage import zoom

CT_MIN_MAX, XRAY_MIN_MAX = (0, 2500), (0, 255)


def resize_image(img: np.ndarray, size) -> np.ndarray:  # its Resize_image: linear scipy zoom
    return zoom(img, np.asarray(size, np.float32) / np.asarray(img.shape, np.float32), order=1)


def normalise(img: np.ndarray, lo: float, hi: float) -> np.ndarray:  # its Normalization (round to 6 places)
    return np.round((img - np.float32(lo)) / (np.float32(hi) - np.float32(lo)), 6)


def prepare(ct: np.ndarray, xray1: np.ndarray, xray2: np.ndarray, fine_size: int = 128, ct_channel: int = 128):
    """(ct, xray1, xray2) as CT_XRAY_Data_Test_Multi hands them to the network (before ToTensor)."""
    ct = resize_image(ct, (ct_channel, fine_size, fine_size))
    x1 = resize_image(xray1[None], (1, fine_size, fine_size))  # its loader adds the channel axis
    x2 = resize_image(xray2[None], (1, fine_size, fine_size))
    ct = np.clip(ct, *CT_MIN_MAX)  # Limit_Min_Max_Threshold
    return normalise(ct, *CT_MIN_MAX), normalise(x1, *XRAY_MIN_MAX)[0], normalise(x2, *XRAY_MIN_MAX)[0]


def projections(ct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Its output_map on a (D, H, W) volume: frontal map = mean |ct| over H, side map = mean over W."""
    return np.abs(ct).mean(axis=1), np.abs(ct).mean(axis=2)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def agreement_by_orientation(projection: np.ndarray, view: np.ndarray) -> dict[str, float]:
    """Correlation of a projection with the view as stored and under every other flip/rotation."""
    out = {}
    for k in range(4):
        turned = np.rot90(view, k)
        for name, image in ((f"rot{k * 90}", turned), (f"rot{k * 90}+flip", np.fliplr(turned))):
            if image.shape == projection.shape:
                out[name] = correlation(projection, image)
    return out
