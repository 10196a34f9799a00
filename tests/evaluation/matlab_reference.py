"""Literal Python translations of the authors' MATLAB metric scripts (test-only reference code, not shipped).

Each function follows one MATLAB function step by step, in the arithmetic MATLAB uses there (double, or single where
the script works in single), so the peer presets can be checked against what the authors' scripts compute:

- ``evaluate_psnr_ssim_m``: the per-image body of Restormer ``Deraining/evaluate_PSNR_SSIM.m``; DiffUIR
  ``eval/SOTS.m`` runs the same ``compute_psnr`` / ``compute_ssim`` / ``SSIM_index`` after ``imresize(gt, [M, N])``
  (``sots_m``);
- ``matlab_psnr`` / ``matlab_ssim``: MATLAB's built-in ``psnr`` and ``ssim`` as Restormer
  ``Motion_Deblurring/evaluate_gopro_hide.m`` (uint8 RGB) and ``Denoising/evaluate_sidd.m`` (single RGB) call them;
- ``rgb2ycbcr_uint8``: MATLAB's ``rgb2ycbcr`` on a uint8 image (Image Processing Toolbox, through ``imlincomb``).

MATLAB is column-major and 1-based; nothing below depends on it (elementwise operations and filters only). Where
MATLAB's internals are not in the scripts (``imlincomb``, ``imgaussfilt3``, ``fspecial``), the documented algorithm
is followed; docs/evaluation.md says what could not be checked without MATLAB.
"""
import numpy as np
from scipy import ndimage, signal

EPS = np.finfo(np.float64).eps  # MATLAB's eps


def matlab_round(x):
    """MATLAB's round: half away from zero."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def imlincomb_uint8(*args):
    """imlincomb(K1, A1, K2, A2, ..., K) on uint8 arrays: the sum in double, rounded, saturated to uint8."""
    *pairs, offset = args
    z = None
    for k, a in zip(pairs[0::2], pairs[1::2]):
        term = k * a.astype(np.float64)
        z = term if z is None else z + term
    z = z + offset
    # round half away from zero, exactly (z - floor(z) is exact for the values met here)
    fl = np.floor(z)
    z = np.where(z - fl >= 0.5, fl + 1, fl)
    return np.clip(z, 0, 255).astype(np.uint8)


def rgb2ycbcr_uint8(rgb):
    """rgb2ycbcr on an (H, W, 3) uint8 image -> (H, W, 3) uint8 (Y in [16, 235])."""
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    orig_t = np.array([[65.481, 128.553, 24.966],
                       [-37.797, -74.203, 112.0],
                       [112.0, -93.786, -18.214]])
    orig_offset = np.array([16.0, 128.0, 128.0])
    t = (1 / 255) * orig_t      # scaleFactor.uint8.T * origT
    offset = 1 * orig_offset    # scaleFactor.uint8.offset * origOffset
    out = np.zeros_like(rgb)
    for p in range(3):
        out[:, :, p] = imlincomb_uint8(t[p, 0], rgb[:, :, 0], t[p, 1], rgb[:, :, 1], t[p, 2], rgb[:, :, 2],
                                       offset[p])
    return out


def fspecial_gaussian(hsize=11, sigma=1.5):
    """fspecial('gaussian', hsize, sigma): the 2-D kernel from meshgrid, tiny values zeroed, normalised."""
    siz = (hsize - 1) / 2
    x, y = np.meshgrid(np.arange(-siz, siz + 1), np.arange(-siz, siz + 1))
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    h[h < EPS * h.max()] = 0
    sumh = h.sum()
    if sumh != 0:
        h = h / sumh
    return h


def filter2_valid(window, img):
    """filter2(window, img, 'valid'): 2-D correlation, only where the window fits."""
    return signal.correlate2d(img, window, mode="valid")


def ssim_index(img1, img2):
    """SSIM_index(img1, img2) with its defaults (nargin == 2): Gaussian 11x11 sigma 1.5, K = [0.01 0.03], L = 255."""
    if img1.shape != img2.shape:
        return -np.inf
    m, n = img1.shape
    if m < 11 or n < 11:
        return -np.inf
    window = fspecial_gaussian(11, 1.5)
    k1, k2, L = 0.01, 0.03, 255
    c1, c2 = (k1 * L) ** 2, (k2 * L) ** 2
    window = window / window.sum()
    img1, img2 = img1.astype(np.float64), img2.astype(np.float64)
    mu1, mu2 = filter2_valid(window, img1), filter2_valid(window, img2)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = filter2_valid(window, img1 * img1) - mu1_sq
    sigma2_sq = filter2_valid(window, img2 * img2) - mu2_sq
    sigma12 = filter2_valid(window, img1 * img2) - mu1_mu2
    # C1 > 0 & C2 > 0: the first branch of the script
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return ssim_map.mean()  # mean2


def _y_if_rgb(img):
    """`if size(img, 3) == 3, img = rgb2ycbcr(img); img = img(:, :, 1); end` (a 2-D image has size(img, 3) == 1)."""
    if img.ndim == 3 and img.shape[2] == 3:
        return rgb2ycbcr_uint8(img)[:, :, 0]
    return img


def compute_ssim(img1, img2):
    return ssim_index(_y_if_rgb(img1), _y_if_rgb(img2))


def compute_psnr(img1, img2):
    img1, img2 = _y_if_rgb(img1), _y_if_rgb(img2)
    imdff = (img1.astype(np.float64) - img2.astype(np.float64)).ravel()
    rmse = np.sqrt(np.mean(imdff ** 2))
    with np.errstate(divide="ignore"):
        return 20 * np.log10(255 / rmse)


def evaluate_psnr_ssim_m(result_uint8, gt_uint8):
    """One iteration of evaluate_PSNR_SSIM.m's loop: (psnr, ssim) of a result and its ground truth, both as
    MATLAB's imread returns them ((H, W, 3) or (H, W) uint8)."""
    return compute_psnr(result_uint8, gt_uint8), compute_ssim(result_uint8, gt_uint8)


