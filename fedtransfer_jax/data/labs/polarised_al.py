"""Polarised-light micrograph of anodised (Barker's etch) rolled aluminium sheet, with a sensitive-tint plate.

Anodising in fluoroboric acid grows an oxide film whose optical anisotropy follows the orientation of the
grain underneath, so the film acts as a weak retarder (Barker 1950; ASM Handbook vol. 9, "Aluminum alloys").
Between crossed polarisers, with a full-wave (~530 nm) tint plate at 45 deg, what reaches the camera is
computed with Jones matrices (``transmitted``), per wavelength, channel by channel (R, G, B each the mean of
five wavelengths of its band):

* each grain's film has its optic axis along a random direction ``c``; its in-plane angle ``phi`` to the
  polariser sets how the film's retardation adds to or subtracts from the plate's (blue vs yellow vs the
  plate's magenta: Michel-Levy interference colours), and its tilt from the sample normal ``theta`` sets
  the retardation ``Gamma = Gamma_max sin^2(theta)`` (an axis along the view direction does nothing);
* the colour of a grain is therefore a point on the interference-colour curve, not a grey level with a
  tint; the film thickness varies a little inside grains (colour mottling);
* **no boundary line**: the film has no groove; boundaries are colour steps only;
* analyser slightly off crossed, lamp colour, vignetting of the microscope (cos^4-like radial falloff),
  camera noise and the 2x2 chroma subsampling of a JPEG camera.

The grains are those of cold-rolled sheet (``rolled``: elongated along the rolling direction, x).
"""

from __future__ import annotations

import numpy as np

from fedtransfer_jax.data.microstructure import smooth_field
from fedtransfer_jax.data.synthetic import LabSpec

RANGES = {
    "gamma_nm": (60.0, 160.0),  # largest film retardation (optic axis in the surface plane), nm
    "plate_nm": (510.0, 570.0),  # tint-plate retardation, nm
    "uncross_deg": (0.0, 6.0),  # analyser rotation away from crossed
    "exposure": (2.2, 3.2),  # camera gain on the transmitted intensity
    "film_variation": (0.02, 0.08),  # relative film-thickness variation inside grains
    "lamp_warmth": (0.0, 0.15),  # halogen lamp: blue weaker than red
    "vignetting": (0.1, 0.35),  # relative intensity loss in the corners
    "noise": (0.005, 0.02),
}

# Wavelengths (nm) averaged into each camera channel: a crude stand-in for the sensor's spectral bands.
BANDS = (np.linspace(580.0, 660.0, 5), np.linspace(500.0, 570.0, 5), np.linspace(430.0, 490.0, 5))


def _retarder(angle: np.ndarray, delta: np.ndarray) -> tuple:
    """Jones matrix entries (a, b, d) of a linear retarder (symmetric: [[a, b], [b, d]]), slow axis at
    ``angle`` to x, phase ``delta``."""
    c, s, e = np.cos(angle), np.sin(angle), np.exp(1j * delta)
    return c * c + e * s * s, (1.0 - e) * c * s, s * s + e * c * c


def transmitted(
    phi: np.ndarray, gamma_nm: np.ndarray, plate_nm: float, uncross: float, lam: float
) -> np.ndarray:
    """Intensity at wavelength ``lam`` through polariser (x), film (slow axis ``phi``, retardation
    ``gamma_nm``), tint plate (45 deg, ``plate_nm``) and analyser (y rotated by ``uncross`` rad)."""
    a, b, d = _retarder(phi, 2.0 * np.pi * gamma_nm / lam)
    ex, ey = a, b  # film acting on the polariser's x-polarised light
    pa, pb, pd = _retarder(np.pi / 4.0, np.asarray(2.0 * np.pi * plate_nm / lam))
    fx, fy = pa * ex + pb * ey, pb * ex + pd * ey
    out = -np.sin(uncross) * fx + np.cos(uncross) * fy
    return np.abs(out) ** 2


def render(rng: np.random.Generator, grains: np.ndarray, params: dict) -> np.ndarray:
    h, w = grains.shape
    n = int(grains.max()) + 1
    c = rng.standard_normal((n, 3))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    phi = np.arctan2(c[:, 1], c[:, 0])[grains]
    gamma = (params["gamma_nm"] * (1.0 - c[:, 2] ** 2))[grains]
    gamma = gamma * (1.0 + params["film_variation"] * smooth_field(rng, (h, w), 6.0))
    uncross = np.deg2rad(params["uncross_deg"])
    rgb = np.stack(
        [
            np.mean([transmitted(phi, gamma, params["plate_nm"], uncross, lam) for lam in band], axis=0)
            for band in BANDS
        ],
        axis=-1,
    )
    lamp = np.array([1.0, 1.0 - 0.4 * params["lamp_warmth"], 1.0 - params["lamp_warmth"]])
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    cy, cx = rng.uniform(-0.3, 0.3, size=2)
    vignette = 1.0 - params["vignetting"] * ((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0
    rgb = params["exposure"] * rgb * lamp * vignette[..., None]
    rgb = rgb + params["noise"] * rng.standard_normal(rgb.shape)
    return np.clip(_chroma_subsample(np.clip(rgb, 0.0, 1.0)), 0.0, 1.0).astype(np.float32)


def _chroma_subsample(rgb: np.ndarray) -> np.ndarray:
    """JPEG 4:2:0: luma kept per pixel, chroma (Cb, Cr) averaged over 2x2 blocks (BT.601 YCbCr)."""
    m = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
    ycc = rgb @ m.T
    h, w = rgb.shape[:2]
    for ch in (1, 2):
        x = ycc[..., ch]
        hp, wp = h + h % 2, w + w % 2
        xp = np.pad(x, ((0, hp - h), (0, wp - w)), mode="edge")
        block = xp.reshape(hp // 2, 2, wp // 2, 2).mean(axis=(1, 3))
        ycc[..., ch] = np.repeat(np.repeat(block, 2, axis=0), 2, axis=1)[:h, :w]
    return ycc @ np.linalg.inv(m).T


SPEC = LabSpec(
    "polarised_al", style="polarised_al", method="rolled", diameter_px=(16.0, 26.0), dispersion=(0.2, 0.4),
    warp=(0.05, 0.1),
)