def sots_m(result_uint8, gt_uint8):
    """One iteration of DiffUIR's SOTS.m: gt = imresize(gt, [M, N]); then compute_ssim / compute_psnr.

    Only the equal-size case is translated: there imresize's bicubic weights at integer offsets are 1 and 0, so the
    ground truth is unchanged (the standard SOTS outdoor pairs have equal sizes)."""
    assert result_uint8.shape[:2] == gt_uint8.shape[:2], "imresize to another size is not translated here"
    return compute_psnr(result_uint8, gt_uint8), compute_ssim(result_uint8, gt_uint8)


# --------------------------------------------------------------------------------------------- MATLAB built-ins
def _peak(a):
    """diff(getrangefromclass(a)): 255 for uint8, 1 for single and double."""
    return 255.0 if a.dtype == np.uint8 else 1.0


def _compute_class(a, ref):
    """psnr / ssim work in double for integer images and in the images' own class for single."""
    if a.dtype == np.uint8:
        return a.astype(np.float64), ref.astype(np.float64), np.float64
    assert a.dtype == ref.dtype == np.float32
    return a, ref, np.float32


def matlab_psnr(a, ref):
    """psnr(A, ref): 10 log10(peak^2 / immse(A, ref)), in the computation class."""
    peak = _peak(a)
    a, ref, cls = _compute_class(a, ref)
    d = (a - ref).ravel()
    err = cls(np.sum(d * d, dtype=cls) / cls(d.size))  # immse
    with np.errstate(divide="ignore"):
        return cls(10) * np.log10(cls(peak) ** 2 / err)


def gaussian_kernel_3d(sigma=1.5):
    """The kernel imgaussfilt3 uses in ssim: sigma 1.5, FilterSize 2*ceil(3*sigma)+1 = 11 per axis."""
    r = int(np.ceil(3 * sigma))
    x, y, z = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1), np.arange(-r, r + 1), indexing="ij")
    h = np.exp(-(x ** 2 + y ** 2 + z ** 2) / (2 * sigma ** 2))
    return h / h.sum()


def matlab_ssim(a, ref):
    """ssim(A, ref) on an (H, W, 3) array, which MATLAB treats as a 3-D volume: Gaussian filter (imgaussfilt3,
    'Padding' 'replicate'), C1 = (0.01 L)^2, C2 = (0.03 L)^2, C3 = C2 / 2, exponents 1 (the simplified formula),
    the mean of the whole map."""
    L = _peak(a)
    a, ref, cls = _compute_class(a, ref)
    c1, c2 = cls((0.01 * L) ** 2), cls((0.03 * L) ** 2)
    h = gaussian_kernel_3d(1.5)

    def gauss(x):  # replicate padding = scipy's "nearest"; output in the computation class
        return ndimage.correlate(x, h, mode="nearest", output=cls)

    mux2, muy2 = gauss(a), gauss(ref)
    muxy = mux2 * muy2
    mux2, muy2 = mux2 * mux2, muy2 * muy2
    sigmax2 = gauss(a * a) - mux2
    sigmay2 = gauss(ref * ref) - muy2
    sigmaxy = gauss(a * ref) - muxy
    ssimmap = ((2 * muxy + c1) * (2 * sigmaxy + c2)) / ((mux2 + muy2 + c1) * (sigmax2 + sigmay2 + c2))
    return cls(np.mean(ssimmap, dtype=cls))


def evaluate_gopro_hide_m(result_uint8, gt_uint8):
    """One iteration of evaluate_gopro_hide.m: (psnr(input, gt), ssim(input, gt)) on uint8 RGB."""
    return matlab_psnr(result_uint8, gt_uint8), matlab_ssim(result_uint8, gt_uint8)


def evaluate_sidd_m(denoised_f32, gt_uint8):
    """evaluate_sidd.m on blocks [image][block][H][W][3]: gt = im2single(gt); per block psnr and ssim in single.
    Returns the per-block values in loop order (i over images, k over blocks)."""
    gt = gt_uint8.astype(np.float32) / np.float32(255)  # im2single
    out = []
    for i in range(denoised_f32.shape[0]):
        for k in range(denoised_f32.shape[1]):
            d, g = denoised_f32[i, k], gt[i, k]
            out.append((matlab_psnr(d, g), matlab_ssim(d, g)))
    return out
